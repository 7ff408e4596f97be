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
    /// The repository bundle is being written.
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
    Completed,
    Failed,
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
    pub node_id: String,
    pub price: Vibe,
    pub estimated_duration_s: u64,
    /// The bidder's reservation ends here; an assignment after it is refused.
    pub valid_until: DateTime<Utc>,
}

/// Why a bid takes no place among the bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BidRefused {
    #[error("the task is not taking bids")]
    NotBidding,
    #[error("this bidder already bid in this round")]
    Duplicate,
    #[error("the task has its limit of bids")]
    TooMany,
    #[error("the price is zero or below this node's minimum")]
    BelowMinimum,
}

/// The assignment in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<P> {
    pub peer: P,
    pub node_id: String,
    pub price: Vibe,
    pub escrow_id: Uuid,
    pub clock: AssignmentClock,
}

/// What the distributor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect<P> {
    /// Send the request of bid round `round` to the mesh.
    Offer {
        round: u32,
    },
    /// Deliver `close_bidding(round)` after `after`.
    CloseBiddingAfter {
        round: u32,
        after: Duration,
    },
    /// Deliver `offer_again(round)` after `after` (nobody bid; slots free up over time).
    OfferAgainAfter {
        round: u32,
        after: Duration,
    },
    /// Check and rank these bids (needs the peer table and reputations), then `judged`.
    JudgeBids {
        round: u32,
        bids: Vec<(P, BidOffer)>,
    },
    /// Hold `price` in escrow under `escrow_id` and seal the task to `peer`, then
    /// `prepared` / `escrow_failed` / `prepare_failed`.
    HoldAndSeal {
        peer: P,
        price: Vibe,
        escrow_id: Uuid,
    },
    /// Send the sealed `TaskAssigned`, then `assignment_sent`.
    SendAssignment {
        peer: P,
        escrow_id: Uuid,
    },
    /// Tell losing bidders their bids are spent (`TaskCancelled`), freeing their slots.
    WithdrawBids {
        peers: Vec<P>,
    },
    /// Send the repository to the executor.
    SendBundle {
        peer: P,
    },
    /// Check the result, then `verified` / `result_rejected`.
    Verify {
        escrow_id: Uuid,
    },
    /// Pay the executor from escrow, then `released` / `release_failed`.
    Release {
        peer: P,
        price: Vibe,
        escrow_id: Uuid,
    },
    Refund {
        escrow_id: Uuid,
    },
    RecordOutcome {
        peer: P,
        outcome: Outcome,
    },
    /// Tell the executor its assignment is over.
    CancelAssignment {
        peer: P,
        reason: String,
    },
    /// The task moves on from an executor (for the log stream).
    Reassigning {
        reason: String,
    },
    /// The task failed for good.
    Failed {
        reason: String,
    },
    /// The task is done and paid.
    Completed {
        price: Vibe,
    },
}

/// The market settings a task follows.
#[derive(Debug, Clone, Copy)]
pub struct OriginLimits {
    pub bid_window: Duration,
    pub bid_rounds_max: u32,
    pub reassignments_max: u32,
    pub bids_per_task_max: usize,
    pub min_task_reward: Vibe,
    pub heartbeat_timeout: Duration,
    /// `market::assignment_deadline_s` for this task.
    pub run_deadline: Duration,
}
