//! Offers: the fast path past the bid window. Every executor announces what it offers
//! (profiles, free slots, its compute rate and minimum reward) in its signed
//! `NodeAnnouncement`; an originator treats the latest one as a live offer for
//! `market.offer_ttl_ms` after it arrived. A task that a live offer matches (the profile,
//! a free slot, a price within the reward, the capabilities it needs) is first asked of that
//! executor alone ([`pick_offer`]): its bid, at once, is the acceptance, and the task is
//! assigned without a bid window; its refusal (`TaskBidDeclined`: the slot is taken, the
//! policy says no) or its silence sends the task to a full bid round
//! ([`crate::market::origin_task::OriginTask::bundled_direct`]).
//!
//! The offer's life is counted from its receipt, not from a time the executor signs: a
//! peer cannot stretch it, and nothing on the wire changes. An offer promises nothing the
//! executor must keep; it only saves the wait when it is still true.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::messages::{TaskDistributionRequest, Vibe};

use super::{bid_price, estimate_duration_s};

/// What an originator knows of one executor's offer, from its latest announcement.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferFacts<P> {
    /// The executor, as the transport addresses it.
    pub peer: P,
    /// Profiles it announced.
    pub profiles: Vec<String>,
    /// Capability tags it announced.
    pub capabilities: Vec<String>,
    /// Its announced compute rate, in VIBE per CPU hour.
    pub compute_rate_per_cpu_hour: Vibe,
    /// Its announced minimum price.
    pub min_task_reward: Vibe,
    /// Slots it had free when it announced.
    pub free_slots: u32,
    /// When its announcement arrived here.
    pub announced_at: DateTime<Utc>,
}

