//! The state machine's vocabulary: the phases of a task, the bids it keeps, why a bid is
//! refused, the assignment in progress, the effects the distributor carries out and the
//! market settings a task follows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::ledger::rules::Outcome;
use crate::market::originator::AssignmentClock;
use crate::messages::Vibe;

/// Where the task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The repository is being read (its identity, the root commit) before the request
    /// goes out; the bundle itself is written once the executor says what it has.
    Bundling,
    /// The request is out (or about to go out again); bids are collected.
    Bidding,
    /// The window closed; the bids are being checked and ranked.
    Judging,
    /// The escrow for the chosen bid is being held and the task sealed to the bidder.
    Escrowing,
    /// `TaskAssigned` is sent; waiting for `ExecutionStarted`.
    Assigned,
    /// The executor runs it.
    Running,
    /// A result arrived and is being checked (apply, verify command).
    Verifying,
    /// The escrow is being released to the executor.
    Settling,
    /// The result verified and the executor was paid.
    Completed,
    /// Given up for good; the reason went out in [`Effect::Failed`].
    Failed,
    /// The user cancelled the task.
    Cancelled,
}

impl Phase {
    /// True once nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Cancelled)
    }
}

/// A bid as the originator keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BidOffer {
    /// The bidder's node id (the bid's signer), as text.
    pub node_id: String,
    /// What the bidder asks for running the task.
    pub price: Vibe,
    /// The bidder's estimate of the run's wall-clock time, in seconds.
    pub estimated_duration_s: u64,
    /// The bidder's reservation ends here; an assignment after it is refused.
    pub valid_until: DateTime<Utc>,
    /// Slots the bidder had free once this bid's was reserved, if its bid said.
    pub free_slots: Option<u32>,
}

/// Why a bid takes no place among the bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BidRefused {
    /// The bid came before the task was offered.
    #[error("the task is not taking bids")]
    NotBidding,
    /// The bid came after the window closed, from a bidder without a bid among this
    /// round's: the distributor withdraws it (`TaskCancelled`), so its slot comes back.
    #[error("the bid window is closed")]
    Late,
    /// This peer already has a bid in the current round.
    #[error("this bidder already bid in this round")]
    Duplicate,
    /// The round already holds `bids_per_task_max` bids.
    #[error("the task has its limit of bids")]
    TooMany,
    /// The price is zero or below `min_task_reward` (free work would win every task).
    #[error("the price is zero or below this node's minimum")]
    BelowMinimum,
}

/// The assignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<P> {
    /// The executor, as the transport addresses it.
    pub peer: P,
    /// The executor's node id, from its bid; names it in failure reasons.
    pub node_id: String,
    /// The price of its bid, the amount held in escrow.
    pub price: Vibe,
    /// The escrow holding the price; it also names this assignment in later events.
    pub escrow_id: Uuid,
    /// When the task was assigned and when the executor was last heard from.
    pub clock: AssignmentClock,
}

/// What the distributor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<P> {
    /// Send the request of bid round `round` to the mesh.
    Offer {
        /// The round this request opens (the first is 1).
        round: u32,
    },
    /// Send the request of bid round `round` to `peer` alone (its live offer matched), then
    /// `offered(round, …)`.
    OfferTo {
        /// The round this request opens.
        round: u32,
        /// The executor whose offer matched.
        peer: P,
    },
    /// Deliver `close_bidding(round)` after `after`.
    CloseBiddingAfter {
        /// The round whose window this closes.
        round: u32,
        /// How long the window stays open.
        after: Duration,
    },
    /// Deliver `offer_again(round)` after `after` (nobody bid; slots free up over time).
    OfferAgainAfter {
        /// The round that got no bid.
        round: u32,
        /// How long to wait before the next round (one bid window).
        after: Duration,
    },
    /// Check and rank these bids (needs the peer table and reputations), then `judged`.
    JudgeBids {
        /// The round the bids came in.
        round: u32,
        /// Every bid collected in the round, with the peer it came from.
        bids: Vec<(P, BidOffer)>,
    },
    /// Hold `price` in escrow under `escrow_id` and seal the task to `peer`, then
    /// `prepared` / `escrow_failed` / `prepare_failed`.
    HoldAndSeal {
        /// The chosen bidder.
        peer: P,
        /// Its bid price, the amount to hold.
        price: Vibe,
        /// A fresh id for the escrow; it names this assignment from here on.
        escrow_id: Uuid,
    },
    /// Send the sealed `TaskAssigned`, then `assignment_sent`.
    SendAssignment {
        /// The executor to send it to.
        peer: P,
        /// The assignment's escrow, to match the answer against.
        escrow_id: Uuid,
    },
    /// Tell losing bidders their bids are spent (`TaskCancelled`), freeing their slots.
    WithdrawBids {
        /// The losing bidders whose bids had not run out yet.
        peers: Vec<P>,
    },
    /// Send the repository to the executor.
    SendBundle {
        /// The executor.
        peer: P,
    },
    /// Check the result, then `verified` / `result_rejected`.
    Verify {
        /// The escrow of the assignment whose result this is.
        escrow_id: Uuid,
    },
    /// Pay the executor from escrow, then `released` / `release_failed`.
    Release {
        /// The executor to pay.
        peer: P,
        /// The price of its bid.
        price: Vibe,
        /// The escrow to release.
        escrow_id: Uuid,
    },
    /// Give the escrow back to this node: the assignment ended without a verified result, or
    /// the task was cancelled or failed while it was held.
    Refund {
        /// The escrow to refund.
        escrow_id: Uuid,
    },
    /// Count what the executor did with the task towards its reputation.
    RecordOutcome {
        /// The executor.
        peer: P,
        /// What it did: failed, timed out, or returned a bad result.
        outcome: Outcome,
    },
    /// Tell the executor its assignment is over.
    CancelAssignment {
        /// The executor.
        peer: P,
        /// Why, in words a user can read; sent along with the cancellation.
        reason: String,
    },
    /// The task moves on from an executor (for the log stream).
    Reassigning {
        /// Why the last executor did not deliver.
        reason: String,
    },
    /// The task failed for good.
    Failed {
        /// Why, in words a user can read.
        reason: String,
    },
    /// The task is done and paid.
    Completed {
        /// What the executor was paid.
        price: Vibe,
    },
}

/// The market settings a task follows.
#[derive(Debug, Clone, Copy)]
pub struct OriginLimits {
    /// How long a bid round collects bids; also the pause after an empty round.
    pub bid_window: Duration,
    /// Bid rounds that may end with no bid before the task fails.
    pub bid_rounds_max: u32,
    /// Times the task may move on to another bidder before it fails.
    pub reassignments_max: u32,
    /// Bids one round accepts; later ones are refused.
    pub bids_per_task_max: usize,
    /// Bids from distinct bidders that close a window early (`market.bids_enough`).
    pub bids_enough: usize,
    /// The lowest price a bid may ask (`economics.min_task_reward`).
    pub min_task_reward: Vibe,
    /// Silence from the executor for longer than this ends its assignment.
    pub heartbeat_timeout: Duration,
    /// `market::assignment_deadline_s` for this task.
    pub run_deadline: Duration,
}
