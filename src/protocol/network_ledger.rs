//! Messages to the network settler (settlement mode `jetstream`) that the local ledger has
//! no counterpart for: the executor's check of the originator's escrow before a run, and its
//! commit to the result before delivering it, and the account report of `/api/ledger`.

use actix::prelude::*;
use uuid::Uuid;

use crate::ledger::LedgerError;
use crate::messages::Vibe;
use crate::network_ledger::projection::{ProjectionError, ProjectionReport};
use crate::network_ledger::rules::HoldRefusal;

/// Wait (up to `settlement.hold_wait_ms`) for escrow `hold` to reach this node's projection
/// and check it pays this node at least `price` until at least `run_ends_ms` (stream time).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), HoldRefusal>")]
pub struct CheckHold {
    /// The escrow named by the assignment.
    pub hold: Uuid,
    /// The agreed price.
    pub price: Vibe,
    /// When a run started now must have committed its result, milliseconds since the epoch.
    pub run_ends_ms: i64,
}

/// Commit to the hash of the result about to be delivered for escrow `hold`: with it, the
/// payee can claim the escrow after the deadline if the payer neither releases nor disputes.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct CommitResult {
    /// The escrow the run was paid from.
    pub hold: Uuid,
    /// SHA-256 of the sealed result.
    pub result_hash: [u8; 32],
}

/// This node's account as its projection sees it: balance, escrows, history (newest first,
/// before stream sequence `before`, at most `limit` rows).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<ProjectionReport, ProjectionError>")]
pub struct GetLedgerReport {
    /// Only history rows below this stream sequence (paging).
    pub before: Option<u64>,
    /// Most history rows.
    pub limit: usize,
}
