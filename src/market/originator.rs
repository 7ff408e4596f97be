//! The originator's side of the task life cycle, the parts that decide with the clock:
//! when a bid window may close before its time ([`bid_window_done`]), how many tasks it
//! gave each executor lately ([`RecentAssignments`], for spreading near-ties), which bid to
//! assign next (skipping bids whose reservation ran out, offering the task
//! again when only such bids are left, giving up after `market.reassignments_max`), and
//! when an assignment has gone on too long (silent past the heartbeat timeout, or past the
//! run's deadline however many heartbeats came). Plain functions and types, `now` passed
//! in; the distributor carries out what they decide.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// What to do after a bid round closed, or after an assignment ended without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep<P> {
    /// Assign the task to this bidder.
    Assign(P),
    /// Every bid left had run out: offer the task to the mesh again.
    OfferAgain {
        /// How many ranked bids were skipped as run out or unknown.
        expired: usize,
    },
    /// Nothing left to try.
    GiveUp,
}

/// How many times the originator has tried, for [`next_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tries {
    /// Assignments made so far.
    pub attempts: u32,
    /// Rounds offered again because only expired bids were left.
    pub reoffers: u32,
}

/// Take the next bidder from `ranked` (best first), skipping those whose bid's
/// `valid_until` (from `valid_until_of`) is not after `now`: their reservation is gone and
/// they would refuse. At most `reassignments_max + 1` assignments, and as many re-offers.
pub fn next_step<P: Copy>(
    ranked: &mut VecDeque<P>,
    valid_until_of: impl Fn(&P) -> Option<DateTime<Utc>>,
    tries: Tries,
    reassignments_max: u32,
    now: DateTime<Utc>,
) -> NextStep<P> {
    if tries.attempts > reassignments_max {
        return NextStep::GiveUp;
    }
    let mut expired = 0;
    while let Some(peer) = ranked.pop_front() {
        match valid_until_of(&peer) {
            Some(until) if until > now => return NextStep::Assign(peer),
            // A bid that ran out, or one no longer known: skip it.
            _ => expired += 1,
        }
    }
    if expired > 0 && tries.reoffers < reassignments_max.saturating_add(1) {
        NextStep::OfferAgain { expired }
    } else {
        NextStep::GiveUp
    }
}

/// Whether a bid window may close now, before its time. It closes once `bidders` (distinct
/// peers with a good bid in) number `bids_enough` (`market.bids_enough`), or once every
/// one of the `eligible` executors has answered, with a bid or a refusal (`declined`).
/// The eligible are those the originator knows to run the task's profile with a free slot
/// and offered the request directly; with none known, only enough bids close it early.
/// Waiting longer could only add bids no better than a tie among these: every executor it
/// knows could take the task has spoken. When all of them refused and nobody bid, the
/// window closes empty at once (the task is offered again after a pause, as after an empty
/// window). Answers from peers not among the eligible count only as bids.
pub fn bid_window_done<P: PartialEq>(
    bidders: &[P],
    declined: &[P],
    eligible: &[P],
    bids_enough: usize,
) -> bool {
    if !bidders.is_empty() && bidders.len() >= bids_enough {
        return true;
    }
    !eligible.is_empty()
        && eligible
            .iter()
            .all(|peer| bidders.contains(peer) || declined.contains(peer))
}

/// How long an assignment counts as recent, for spreading near-tied bids.
pub const RECENT_ASSIGNMENT_WINDOW: Duration = Duration::from_secs(60);
/// Executors whose recent assignments are remembered at most.
pub const RECENT_EXECUTORS_MAX: usize = 1024;
/// Recent assignments remembered per executor at most.
pub const RECENT_PER_EXECUTOR_MAX: usize = 1024;