/// Whether `offer` is live at `now` and matches `request`: announced within `ttl` (and not
/// in the future), the profile and every capability the request needs, a free slot, and
/// the price the executor would ask ([`bid_price`] for [`estimate_duration_s`], the same
/// the bidder computes) within the reward and at or above this node's `min_task_reward`.
/// Returns that price.
pub fn offer_matches<P>(
    offer: &OfferFacts<P>,
    request: &TaskDistributionRequest,
    min_task_reward: Vibe,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Option<Vibe> {
    let age = now.signed_duration_since(offer.announced_at);
    let ttl = chrono::Duration::from_std(ttl).ok()?;
    if age < chrono::Duration::zero() || age >= ttl || offer.free_slots == 0 {
        return None;
    }
    if !offer.profiles.contains(&request.executor_profile)
        || !request
            .requirements
            .capabilities
            .iter()
            .all(|c| offer.capabilities.contains(c))
    {
        return None;
    }
    let price = bid_price(
        offer.compute_rate_per_cpu_hour,
        offer.min_task_reward,
        estimate_duration_s(request),
    );
    (price <= request.reward && price > Vibe::ZERO && price >= min_task_reward).then_some(price)
}

/// The executor to ask first for `request`, if a live offer matches ([`offer_matches`]):
/// the lowest price; among equal prices the one given fewest tasks lately (`recent`), then
/// the one with most free slots, so a burst spreads as a bid round would spread it. `ttl`
/// of zero means the fast path is off.
pub fn pick_offer<P: Copy>(
    offers: &[OfferFacts<P>],
    request: &TaskDistributionRequest,
    min_task_reward: Vibe,
    ttl: Duration,
    now: DateTime<Utc>,
    recent: impl Fn(&P) -> u32,
) -> Option<P> {
    if ttl.is_zero() {
        return None;
    }
    offers
        .iter()
        .filter_map(|offer| {
            offer_matches(offer, request, min_task_reward, ttl, now).map(|price| (offer, price))
        })
        .min_by_key(|(offer, price)| {
            (
                *price,
                recent(&offer.peer),
                std::cmp::Reverse(offer.free_slots),
            )
        })
        .map(|(offer, _)| offer.peer)
}

/// Whether going from `before` to `after` free slots changes what peers should believe of
/// this node's offer: it stops being one (no slot left) or becomes one again. The count
/// alone only breaks ties, and the periodic announcement carries it.
pub fn offer_changed(before: u32, after: u32) -> bool {
    (before == 0) != (after == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::TaskRequirements;
    use uuid::Uuid;

    const TTL: Duration = Duration::from_secs(10);

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn request(reward: u64) -> TaskDistributionRequest {
        TaskDistributionRequest {
            task_id: Uuid::nil(),
            executor_profile: "SHELL".into(),
            requirements: TaskRequirements {
                capabilities: vec!["rust".into()],
                memory_mb: 0,
                timeout_s: 0,
            },
            reward: Vibe::from_whole(reward),
            content_hash: String::new(),
            bid_deadline: now(),
        }
    }

    /// An offer from `peer` at `rate` VIBE/h (600 s estimate: rate / 6), announced
    /// `age_s` seconds ago with `free_slots`.
    fn offer(peer: u32, rate: u64, free_slots: u32, age_s: i64) -> OfferFacts<u32> {
        OfferFacts {
            peer,
            profiles: vec!["SHELL".into()],
            capabilities: vec!["rust".into(), "compute".into()],
            compute_rate_per_cpu_hour: Vibe::from_whole(rate),
            min_task_reward: Vibe::from_whole(1),
            free_slots,
            announced_at: now() - chrono::Duration::seconds(age_s),
        }
    }

    #[test]
    fn a_live_offer_with_the_profile_a_slot_and_a_price_within_the_reward_matches() {
        let min = Vibe::from_whole(1);
        assert_eq!(
            offer_matches(&offer(1, 12, 1, 0), &request(10), min, TTL, now()),
            Some(Vibe::from_whole(2))
        );
        // Too old, from the future, no slot, too dear.
        assert_eq!(
            offer_matches(&offer(1, 12, 1, 10), &request(10), min, TTL, now()),
            None
        );
        assert_eq!(
            offer_matches(&offer(1, 12, 1, -1), &request(10), min, TTL, now()),
            None
        );
        assert_eq!(
            offer_matches(&offer(1, 12, 0, 0), &request(10), min, TTL, now()),
            None
        );
        assert_eq!(
            offer_matches(&offer(1, 600, 1, 0), &request(10), min, TTL, now()),
            None
        );
        // Below this node's own floor: a bid at that price would be refused too.
        assert_eq!(
            offer_matches(
                &offer(1, 12, 1, 0),
                &request(10),
                Vibe::from_whole(3),
                TTL,
                now()
            ),
            None
        );
        // Another profile, a missing capability.
        let mut other = offer(1, 12, 1, 0);
        other.profiles = vec!["CODEX".into()];
        assert_eq!(offer_matches(&other, &request(10), min, TTL, now()), None);
        let mut bare = offer(1, 12, 1, 0);
        bare.capabilities.clear();
        assert_eq!(offer_matches(&bare, &request(10), min, TTL, now()), None);
    }

    #[test]
    fn only_running_out_of_slots_or_getting_one_back_changes_an_offer() {
        assert!(offer_changed(1, 0));
        assert!(offer_changed(0, 3));
        assert!(!offer_changed(4, 3));
        assert!(!offer_changed(0, 0));
    }

    #[test]
    fn the_cheapest_live_offer_wins_and_ties_spread_by_load() {
        let min = Vibe::from_whole(1);
        let none = |_: &u32| 0;
        let offers = [offer(1, 18, 4, 0), offer(2, 12, 1, 0), offer(3, 12, 1, 20)];
        assert_eq!(
            pick_offer(&offers, &request(10), min, TTL, now(), none),
            Some(2)
        );
        // Equal prices: fewest recent assignments, then most free slots.
        let offers = [offer(1, 12, 1, 0), offer(2, 12, 1, 0), offer(3, 12, 5, 0)];
        let recent = |peer: &u32| if *peer == 3 { 2 } else { 0 };
        assert_eq!(
            pick_offer(&offers, &request(10), min, TTL, now(), recent),
            Some(1)
        );
        assert_eq!(
            pick_offer(&offers, &request(10), min, TTL, now(), none),
            Some(3)
        );
        // Nothing live, or the fast path off.
        assert_eq!(
            pick_offer(&[offer(1, 12, 0, 0)], &request(10), min, TTL, now(), none),
            None
        );
        assert_eq!(
            pick_offer(&offers, &request(10), min, Duration::ZERO, now(), none),
            None
        );
    }
}
