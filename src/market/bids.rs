//! Bids: whether this node bids for a request and at what price ([`decide_bid`]), whether
//! a bid may hold a slot ([`may_reserve`]), what an originator refuses outright
//! ([`check_bid`], [`check_bid_price`]) and how it orders the rest ([`score_bid`],
//! [`rank_bids`]: best score first, near-ties spread by load, [`near_tie`]). Plain functions.

use crate::config::AcceptConfig;
use crate::messages::{TaskDistributionRequest, Vibe};

use super::DEFAULT_ESTIMATE_S;

/// What a bidder knows about itself when a request arrives.
#[derive(Debug, Clone)]
pub struct BidderState<'a> {
    /// The executor profiles this node can run.
    pub profiles: &'a [String],
    /// The capability tags this node offers; a request needing another is not bid for.
    pub capabilities: &'a [String],
    /// Slots free to run a task; with none, no bid.
    pub free_slots: u32,
    /// This node's compute price, in VIBE per CPU hour; the bid price is derived from it.
    pub compute_rate_per_cpu_hour: Vibe,
    /// The floor of this node's bid price.
    pub min_task_reward: Vibe,
    /// Whose tasks this node runs (`[accept]`).
    pub accept: &'a AcceptConfig,
    /// Memory an agent run may use here, in megabytes.
    pub memory_mb: u64,
    /// Why this node cannot run peers' tasks safely (no sandbox), if it cannot.
    pub unsandboxed: Option<&'a str>,
    /// False when the operator named this node's roles and left out `compute`
    /// ([`crate::config::NodeConfig::runs_peer_tasks`]): such a node never bids.
    pub compute_role: bool,
}

/// Why a node does not bid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoBid {
    /// This node's roles (`node.capabilities`) leave out `compute`.
    #[error("this node does not take the compute role (node.capabilities)")]
    NotCompute,
    /// This node's scratch data (workspaces, bundles, repository cache) is at its
    /// `resources.storage_gb` cap.
    #[error("storage is full: {used} of {cap} bytes used (resources.storage_gb)")]
    StorageFull {
        /// Bytes the scratch data takes, with the bundles of runs under way.
        used: u64,
        /// The cap, in bytes.
        cap: u64,
    },
    /// This node has no sandbox, so it runs no peer's task; holds the reason.
    #[error("peers' tasks are refused here: {0}")]
    Unsandboxed(String),
    /// This node cannot run the requested executor profile (named).
    #[error("profile {0} is not available here")]
    Profile(String),
    /// Every slot is busy or reserved.
    #[error("no free slot")]
    NoSlot,
    /// The requesting peer already holds its share of reservations here
    /// (`market.reservations_per_peer`).
    #[error("the requesting peer already holds {held} reservation(s) here")]
    PeerReservations {
        /// Reservations the requesting peer holds here now.
        held: usize,
    },
    /// The `[accept]` policy does not allow the requesting peer.
    #[error("the accept policy refuses tasks from this peer")]
    Policy,
    /// The request needs a capability (named) this node does not offer.
    #[error("capability {0} is missing")]
    Capability(String),
    /// The request needs more memory than an agent run may use here.
    #[error("the task needs {needed} MB of memory, {available} MB are offered")]
    Memory {
        /// Memory the request needs, in megabytes.
        needed: u64,
        /// Memory an agent run may use here, in megabytes.
        available: u64,
    },
    /// This node's price is above what the request offers.
    #[error("price {price} would be above the reward {reward}")]
    Price {
        /// The price this node would ask.
        price: Vibe,
        /// The reward the request offers.
        reward: Vibe,
    },
}

/// Whether a node that does not bid tells the originator so (`TaskBidDeclined`), letting
/// its bid window close without waiting for this node. Only a node that runs the profile
/// answers: the originator counts as eligible only nodes that announced the profile, so a
/// refusal from any other would answer for nobody, and every node without the profile
/// answering every request it hears by gossip would multiply the traffic of each task.
pub fn tells_refusal(reason: &NoBid) -> bool {
    !matches!(reason, NoBid::Profile(_))
}

/// Whether a bid may reserve a slot: one must be free, and the requesting peer may hold
/// at most `per_peer_max` reservations (`market.reservations_per_peer`).
pub fn may_reserve(
    free_slots: u32,
    held_by_requester: usize,
    per_peer_max: u32,
) -> Result<(), NoBid> {
    if held_by_requester >= per_peer_max as usize {
        return Err(NoBid::PeerReservations {
            held: held_by_requester,
        });
    }
    if free_slots == 0 {
        return Err(NoBid::NoSlot);
    }
    Ok(())
}