/// The tasks this originator gave each executor within [`RECENT_ASSIGNMENT_WINDOW`]: fewer
/// wins a near-tie (`market::rank_bids`), so a burst against equal executors spreads over
/// all of them. Bounded: at most [`RECENT_EXECUTORS_MAX`] executors (the one assigned to
/// longest ago is forgotten first) and [`RECENT_PER_EXECUTOR_MAX`] assignments each.
#[derive(Debug, Clone)]
pub struct RecentAssignments<P> {
    window: Duration,
    given: HashMap<P, VecDeque<Instant>>,
}

impl<P: Eq + Hash + Copy> Default for RecentAssignments<P> {
    fn default() -> Self {
        Self::new(RECENT_ASSIGNMENT_WINDOW)
    }
}

impl<P: Eq + Hash + Copy> RecentAssignments<P> {
    /// No assignments yet; an assignment counts for `window`.
    pub fn new(window: Duration) -> Self {
        RecentAssignments {
            window,
            given: HashMap::new(),
        }
    }

    /// A task went to `peer` at `now`.
    pub fn record(&mut self, peer: P, now: Instant) {
        if !self.given.contains_key(&peer) && self.given.len() >= RECENT_EXECUTORS_MAX {
            self.forget_old(now);
            if self.given.len() >= RECENT_EXECUTORS_MAX
                && let Some(oldest) = self
                    .given
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(peer, _)| *peer)
            {
                self.given.remove(&oldest);
            }
        }
        let times = self.given.entry(peer).or_default();
        if times.len() >= RECENT_PER_EXECUTOR_MAX {
            times.pop_front();
        }
        times.push_back(now);
    }

    /// Tasks given to `peer` within the window before `now`.
    pub fn count(&self, peer: &P, now: Instant) -> u32 {
        self.given.get(peer).map_or(0, |times| {
            times
                .iter()
                .filter(|at| now.saturating_duration_since(**at) < self.window)
                .count() as u32
        })
    }

    /// Drop assignments older than the window, and executors left with none.
    pub fn forget_old(&mut self, now: Instant) {
        let window = self.window;
        self.given.retain(|_, times| {
            while times
                .front()
                .is_some_and(|at| now.saturating_duration_since(*at) >= window)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// Executors remembered now (for tests).
    pub fn executors(&self) -> usize {
        self.given.len()
    }
}

/// Why an assignment is over without a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// No message from the executor for longer than the heartbeat timeout.
    Silent {
        /// The heartbeat timeout that passed.
        timeout: Duration,
    },
    /// Past the run's deadline (`market::assignment_deadline_s`).
    PastDeadline {
        /// The run's deadline, counted from the assignment.
        deadline: Duration,
    },
}

impl std::fmt::Display for Overdue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Overdue::Silent { timeout } => write!(f, "no heartbeat for {} s", timeout.as_secs()),
            Overdue::PastDeadline { deadline } => {
                write!(f, "the run passed its {} s deadline", deadline.as_secs())
            }
        }
    }
}

/// An assignment's clock: when it was made and when the executor was last heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentClock {
    /// When the assignment was made; the run's deadline counts from here.
    pub assigned_at: Instant,
    /// The latest message from the executor; the heartbeat timeout counts from here.
    pub last_heard: Instant,
}

impl AssignmentClock {
    /// A clock for an assignment made at `now`, which counts as hearing from the executor.
    pub fn new(now: Instant) -> Self {
        AssignmentClock {
            assigned_at: now,
            last_heard: now,
        }
    }

