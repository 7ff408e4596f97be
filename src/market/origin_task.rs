//! The originator's side of a task offered to the mesh, as a state machine with no I/O:
//!
//! ```text
//!        a live offer: one executor asked first; its refusal or silence: a full round
//!                ┌───────┐
//!                enough bids, or every eligible executor answered: early
//!                ┌───────┐
//! bundling ─► bidding ─► judging ─► escrowing ─► assigned ─► running ─► verifying ─► settling ─► completed
//!                ▲  │ no bid (rounds left)  │ escrow / seal failed: next bid     │ refusal, failure, silence,
//!                └──┘                       ▼                                    │ deadline, bad result:
//!                                     next bid / offer again / failed ◄───────────┘ refund, next bid
//! ```
//!
//! Each method is one event; it changes the state and returns the [`Effect`]s the
//! distributor must carry out (send, hold or refund escrow, schedule a timer, verify,
//! release). Results of those effects come back as further events naming what they
//! belong to (a bid round, an escrow id), so an answer that arrives late, for a round or an
//! assignment that is over, changes nothing. Time is passed in.

use std::collections::VecDeque;
use std::time::Instant;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::originator::{self, AssignmentClock, NextStep, Tries};
use crate::ledger::rules::Outcome;
use crate::messages::Vibe;

mod types;

pub use types::*;

/// One task offered to the mesh, from this node's side.
#[derive(Debug, Clone)]
pub struct OriginTask<P> {
    limits: OriginLimits,
    phase: Phase,
    /// Bid rounds held so far (the first is 1).
    round: u32,
    /// Rounds that ended with no bid.
    empty_rounds: u32,
    /// Executors known to run the profile with a free slot that the current round was
    /// offered to directly: once each has bid or refused, the window closes.
    eligible: Vec<P>,
    /// Peers that refused the current round's request (at most `bids_per_task_max`).
    declined: Vec<P>,
    /// The current round asks one executor, whose live offer matched, and nobody else.
    direct: Option<P>,
    /// The assignment came from such a round: no bid window was waited out.
    via_offer: bool,
    bids: Vec<(P, BidOffer)>,
    ranked: VecDeque<P>,
    tries: Tries,
    /// The chosen bid while its escrow is held and the task sealed.
    escrowing: Option<(P, Uuid)>,
    assignment: Option<Assignment<P>>,
    last_failure: Option<String>,
}

impl<P: Copy + Eq + std::fmt::Debug> OriginTask<P> {
    /// A task whose repository is being bundled.
    pub fn new(limits: OriginLimits) -> Self {
        OriginTask {
            limits,
            phase: Phase::Bundling,
            round: 0,
            empty_rounds: 0,
            eligible: Vec::new(),
            declined: Vec::new(),
            direct: None,
            via_offer: false,
            bids: Vec::new(),
            ranked: VecDeque::new(),
            tries: Tries::default(),
            escrowing: None,
            assignment: None,
            last_failure: None,
        }
    }

    /// Where the task is now.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Assignments made so far.
    pub fn attempts(&self) -> u32 {
        self.tries.attempts
    }

    /// Bids collected in the current round (cleared when a new round opens).
    pub fn bids_received(&self) -> usize {
        self.bids.len()
    }

    /// The assignment in progress, once escrow is held and the task sealed.
    pub fn assignment(&self) -> Option<&Assignment<P>> {
        self.assignment.as_ref()
    }

    /// The chosen bid (during escrow) or the assignment: who and at what price.
    pub fn chosen(&self) -> Option<(P, &BidOffer)> {
        let peer = match (&self.assignment, &self.escrowing) {
            (Some(assignment), _) => assignment.peer,
            (None, Some((peer, _))) => *peer,
            (None, None) => return None,
        };
        self.bid_of(&peer).map(|offer| (peer, offer))
    }

