//! The bidder's side of the task life cycle as a plain state machine: which requests it
//! answers, how often a peer may ask, and how long a bid it made stays live. No I/O and no
//! clock of its own: the actor passes `now` in, carries out the answer (ask the executor
//! for a slot, send the bid) and reports back with [`BidBook::slot_refused`].
//!
//! A request is answered once per round: the same task id arriving again within the bid
//! window (it comes by gossip and directly) is a copy; once the window has passed, a
//! request with that id is a new round and is answered again.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The book's bounds, from the market config.
#[derive(Debug, Clone, Copy)]
pub struct BidBookLimits {
    /// Copies of a request within this long of the answer are not new requests.
    pub copies_window: Duration,
    /// Requests a peer may make per minute.
    pub requests_per_peer_per_minute: u32,
    /// Live bids remembered at most (every one holds a reservation).
    pub bids_remembered_max: usize,
    /// Peers whose request counts are kept at most.
    pub rate_limited_peers_max: usize,
}

/// Why a request gets no bid before the bid rules are even asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefused {
    /// The task id came again within the copies window while its bid is still live.
    #[error("a copy of a request already answered")]
    Copy,
    /// The peer asked more than `requests_per_peer_per_minute` times this minute, or too
    /// many peers are counted already to count a new one.
    #[error("the requester is over its requests per minute")]
    RateLimited,
    /// This node already remembers `bids_remembered_max` live bids.
    #[error("this node holds its limit of live bids")]
    TooManyLiveBids,
}

/// A bid this node made: when it answered, and when its reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiveBid {
    answered_at: Instant,
    until: Instant,
}

/// Request counting for one peer over a one-minute window.
#[derive(Debug, Clone, Copy)]
struct RequestWindow {
    started: Instant,
    count: u32,
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How long a bid's slot stays reserved after the bid window, for the assignment to arrive.
/// Short, because a losing bidder whose withdrawal is lost gets its slot back when this
/// runs out.
pub const RESERVATION_GRACE: Duration = Duration::from_secs(2);

/// The bidder's memory of requests and bids.
#[derive(Debug)]
pub struct BidBook<P> {
    limits: BidBookLimits,
    bids: HashMap<Uuid, LiveBid>,
    requests: HashMap<P, RequestWindow>,
}

impl<P: Eq + Hash + Copy> BidBook<P> {
    /// An empty book: no bids made, no requests counted.
    pub fn new(limits: BidBookLimits) -> Self {
        BidBook {
            limits,
            bids: HashMap::new(),
            requests: HashMap::new(),
        }
    }

    /// A request for `task_id` from `origin` arrived at `now`: may the bid rules look at
    /// it? A copy is refused without counting against the requester's rate.
    pub fn admit(&mut self, task_id: Uuid, origin: P, now: Instant) -> Result<(), RequestRefused> {
        if self.bids.get(&task_id).is_some_and(|bid| {
            now.saturating_duration_since(bid.answered_at) < self.limits.copies_window
                && bid.until > now
        }) {
            return Err(RequestRefused::Copy);
        }
        if !self.count_request(origin, now) {
            return Err(RequestRefused::RateLimited);
        }
        Ok(())
    }