    /// Any message from the executor is a heartbeat.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// Whether the assignment is over at `now`: silence first, then the deadline.
    pub fn overdue(
        &self,
        now: Instant,
        heartbeat_timeout: Duration,
        deadline: Duration,
    ) -> Option<Overdue> {
        if now.saturating_duration_since(self.last_heard) > heartbeat_timeout {
            Some(Overdue::Silent {
                timeout: heartbeat_timeout,
            })
        } else if now.saturating_duration_since(self.assigned_at) > deadline {
            Some(Overdue::PastDeadline { deadline })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    /// Bidders 1..=3, each bid valid until `at(valid_until)`.
    fn ranked(bids: &[(u32, i64)]) -> (VecDeque<u32>, impl Fn(&u32) -> Option<DateTime<Utc>>) {
        let valid: Vec<(u32, i64)> = bids.to_vec();
        (
            bids.iter().map(|(peer, _)| *peer).collect(),
            move |peer: &u32| valid.iter().find(|(p, _)| p == peer).map(|(_, s)| at(*s)),
        )
    }

    #[test]
    fn a_window_closes_early_with_enough_bids_or_every_known_bidder() {
        let none: &[u32] = &[];
        // Nothing in: never early with nobody known (the window runs its length).
        assert!(!bid_window_done(none, none, none, 3));
        assert!(!bid_window_done(none, none, none, 1));
        // Enough distinct bidders, whoever is known.
        assert!(!bid_window_done(&[1, 2], none, none, 3));
        assert!(bid_window_done(&[1, 2, 3], none, none, 3));
        assert!(bid_window_done(&[1, 2, 3, 4], none, &[1, 2, 5, 6, 7, 8], 3));
        // Every eligible executor has bid, even if fewer than enough.
        assert!(bid_window_done(&[1], none, &[1], 3));
        assert!(bid_window_done(&[2, 1], none, &[1, 2], 3));
        assert!(!bid_window_done(&[1], none, &[1, 2], 3));
        // More eligible than enough: enough decides.
        assert!(!bid_window_done(&[1, 2], none, &[1, 2, 3, 4, 5], 3));
    }

    #[test]
    fn a_refusal_counts_as_an_answer_but_strangers_do_not_stand_in_for_the_eligible() {
        let none: &[u32] = &[];
        // One bid, the other eligible executor refused: every one has answered.
        assert!(bid_window_done(&[1], &[2], &[1, 2], 3));
        // Every eligible executor refused: the window closes empty at once.
        assert!(bid_window_done(none, &[1, 2], &[1, 2], 3));
        assert!(!bid_window_done(none, &[1], &[1, 2], 3));
        // A bid or a refusal from a peer not known as eligible answers for nobody.
        assert!(!bid_window_done(&[9], &[8], &[1, 2], 3));
        assert!(!bid_window_done(&[1, 9], none, &[1, 2], 3));
        // With nobody known eligible, refusals alone never close it.
        assert!(!bid_window_done(none, &[1, 2, 3], none, 3));
    }

    #[test]
    fn recent_assignments_count_within_the_window_and_stay_bounded() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut recent = RecentAssignments::new(window);
        recent.record(1u32, t0);
        recent.record(1, t0 + Duration::from_secs(30));
        recent.record(2, t0 + Duration::from_secs(30));
        assert_eq!(recent.count(&1, t0 + Duration::from_secs(30)), 2);
        assert_eq!(recent.count(&3, t0), 0);
        // The first assignment to 1 is no longer recent a minute later.
        assert_eq!(recent.count(&1, t0 + window), 1);
        recent.forget_old(t0 + Duration::from_secs(90));
        assert_eq!(recent.executors(), 0);
        // Per executor and in executors, bounded.
        for _ in 0..RECENT_PER_EXECUTOR_MAX + 5 {
            recent.record(7, t0);
        }
        assert_eq!(recent.count(&7, t0), RECENT_PER_EXECUTOR_MAX as u32);
        for peer in 0..RECENT_EXECUTORS_MAX as u32 + 5 {
            recent.record(1000 + peer, t0 + Duration::from_secs(1));
        }
        assert_eq!(recent.executors(), RECENT_EXECUTORS_MAX);
        // The executor assigned to longest ago went first.
        assert_eq!(recent.count(&7, t0), 0);
    }

    #[test]
    fn the_best_live_bid_is_assigned_and_expired_ones_are_skipped() {
        let (mut queue, valid) = ranked(&[(1, 5), (2, 20), (3, 20)]);
        let tries = Tries::default();
        assert_eq!(
            next_step(&mut queue, &valid, tries, 2, at(10)),
            NextStep::Assign(2)
        );
        // The next call (the first executor failed) goes on down the list.
        assert_eq!(
            next_step(&mut queue, &valid, tries, 2, at(10)),
            NextStep::Assign(3)
        );
        assert_eq!(
            next_step(&mut queue, &valid, tries, 2, at(10)),
            NextStep::GiveUp
        );
    }

    #[test]
    fn a_bid_is_dead_at_its_valid_until_and_unknown_bids_count_as_dead() {
        let (mut queue, valid) = ranked(&[(1, 10)]);
        queue.push_back(9);
        assert_eq!(
            next_step(&mut queue, &valid, Tries::default(), 2, at(10)),
            NextStep::OfferAgain { expired: 2 }
        );
    }

    #[test]
    fn only_expired_bids_left_means_offer_again_a_bounded_number_of_times() {
        let tries = |reoffers| Tries {
            attempts: 1,
            reoffers,
        };
        let (mut queue, valid) = ranked(&[(1, 0), (2, 0)]);
        assert_eq!(
            next_step(&mut queue, &valid, tries(0), 2, at(1)),
            NextStep::OfferAgain { expired: 2 }
        );
        let (mut queue, valid) = ranked(&[(1, 0)]);
        assert_eq!(
            next_step(&mut queue, &valid, tries(3), 2, at(1)),
            NextStep::GiveUp
        );
        // No bids at all is not a reason to offer again.
        let (mut queue, valid) = ranked(&[]);
        assert_eq!(
            next_step(&mut queue, &valid, tries(0), 2, at(1)),
            NextStep::GiveUp
        );
    }

    #[test]
    fn attempts_past_the_reassignment_limit_give_up_whatever_bids_are_left() {
        let (mut queue, valid) = ranked(&[(1, 100)]);
        let tries = Tries {
            attempts: 3,
            reoffers: 0,
        };
        assert_eq!(
            next_step(&mut queue, &valid, tries, 2, at(1)),
            NextStep::GiveUp
        );
        assert_eq!(queue.len(), 1, "nothing was taken from the queue");
    }

    #[test]
    fn silence_past_the_timeout_ends_an_assignment() {
        let t0 = Instant::now();
        let mut clock = AssignmentClock::new(t0);
        let timeout = Duration::from_secs(30);
        let deadline = Duration::from_secs(3600);
        assert_eq!(clock.overdue(t0 + timeout, timeout, deadline), None);
        assert_eq!(
            clock.overdue(t0 + timeout + Duration::from_millis(1), timeout, deadline),
            Some(Overdue::Silent { timeout })
        );
        // A heartbeat starts the silence over; an old one never moves it back.
        clock.heard(t0 + Duration::from_secs(20));
        clock.heard(t0 + Duration::from_secs(5));
        assert_eq!(
            clock.overdue(t0 + Duration::from_secs(45), timeout, deadline),
            None
        );
    }

    #[test]
    fn heartbeats_cannot_hold_an_assignment_past_its_deadline() {
        let t0 = Instant::now();
        let mut clock = AssignmentClock::new(t0);
        let timeout = Duration::from_secs(30);
        let deadline = Duration::from_secs(90);
        let mut now = t0;
        for _ in 0..9 {
            now += Duration::from_secs(10);
            clock.heard(now);
            assert_eq!(clock.overdue(now, timeout, deadline), None);
        }
        now += Duration::from_secs(10);
        clock.heard(now);
        assert_eq!(
            clock.overdue(now, timeout, deadline),
            Some(Overdue::PastDeadline { deadline })
        );
        assert_eq!(
            Overdue::PastDeadline { deadline }.to_string(),
            "the run passed its 90 s deadline"
        );
    }
}