/// Whether a node whose scratch data takes `used_bytes` may bid (or admit an assignment)
/// under the storage cap `cap_bytes` (`None`: no cap): it must have room left at all. The
/// bundle's size is known only once it arrives; the run checks it then
/// ([`super::check_storage`]).
pub fn storage_room_for_bid(used_bytes: u64, cap_bytes: Option<u64>) -> Result<(), NoBid> {
    match cap_bytes {
        Some(cap) if used_bytes >= cap => Err(NoBid::StorageFull {
            used: used_bytes,
            cap,
        }),
        _ => Ok(()),
    }
}

/// The estimated run time for a request, in seconds.
pub fn estimate_duration_s(request: &TaskDistributionRequest) -> u64 {
    match request.requirements.timeout_s {
        0 => DEFAULT_ESTIMATE_S,
        timeout => timeout.min(DEFAULT_ESTIMATE_S),
    }
}

/// The price a node asks: its compute rate for the estimated time, never below its minimum.
pub fn bid_price(rate_per_cpu_hour: Vibe, min_task_reward: Vibe, estimate_s: u64) -> Vibe {
    let priced = Vibe::rate_times(rate_per_cpu_hour, estimate_s as f64 / 3600.0);
    priced.max(min_task_reward)
}

/// Whether to bid for `request` from `origin_peer`, and at what price.
pub fn decide_bid(
    request: &TaskDistributionRequest,
    origin_peer: &str,
    state: &BidderState<'_>,
) -> Result<Vibe, NoBid> {
    if !state.compute_role {
        return Err(NoBid::NotCompute);
    }
    if let Some(reason) = state.unsandboxed {
        return Err(NoBid::Unsandboxed(reason.to_string()));
    }
    if !state.profiles.contains(&request.executor_profile) {
        return Err(NoBid::Profile(request.executor_profile.clone()));
    }
    if !state.accept.allows(origin_peer) {
        return Err(NoBid::Policy);
    }
    if let Some(missing) = request
        .requirements
        .capabilities
        .iter()
        .find(|c| !state.capabilities.contains(c))
    {
        return Err(NoBid::Capability(missing.clone()));
    }
    if request.requirements.memory_mb > state.memory_mb {
        return Err(NoBid::Memory {
            needed: request.requirements.memory_mb,
            available: state.memory_mb,
        });
    }
    if state.free_slots == 0 {
        return Err(NoBid::NoSlot);
    }
    let price = bid_price(
        state.compute_rate_per_cpu_hour,
        state.min_task_reward,
        estimate_duration_s(request),
    );
    if price > request.reward {
        return Err(NoBid::Price {
            price,
            reward: request.reward,
        });
    }
    Ok(price)
}

/// A bid as the originator judges it.
#[derive(Debug, Clone, PartialEq)]
pub struct BidFacts {
    /// What the bidder asks.
    pub price: Vibe,
    /// The bidder's estimate of the run's wall-clock time, in seconds.
    pub estimated_duration_s: u64,
    /// The bidder's reputation in [0, 1] from this node's ledger.
    pub reputation: f64,
    /// Measured round trip to the bidder, when known.
    pub latency_ms: Option<f64>,
    /// Slots the bidder had free once this bid's slot was reserved (`None`: its bid did
    /// not say, an older node). Breaks near-ties only.
    pub free_slots: Option<u32>,
}

/// Why an originator refuses a bid outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBid {
    /// The bid asks nothing.
    #[error("a bid price of zero")]
    Zero,
    /// The bid asks less than this node's `min_task_reward`.
    #[error("price {price} below the minimum task reward {minimum}")]
    BelowMinimum {
        /// The bid's price.
        price: Vibe,
        /// This node's `min_task_reward`.
        minimum: Vibe,
    },
    /// The bid asks more than the task's reward.
    #[error("price {price} above the reward {reward}")]
    AboveReward {
        /// The bid's price.
        price: Vibe,
        /// The task's reward.
        reward: Vibe,
    },
    /// The bidder does not advertise the task's executor profile (named).
    #[error("the bidder does not advertise profile {0}")]
    Profile(String),
}