    /// Why the last executor did not deliver.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    fn bid_of(&self, peer: &P) -> Option<&BidOffer> {
        self.bids.iter().find(|(p, _)| p == peer).map(|(_, b)| b)
    }

    /// Whether the assignment in force (or the last one) came from a live offer, with no
    /// bid window waited out.
    pub fn via_offer(&self) -> bool {
        self.via_offer
    }

    /// The repository is read: open the first bid round.
    pub fn bundled(&mut self) -> Vec<Effect<P>> {
        if self.phase != Phase::Bundling {
            return Vec::new();
        }
        self.open_round()
    }

    /// The bundle is written and `peer`'s live offer matches the task
    /// ([`super::offers::pick_offer`]): ask it alone. Its bid closes the round at once
    /// (it is the only eligible executor); its refusal, or silence for a bid window, opens
    /// a full round at once, which counts as neither an empty round nor a re-offer.
    pub fn bundled_direct(&mut self, peer: P) -> Vec<Effect<P>> {
        if self.phase != Phase::Bundling {
            return Vec::new();
        }
        let _ = self.open_round();
        self.direct = Some(peer);
        vec![Effect::OfferTo {
            round: self.round,
            peer,
        }]
    }

    fn open_round(&mut self) -> Vec<Effect<P>> {
        self.phase = Phase::Bidding;
        self.round += 1;
        self.direct = None;
        self.eligible.clear();
        self.declined.clear();
        // A new round: bids of an earlier one held slots that are gone by now.
        self.bids.clear();
        self.ranked.clear();
        vec![Effect::Offer { round: self.round }]
    }

    /// The request of `round` is out, sent directly to the `eligible` executors (known to
    /// run the profile, with a free slot): close the window after `bid_window`, or at once
    /// if the answers that came meanwhile already suffice ([`originator::bid_window_done`]).
    pub fn offered(&mut self, round: u32, eligible: Vec<P>) -> Vec<Effect<P>> {
        if self.phase != Phase::Bidding || round != self.round {
            return Vec::new();
        }
        // A direct round waits for its one executor, whoever else is known.
        self.eligible = match self.direct {
            Some(peer) => vec![peer],
            None => eligible,
        };
        if self.window_done() {
            return self.close_bidding(round);
        }
        vec![Effect::CloseBiddingAfter {
            round,
            after: self.limits.bid_window,
        }]
    }

    fn window_done(&self) -> bool {
        let bidders: Vec<P> = self.bids.iter().map(|(peer, _)| *peer).collect();
        originator::bid_window_done(
            &bidders,
            &self.declined,
            &self.eligible,
            self.limits.bids_enough,
        )
    }

    /// `peer` will not bid in the current round (`TaskBidDeclined`). Once every eligible
    /// executor has answered, the window closes early: the effects are those of
    /// [`OriginTask::close_bidding`]. A refusal outside a window, a second one, or one past
    /// `bids_per_task_max` changes nothing.
    pub fn declined(&mut self, peer: P) -> Vec<Effect<P>> {
        if self.phase != Phase::Bidding
            || self.declined.contains(&peer)
            || self.bid_of(&peer).is_some()
            || self.declined.len() >= self.limits.bids_per_task_max
        {
            return Vec::new();
        }
        self.declined.push(peer);
        if self.window_done() {
            return self.close_bidding(self.round);
        }
        Vec::new()
    }

    /// A bid arrived. Once enough are in ([`originator::bid_window_done`]) the window
    /// closes early: the effects are those of [`OriginTask::close_bidding`].
    pub fn bid(&mut self, peer: P, offer: BidOffer) -> Result<Vec<Effect<P>>, BidRefused> {
        if self.bid_of(&peer).is_some() {
            return Err(BidRefused::Duplicate);
        }
        match self.phase {
            Phase::Bidding => {}
            Phase::Bundling => return Err(BidRefused::NotBidding),
            // A bid of this round that came after its window (it closed early, or the
            // bid was slow): it holds a slot at the bidder for nothing.
            _ => return Err(BidRefused::Late),
        }
        if self.bids.len() >= self.limits.bids_per_task_max {
            return Err(BidRefused::TooMany);
        }
        if super::check_bid_price(offer.price, self.limits.min_task_reward).is_err() {
            return Err(BidRefused::BelowMinimum);
        }
        self.bids.push((peer, offer));
        if self.window_done() {
            return Ok(self.close_bidding(self.round));
        }
        Ok(Vec::new())
    }

    /// The bid window of `round` closed.
    pub fn close_bidding(&mut self, round: u32) -> Vec<Effect<P>> {
        if self.phase != Phase::Bidding || round != self.round {
            return Vec::new();
        }
        self.phase = Phase::Judging;
        vec![Effect::JudgeBids {
            round,
            bids: self.bids.clone(),
        }]
    }

    /// The bids of `round` that passed the checks, best first.
    pub fn judged(&mut self, round: u32, ranked: Vec<P>, now: DateTime<Utc>) -> Vec<Effect<P>> {
        if self.phase != Phase::Judging || round != self.round {
            return Vec::new();
        }
        if ranked.is_empty() && self.direct.is_some() {
            // The executor whose offer matched refused or stayed silent: its offer was
            // stale. Ask the mesh now, as if no offer had been known.
            return self.open_round();
        }
        if ranked.is_empty() {
            // Free slots come back as runs finish and reservations lapse: offer again a
            // few times (`bid_rounds_max` rounds in all) before giving up.
            self.empty_rounds += 1;
            if self.empty_rounds < self.limits.bid_rounds_max {
                self.phase = Phase::Bidding;
                return vec![Effect::OfferAgainAfter {
                    round,
                    after: self.limits.bid_window,
                }];
            }
            return self.fail(format!("no node bid after {} round(s)", self.empty_rounds));
        }
        self.ranked = ranked.into();
        self.next(now)
    }

    /// The pause after an empty round is over.
    pub fn offer_again(&mut self, round: u32) -> Vec<Effect<P>> {
        if self.phase != Phase::Bidding || round != self.round {
            return Vec::new();
        }
        self.open_round()
    }

    /// Assign the next bid, offer again, or give up.
    fn next(&mut self, now: DateTime<Utc>) -> Vec<Effect<P>> {
        let bids = &self.bids;
        let step = originator::next_step(
            &mut self.ranked,
            |peer| {
                bids.iter()
                    .find(|(p, _)| p == peer)
                    .map(|(_, b)| b.valid_until)
            },
            self.tries,
            self.limits.reassignments_max,
            now,
        );
        match step {
            NextStep::Assign(peer) => {
                let Some(price) = self.bid_of(&peer).map(|b| b.price) else {
                    return self.fail("a ranked bid vanished".into());
                };
                self.tries.attempts += 1;
                self.via_offer = self.direct.is_some();
                self.phase = Phase::Escrowing;
                let escrow_id = Uuid::new_v4();
                self.escrowing = Some((peer, escrow_id));
                vec![Effect::HoldAndSeal {
                    peer,
                    price,
                    escrow_id,
                }]
            }
            NextStep::OfferAgain { .. } => {
                // Every bid left had run out (the executor before them was slow to fail).
                self.tries.reoffers += 1;
                self.open_round()
            }
            NextStep::GiveUp
                if self.direct.is_some()
                    && self.tries.attempts <= self.limits.reassignments_max =>
            {
                // The one executor asked through its offer did not deliver: a direct round
                // had no other bids to fall back on, so ask the mesh.
                self.open_round()
            }
            NextStep::GiveUp => {
                let reason = match &self.last_failure {
                    Some(last) => {
                        format!(
                            "gave up after {} attempt(s); last: {last}",
                            self.tries.attempts
                        )
                    }
                    None => "no bidder left".to_string(),
                };
                self.fail(reason)
            }
        }
    }

    fn escrowing_matches(&self, escrow_id: Uuid) -> bool {
        self.phase == Phase::Escrowing && self.escrowing.is_some_and(|(_, id)| id == escrow_id)
    }

    /// The escrow could not be held (nothing is held): another bid may be one this node
    /// can afford, so move on rather than fail.
    pub fn escrow_failed(
        &mut self,
        escrow_id: Uuid,
        reason: String,
        now: DateTime<Utc>,
    ) -> Vec<Effect<P>> {
        if !self.escrowing_matches(escrow_id) {
            return Vec::new();
        }
        self.escrowing = None;
        self.last_failure = Some(reason);
        self.next(now)
    }

    /// The escrow is held but the task could not be sealed or sent to the bidder: refund
    /// it, then as [`OriginTask::escrow_failed`].
    pub fn prepare_failed(
        &mut self,
        escrow_id: Uuid,
        reason: String,
        now: DateTime<Utc>,
    ) -> Vec<Effect<P>> {
        let mut effects = vec![Effect::Refund { escrow_id }];
        effects.extend(self.escrow_failed(escrow_id, reason, now));
        effects
    }

    /// Escrow held and task sealed: record the assignment, then send it (in this order,
    /// so that an immediate refusal finds the assignment).
    pub fn prepared(&mut self, escrow_id: Uuid, now: Instant) -> Vec<Effect<P>> {
        if !self.escrowing_matches(escrow_id) {
            // Cancelled meanwhile: give the escrow back.
            return vec![Effect::Refund { escrow_id }];
        }
        let Some((peer, _)) = self.escrowing.take() else {
            return Vec::new();
        };
        let Some(bid) = self.bid_of(&peer).cloned() else {
            return vec![Effect::Refund { escrow_id }];
        };
        self.assignment = Some(Assignment {
            peer,
            node_id: bid.node_id,
            price: bid.price,
            escrow_id,
            clock: AssignmentClock::new(now),
        });
        self.phase = Phase::Assigned;
        vec![Effect::SendAssignment { peer, escrow_id }]
    }

    fn is_current(&self, escrow_id: Uuid) -> bool {
        self.assignment
            .as_ref()
            .is_some_and(|a| a.escrow_id == escrow_id)
    }

    /// The `TaskAssigned` was delivered (`Ok`) or not.
    pub fn assignment_sent(
        &mut self,
        escrow_id: Uuid,
        sent: Result<(), String>,
        now: DateTime<Utc>,
    ) -> Vec<Effect<P>> {
        match sent {
            Ok(()) => {
                let Some(winner) = self.assignment.as_ref().map(|a| a.peer) else {
                    return Vec::new();
                };
                if !self.is_current(escrow_id) {
                    return Vec::new();
                }
                // The other bidders hold a slot each for this task: give them back now.
                // Their bids are spent; a reassignment offers the task again.
                let mut peers = Vec::new();
                for (peer, bid) in self.bids.iter_mut().filter(|(p, _)| *p != winner) {
                    if bid.valid_until > now {
                        bid.valid_until = now;
                        peers.push(*peer);
                    }
                }
                if peers.is_empty() {
                    Vec::new()
                } else {
                    vec![Effect::WithdrawBids { peers }]
                }
            }
            Err(reason) if self.is_current(escrow_id) => self.move_on(None, reason, now),
            Err(_) => Vec::new(),
        }
    }

    /// A message from `peer` about this task: is it the assigned executor? If so, it
    /// counts as a heartbeat.
    pub fn heard_from(&mut self, peer: P, now: Instant) -> bool {
        match &mut self.assignment {
            Some(assignment) if assignment.peer == peer => {
                assignment.clock.heard(now);
                true
            }
            _ => false,
        }
    }

    /// The executor started (its Noise session is up): send it the repository.
    pub fn started(&mut self) -> Vec<Effect<P>> {
        match (&self.assignment, self.phase) {
            (Some(assignment), Phase::Assigned) => {
                self.phase = Phase::Running;
                vec![Effect::SendBundle {
                    peer: assignment.peer,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// A result arrived that decrypts and whose signature verifies: check it.
    pub fn result_arrived(&mut self) -> Vec<Effect<P>> {
        match (&self.assignment, self.phase) {
            (Some(assignment), Phase::Assigned | Phase::Running) => {
                self.phase = Phase::Verifying;
                vec![Effect::Verify {
                    escrow_id: assignment.escrow_id,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// The result checked out: pay.
    pub fn verified(&mut self, escrow_id: Uuid) -> Vec<Effect<P>> {
        if self.phase != Phase::Verifying || !self.is_current(escrow_id) {
            return Vec::new();
        }
        let Some(assignment) = self.assignment.take() else {
            return Vec::new();
        };
        self.phase = Phase::Settling;
        vec![Effect::Release {
            peer: assignment.peer,
            price: assignment.price,
            escrow_id,
        }]
    }

    /// The executor was paid.
    pub fn released(&mut self, price: Vibe) -> Vec<Effect<P>> {
        if self.phase != Phase::Settling {
            return Vec::new();
        }
        self.phase = Phase::Completed;
        vec![Effect::Completed { price }]
    }

    /// The release failed: the task fails (the escrow stays for the ledger to sort out).
    pub fn release_failed(&mut self, reason: String) -> Vec<Effect<P>> {
        if self.phase != Phase::Settling {
            return Vec::new();
        }
        self.fail(format!("escrow release failed: {reason}"))
    }

    /// The assigned executor is done with it without a good result: a bad or unverifiable
    /// result (`BadResult`), a failed run (`Failed`), a broken transfer, or a refusal
    /// before anything ran (`None`: its reputation is not at stake). Refund and move on.
    pub fn executor_gave_up(
        &mut self,
        outcome: Option<Outcome>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Vec<Effect<P>> {
        if self.phase.is_final() {
            return Vec::new();
        }
        self.move_on(outcome, reason, now)
    }

    /// Time passes: an assignment silent past the heartbeat timeout or past its deadline
    /// is over.
    pub fn tick(&mut self, now: Instant, wall: DateTime<Utc>) -> Vec<Effect<P>> {
        if self.phase.is_final() || self.phase == Phase::Settling {
            return Vec::new();
        }
        let overdue = self.assignment.as_ref().and_then(|a| {
            a.clock
                .overdue(now, self.limits.heartbeat_timeout, self.limits.run_deadline)
        });
        match overdue {
            Some(overdue) => self.move_on(Some(Outcome::TimedOut), overdue.to_string(), wall),
            None => Vec::new(),
        }
    }

    /// The user cancelled: refund a held escrow and tell the executor.
    pub fn cancel(&mut self) -> Vec<Effect<P>> {
        if self.phase.is_final() {
            return Vec::new();
        }
        self.phase = Phase::Cancelled;
        self.escrowing = None;
        match self.assignment.take() {
            Some(assignment) => vec![
                Effect::Refund {
                    escrow_id: assignment.escrow_id,
                },
                Effect::CancelAssignment {
                    peer: assignment.peer,
                    reason: "cancelled by the user".into(),
                },
            ],
            None => Vec::new(),
        }
    }

    /// Fail for good, with a reason a user can read. A live assignment is refunded and its
    /// executor told.
    pub fn fail(&mut self, reason: String) -> Vec<Effect<P>> {
        if self.phase.is_final() {
            return Vec::new();
        }
        self.phase = Phase::Failed;
        self.escrowing = None;
        let mut effects = Vec::new();
        if let Some(assignment) = self.assignment.take() {
            effects.push(Effect::Refund {
                escrow_id: assignment.escrow_id,
            });
            effects.push(Effect::CancelAssignment {
                peer: assignment.peer,
                reason: reason.clone(),
            });
        }
        effects.push(Effect::Failed { reason });
        effects
    }

    /// Refund, record `outcome`, tell the executor, try the next bid.
    fn move_on(
        &mut self,
        outcome: Option<Outcome>,
        reason: String,
        now: DateTime<Utc>,
    ) -> Vec<Effect<P>> {
        let Some(assignment) = self.assignment.take() else {
            return Vec::new();
        };
        let mut effects = vec![Effect::Refund {
            escrow_id: assignment.escrow_id,
        }];
        if let Some(outcome) = outcome {
            effects.push(Effect::RecordOutcome {
                peer: assignment.peer,
                outcome,
            });
        }
        effects.push(Effect::CancelAssignment {
            peer: assignment.peer,
            reason: reason.clone(),
        });
        self.last_failure = Some(format!("{}: {reason}", assignment.node_id));
        effects.push(Effect::Reassigning { reason });
        effects.extend(self.next(now));
        effects
    }
}

#[cfg(test)]
mod tests;