    fn count_request(&mut self, peer: P, now: Instant) -> bool {
        let fresh =
            |window: &RequestWindow| now.saturating_duration_since(window.started) < RATE_WINDOW;
        if self.requests.len() >= self.limits.rate_limited_peers_max
            && !self.requests.contains_key(&peer)
        {
            self.requests.retain(|_, window| fresh(window));
            if self.requests.len() >= self.limits.rate_limited_peers_max {
                return false;
            }
        }
        let window = self.requests.entry(peer).or_insert(RequestWindow {
            started: now,
            count: 0,
        });
        if !fresh(window) {
            *window = RequestWindow {
                started: now,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
        window.count <= self.limits.requests_per_peer_per_minute
    }

    /// The rules said bid: remember the bid, live for `lifetime` from `now`. Returns when
    /// its reservation ends.
    pub fn record_bid(
        &mut self,
        task_id: Uuid,
        now: Instant,
        lifetime: Duration,
    ) -> Result<Instant, RequestRefused> {
        if self.bids.len() >= self.limits.bids_remembered_max && !self.bids.contains_key(&task_id) {
            self.bids.retain(|_, bid| bid.until > now);
            if self.bids.len() >= self.limits.bids_remembered_max {
                return Err(RequestRefused::TooManyLiveBids);
            }
        }
        let until = now + lifetime;
        self.bids.insert(
            task_id,
            LiveBid {
                answered_at: now,
                until,
            },
        );
        Ok(until)
    }

    /// The executor had no slot for the bid: forget it, so a later round is answered.
    pub fn slot_refused(&mut self, task_id: Uuid) {
        self.bids.remove(&task_id);
    }

    /// Live bids remembered now (for tests and status).
    pub fn live_bids(&self, now: Instant) -> usize {
        self.bids.values().filter(|bid| bid.until > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(300);
    const LIFETIME: Duration = Duration::from_millis(2300);

    fn book(per_minute: u32, bids_max: usize, peers_max: usize) -> BidBook<u32> {
        BidBook::new(BidBookLimits {
            copies_window: WINDOW,
            requests_per_peer_per_minute: per_minute,
            bids_remembered_max: bids_max,
            rate_limited_peers_max: peers_max,
        })
    }

    #[test]
    fn a_copy_within_the_window_is_not_a_new_request_and_a_later_round_is() {
        let mut book = book(10, 10, 10);
        let task = Uuid::new_v4();
        let t0 = Instant::now();
        assert_eq!(book.admit(task, 1, t0), Ok(()));
        let until = book.record_bid(task, t0, LIFETIME).unwrap();
        assert_eq!(until, t0 + LIFETIME);
        // The same request again by another path, within the window: a copy.
        assert_eq!(
            book.admit(task, 1, t0 + WINDOW / 2),
            Err(RequestRefused::Copy)
        );
        // The originator's next round, after the window: answered again.
        assert_eq!(book.admit(task, 1, t0 + WINDOW), Ok(()));
    }

    #[test]
    fn a_request_whose_slot_was_refused_is_answered_next_time() {
        let mut book = book(10, 10, 10);
        let task = Uuid::new_v4();
        let t0 = Instant::now();
        book.admit(task, 1, t0).unwrap();
        book.record_bid(task, t0, LIFETIME).unwrap();
        book.slot_refused(task);
        assert_eq!(book.admit(task, 1, t0 + Duration::from_millis(1)), Ok(()));
        assert_eq!(book.live_bids(t0), 0);
    }

    #[test]
    fn copies_do_not_count_against_the_rate_and_the_rate_resets_each_minute() {
        let mut book = book(2, 10, 10);
        let t0 = Instant::now();
        let first = Uuid::new_v4();
        book.admit(first, 7, t0).unwrap();
        book.record_bid(first, t0, LIFETIME).unwrap();
        for _ in 0..5 {
            assert_eq!(book.admit(first, 7, t0), Err(RequestRefused::Copy));
        }
        assert_eq!(book.admit(Uuid::new_v4(), 7, t0), Ok(()));
        assert_eq!(
            book.admit(Uuid::new_v4(), 7, t0),
            Err(RequestRefused::RateLimited)
        );
        // Another peer has its own budget.
        assert_eq!(book.admit(Uuid::new_v4(), 8, t0), Ok(()));
        // A minute later the budget is back.
        assert_eq!(book.admit(Uuid::new_v4(), 7, t0 + RATE_WINDOW), Ok(()));
    }

    #[test]
    fn requester_table_is_bounded_and_makes_room_only_from_stale_entries() {
        let mut book = book(10, 10, 2);
        let t0 = Instant::now();
        book.admit(Uuid::new_v4(), 1, t0).unwrap();
        book.admit(Uuid::new_v4(), 2, t0).unwrap();
        // A third requester while both are fresh: refused, known requesters still served.
        assert_eq!(
            book.admit(Uuid::new_v4(), 3, t0),
            Err(RequestRefused::RateLimited)
        );
        assert_eq!(book.admit(Uuid::new_v4(), 1, t0), Ok(()));
        // Once the others' minutes are over, there is room.
        assert_eq!(book.admit(Uuid::new_v4(), 3, t0 + RATE_WINDOW), Ok(()));
    }

    #[test]
    fn live_bids_are_bounded_and_expired_ones_make_room() {
        let mut book = book(100, 2, 10);
        let t0 = Instant::now();
        book.record_bid(Uuid::new_v4(), t0, LIFETIME).unwrap();
        book.record_bid(Uuid::new_v4(), t0, LIFETIME).unwrap();
        assert_eq!(
            book.record_bid(Uuid::new_v4(), t0, LIFETIME),
            Err(RequestRefused::TooManyLiveBids)
        );
        assert_eq!(book.live_bids(t0), 2);
        let later = t0 + LIFETIME;
        assert!(book.record_bid(Uuid::new_v4(), later, LIFETIME).is_ok());
        assert_eq!(book.live_bids(later), 1);
    }
}