/// Refuse a bid price of zero or below `min_task_reward` (the originator's own floor): free
/// or near-free work scores best and would win every task it cannot be paid for.
pub fn check_bid_price(price: Vibe, min_task_reward: Vibe) -> Result<(), BadBid> {
    if price == Vibe::ZERO {
        return Err(BadBid::Zero);
    }
    if price < min_task_reward {
        return Err(BadBid::BelowMinimum {
            price,
            minimum: min_task_reward,
        });
    }
    Ok(())
}

/// Refuse bids at zero or below the minimum ([`check_bid_price`]), above the reward, or from
/// nodes that do not advertise the profile.
pub fn check_bid(
    price: Vibe,
    reward: Vibe,
    min_task_reward: Vibe,
    profile: &str,
    bidder_profiles: &[String],
) -> Result<(), BadBid> {
    check_bid_price(price, min_task_reward)?;
    if price > reward {
        return Err(BadBid::AboveReward { price, reward });
    }
    if !bidder_profiles.iter().any(|p| p == profile) {
        return Err(BadBid::Profile(profile.to_string()));
    }
    Ok(())
}

/// Weights of the score terms; they sum to 1 so a score is in [0, 1].
pub const WEIGHT_PRICE: f64 = 0.45;
/// Weight of the estimated run time in a score.
pub const WEIGHT_TIME: f64 = 0.2;
/// Weight of the bidder's reputation in a score.
pub const WEIGHT_REPUTATION: f64 = 0.25;
/// Weight of the measured round trip to the bidder in a score.
pub const WEIGHT_LATENCY: f64 = 0.1;

/// Score a bid in [0, 1]; higher is better. Price counts as the share of the reward saved,
/// time and latency as `1 / (1 + x / scale)` (600 s, 100 ms), reputation as is. A bidder
/// with unknown latency gets the latency of a 100 ms peer.
pub fn score_bid(bid: &BidFacts, reward: Vibe) -> f64 {
    let price_term = if reward.micros() == 0 {
        0.0
    } else {
        1.0 - (bid.price.as_f64() / reward.as_f64()).clamp(0.0, 1.0)
    };
    let time_term = 1.0 / (1.0 + bid.estimated_duration_s as f64 / 600.0);
    let reputation_term = bid.reputation.clamp(0.0, 1.0);
    let latency_term = 1.0 / (1.0 + bid.latency_ms.unwrap_or(100.0).max(0.0) / 100.0);
    WEIGHT_PRICE * price_term
        + WEIGHT_TIME * time_term
        + WEIGHT_REPUTATION * reputation_term
        + WEIGHT_LATENCY * latency_term
}

/// Scores within this share of the best score are a near-tie: the bids differ by less than
/// the terms' own noise (a fraction of a millisecond of latency, a rounding of the price, the
/// reputation one more completed task gives: 0.5 → 0.67, about 0.04 of a score), so load
/// decides among them. Without the last, an executor's first success won it every later
/// task while an equal executor idled; a real price difference (a fifth of the reward) is
/// well outside it.
pub const NEAR_TIE_SHARE: f64 = 0.075;

/// Whether `score` is a near-tie with the `best` score (within [`NEAR_TIE_SHARE`] of it).
pub fn near_tie(best: f64, score: f64) -> bool {
    score >= best - best.abs() * NEAR_TIE_SHARE
}

/// Order bids best first. The bids whose score is a near-tie with the best one
/// ([`near_tie`]) come first, ordered by load: fewer `recent_assignments` (tasks this
/// originator gave the bidder lately), then more free slots in the bid, then score; so a
/// burst of tasks against equal bidders spreads over all of them. The rest follow by score.
/// Remaining ties go to the lower price, then to the key (deterministic).
pub fn rank_bids<K: Ord + Clone>(
    bids: &[(K, BidFacts)],
    reward: Vibe,
    recent_assignments: impl Fn(&K) -> u32,
) -> Vec<K> {
    let mut scored: Vec<(f64, &K, &BidFacts)> = bids
        .iter()
        .map(|(key, facts)| (score_bid(facts, reward), key, facts))
        .collect();
    let by_score = |a: &(f64, &K, &BidFacts), b: &(f64, &K, &BidFacts)| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.2.price.cmp(&b.2.price))
            .then_with(|| a.1.cmp(b.1))
    };
    scored.sort_by(by_score);
    let Some(best) = scored.first().map(|(score, _, _)| *score) else {
        return Vec::new();
    };
    let tied = scored
        .iter()
        .take_while(|(score, _, _)| near_tie(best, *score))
        .count();
    scored[..tied].sort_by(|a, b| {
        recent_assignments(a.1)
            .cmp(&recent_assignments(b.1))
            .then_with(|| {
                b.2.free_slots
                    .unwrap_or(0)
                    .cmp(&a.2.free_slots.unwrap_or(0))
            })
            .then_with(|| by_score(a, b))
    });
    scored.into_iter().map(|(_, key, _)| key.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AcceptPolicy;
    use chrono::Utc;
    use uuid::Uuid;

    fn request(profile: &str, reward: Vibe) -> TaskDistributionRequest {
        TaskDistributionRequest {
            task_id: Uuid::new_v4(),
            executor_profile: profile.into(),
            requirements: Default::default(),
            reward,
            content_hash: String::new(),
            bid_deadline: Utc::now(),
        }
    }

    fn state<'a>(profiles: &'a [String], accept: &'a AcceptConfig) -> BidderState<'a> {
        BidderState {
            profiles,
            capabilities: &[],
            free_slots: 1,
            compute_rate_per_cpu_hour: Vibe::from_whole(12),
            min_task_reward: Vibe::from_whole(1),
            accept,
            memory_mb: 4096,
            unsandboxed: None,
            compute_role: true,
        }
    }

    #[test]
    fn a_node_without_the_compute_role_or_without_storage_room_does_not_bid() {
        let profiles = vec!["SHELL".to_string()];
        let accept = AcceptConfig::default();
        let relay_only = BidderState {
            compute_role: false,
            ..state(&profiles, &accept)
        };
        assert_eq!(
            decide_bid(&request("SHELL", Vibe::from_whole(5)), "p", &relay_only),
            Err(NoBid::NotCompute)
        );
        assert_eq!(storage_room_for_bid(u64::MAX, None), Ok(()), "no cap");
        assert_eq!(storage_room_for_bid(99, Some(100)), Ok(()));
        assert_eq!(
            storage_room_for_bid(100, Some(100)),
            Err(NoBid::StorageFull {
                used: 100,
                cap: 100
            })
        );
    }

    #[test]
    fn price_follows_the_rate_and_never_goes_below_the_minimum() {
        // 10 minutes at 12 VIBE/hour = 2 VIBE.
        assert_eq!(
            bid_price(Vibe::from_whole(12), Vibe::from_whole(1), 600),
            Vibe::from_whole(2)
        );
        assert_eq!(
            bid_price(Vibe::from_whole(1), Vibe::from_whole(1), 60),
            Vibe::from_whole(1)
        );
    }

    #[test]
    fn bids_only_when_every_condition_holds() {
        let profiles = vec!["SHELL".to_string()];
        let accept = AcceptConfig::default();
        let bidder = state(&profiles, &accept);
        assert_eq!(
            decide_bid(&request("SHELL", Vibe::from_whole(5)), "p", &bidder),
            Ok(Vibe::from_whole(2))
        );
        assert!(matches!(
            decide_bid(&request("CODEX", Vibe::from_whole(5)), "p", &bidder),
            Err(NoBid::Profile(_))
        ));
        assert!(matches!(
            decide_bid(
                &request("SHELL", Vibe::from_micros(1_999_999)),
                "p",
                &bidder
            ),
            Err(NoBid::Price { .. })
        ));
        let busy = BidderState {
            free_slots: 0,
            ..bidder.clone()
        };
        assert_eq!(
            decide_bid(&request("SHELL", Vibe::from_whole(5)), "p", &busy),
            Err(NoBid::NoSlot)
        );
        let closed = AcceptConfig {
            policy: AcceptPolicy::None,
            peers: vec![],
        };
        let unsandboxed = BidderState {
            unsandboxed: Some("the kernel has no Landlock"),
            ..bidder.clone()
        };
        assert!(matches!(
            decide_bid(&request("SHELL", Vibe::from_whole(5)), "p", &unsandboxed),
            Err(NoBid::Unsandboxed(reason)) if reason.contains("Landlock")
        ));
        let refusing = BidderState {
            accept: &closed,
            ..bidder.clone()
        };
        assert_eq!(
            decide_bid(&request("SHELL", Vibe::from_whole(5)), "p", &refusing),
            Err(NoBid::Policy)
        );
        let mut needy = request("SHELL", Vibe::from_whole(5));
        needy.requirements.capabilities = vec!["gpu".into()];
        assert!(matches!(
            decide_bid(&needy, "p", &bidder),
            Err(NoBid::Capability(_))
        ));
        needy.requirements.capabilities.clear();
        needy.requirements.memory_mb = 1 << 20;
        assert!(matches!(
            decide_bid(&needy, "p", &bidder),
            Err(NoBid::Memory { .. })
        ));
    }

    #[test]
    fn one_requester_holds_at_most_its_share_of_the_slots() {
        assert_eq!(may_reserve(2, 0, 1), Ok(()));
        assert_eq!(
            may_reserve(1, 1, 1),
            Err(NoBid::PeerReservations { held: 1 })
        );
        assert_eq!(may_reserve(1, 1, 2), Ok(()));
        assert_eq!(may_reserve(0, 0, 1), Err(NoBid::NoSlot));
    }

    #[test]
    fn cheaper_faster_more_reputable_closer_bids_rank_first() {
        let reward = Vibe::from_whole(10);
        let base = BidFacts {
            price: Vibe::from_whole(5),
            estimated_duration_s: 600,
            reputation: 0.5,
            latency_ms: Some(10.0),
            free_slots: Some(1),
        };
        let cheaper = BidFacts {
            price: Vibe::from_whole(2),
            ..base.clone()
        };
        let reputable = BidFacts {
            reputation: 0.9,
            ..base.clone()
        };
        assert!(score_bid(&cheaper, reward) > score_bid(&base, reward));
        assert!(score_bid(&reputable, reward) > score_bid(&base, reward));
        let faster = BidFacts {
            estimated_duration_s: 60,
            ..base.clone()
        };
        assert!(score_bid(&faster, reward) > score_bid(&base, reward));
        let far = BidFacts {
            latency_ms: Some(500.0),
            ..base.clone()
        };
        assert!(score_bid(&far, reward) < score_bid(&base, reward));
        let ranked = rank_bids(
            &[("a", base.clone()), ("b", cheaper), ("c", far)],
            reward,
            |_| 0,
        );
        assert_eq!(ranked, vec!["b", "a", "c"]);
        // Identical bids: deterministic by key.
        assert_eq!(
            rank_bids(&[("y", base.clone()), ("x", base)], reward, |_| 0),
            vec!["x", "y"]
        );
    }

    fn equal_bid(latency_ms: f64) -> BidFacts {
        BidFacts {
            price: Vibe::from_whole(2),
            estimated_duration_s: 600,
            reputation: 0.5,
            latency_ms: Some(latency_ms),
            free_slots: Some(4),
        }
    }

    #[test]
    fn near_ties_are_within_a_few_percent_of_the_best() {
        assert!(near_tie(0.6, 0.6));
        assert!(near_tie(0.6, 0.59));
        assert!(!near_tie(0.6, 0.55));
        assert!(near_tie(0.0, 0.0));
        // Half a millisecond of latency is a near-tie; a cheaper price is not.
        let reward = Vibe::from_whole(5);
        let best = score_bid(&equal_bid(0.2), reward);
        assert!(near_tie(best, score_bid(&equal_bid(0.7), reward)));
        let dearer = BidFacts {
            price: Vibe::from_whole(3),
            ..equal_bid(0.2)
        };
        assert!(!near_tie(best, score_bid(&dearer, reward)));
        // One more completed task (reputation 0.5 → 2/3) does not take every later task.
        let proven = BidFacts {
            reputation: 2.0 / 3.0,
            ..equal_bid(0.2)
        };
        assert!(near_tie(score_bid(&proven, reward), best));
    }

    #[test]
    fn near_ties_go_to_fewer_recent_assignments_then_more_free_slots() {
        let reward = Vibe::from_whole(5);
        // "a" is a hair closer, but was given more tasks lately.
        let bids = [("a", equal_bid(0.2)), ("b", equal_bid(0.4))];
        let recent = |key: &&str| if *key == "a" { 3 } else { 1 };
        assert_eq!(rank_bids(&bids, reward, recent), vec!["b", "a"]);
        assert_eq!(rank_bids(&bids, reward, |_| 0), vec!["a", "b"]);
        // Equal recent assignments: the one with more free slots.
        let roomy = BidFacts {
            free_slots: Some(7),
            ..equal_bid(0.4)
        };
        let bids = [("a", equal_bid(0.2)), ("b", roomy)];
        assert_eq!(rank_bids(&bids, reward, |_| 0), vec!["b", "a"]);
        // A clearly better bid is not a tie: load does not beat price.
        let cheaper = BidFacts {
            price: Vibe::from_whole(1),
            free_slots: Some(0),
            ..equal_bid(0.4)
        };
        let bids = [("a", equal_bid(0.2)), ("b", cheaper), ("c", equal_bid(0.3))];
        assert_eq!(
            rank_bids(&bids, reward, |k| u32::from(*k == "b") * 9),
            vec!["b", "a", "c"]
        );
        assert!(rank_bids::<&str>(&[], reward, |_| 0).is_empty());
    }

    #[test]
    fn a_burst_against_equal_bidders_spreads_over_all_of_them() {
        let reward = Vibe::from_whole(5);
        // Four equal bidders; latency differs by fractions of a millisecond.
        let bidders = ["w", "x", "y", "z"];
        let mut given: std::collections::HashMap<&str, u32> = Default::default();
        for task in 0..40 {
            let bids: Vec<(&str, BidFacts)> = bidders
                .iter()
                .enumerate()
                .map(|(i, key)| (*key, equal_bid(0.3 + 0.1 * ((task + i) % 4) as f64)))
                .collect();
            let ranked = rank_bids(&bids, reward, |key| given.get(key).copied().unwrap_or(0));
            *given.entry(ranked[0]).or_default() += 1;
        }
        assert_eq!(given.len(), 4, "{given:?}");
        assert!(given.values().all(|n| *n == 10), "{given:?}");
        // Without the spread (every bidder as loaded as the others) one bidder took all:
        // the closest one, task after task.
        let bids: Vec<(&str, BidFacts)> = bidders
            .iter()
            .enumerate()
            .map(|(i, key)| (*key, equal_bid(0.3 + 0.1 * i as f64)))
            .collect();
        assert_eq!(rank_bids(&bids, reward, |_| 0)[0], "w");
    }

    #[test]
    fn scores_stay_in_unit_interval() {
        let facts = BidFacts {
            price: Vibe::from_whole(100),
            estimated_duration_s: u64::MAX,
            reputation: 7.0,
            latency_ms: Some(-3.0),
            free_slots: None,
        };
        let score = score_bid(&facts, Vibe::from_whole(1));
        assert!((0.0..=1.0).contains(&score), "{score}");
        assert!((0.0..=1.0).contains(&score_bid(&facts, Vibe::ZERO)));
    }

    #[test]
    fn originator_refuses_bids_above_reward_or_without_the_profile() {
        let profiles = vec!["SHELL".to_string()];
        let min = Vibe::from_whole(1);
        let reward = Vibe::from_whole(3);
        assert!(check_bid(Vibe::from_whole(2), reward, min, "SHELL", &profiles).is_ok());
        assert!(check_bid(min, reward, min, "SHELL", &profiles).is_ok());
        assert!(matches!(
            check_bid(Vibe::from_whole(4), reward, min, "SHELL", &profiles),
            Err(BadBid::AboveReward { .. })
        ));
        assert!(matches!(
            check_bid(Vibe::from_whole(1), reward, min, "CODEX", &profiles),
            Err(BadBid::Profile(_))
        ));
    }

    #[test]
    fn originator_refuses_free_and_below_minimum_bids() {
        let profiles = vec!["SHELL".to_string()];
        let min = Vibe::from_whole(1);
        let reward = Vibe::from_whole(3);
        assert_eq!(
            check_bid(Vibe::ZERO, reward, min, "SHELL", &profiles),
            Err(BadBid::Zero)
        );
        assert!(matches!(
            check_bid(Vibe::from_micros(999_999), reward, min, "SHELL", &profiles),
            Err(BadBid::BelowMinimum { .. })
        ));
        // A zero minimum still refuses a zero price.
        assert_eq!(check_bid_price(Vibe::ZERO, Vibe::ZERO), Err(BadBid::Zero));
        assert_eq!(check_bid_price(Vibe::from_micros(1), Vibe::ZERO), Ok(()));
    }

    #[test]
    fn only_nodes_that_run_the_profile_say_they_will_not_bid() {
        assert!(!tells_refusal(&NoBid::Profile("SHELL".into())));
        for reason in [
            NoBid::NoSlot,
            NoBid::Policy,
            NoBid::NotCompute,
            NoBid::PeerReservations { held: 2 },
            NoBid::Capability("gpu".into()),
            NoBid::Price {
                price: Vibe::from_whole(2),
                reward: Vibe::from_whole(1),
            },
        ] {
            assert!(tells_refusal(&reason), "{reason}");
        }
    }
}
