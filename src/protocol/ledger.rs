//! Ledger messages to the settlement engine: balance and history queries, escrow (hold,
//! release, refund), peer payments and batches, incoming payments and receipts, outcomes
//! and reputation, the task journal.

use actix::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::mesh::Inbound;
use crate::identity::PUBLIC_KEY_BYTES;
use crate::ledger::{
    HistoryQuery, JournaledTask, LedgerError, Outcome, PendingPayment, TransferRecord, WriteStats,
};
use crate::messages::{TransactionReason, Vibe, VibeTransaction};

/// This node's balance and what it has in escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalanceSummary {
    /// This node's own account balance (shown as 0 if the account is negative).
    pub balance: Vibe,
    /// VIBE held in escrows this node funded that are not settled yet.
    pub escrowed: Vibe,
}

/// Ask for the [`BalanceSummary`].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BalanceSummary, LedgerError>")]
pub struct GetBalance;

/// Transfers, newest first.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<TransferRecord>, LedgerError>")]
pub struct GetHistory(pub HistoryQuery);

/// Move `amount` from this node into escrow `task_id` (the escrow id). Overdraft is an error
/// and writes nothing.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct HoldEscrow {
    /// Recorded as the task id of the hold transfer (callers pass the escrow id).
    pub transfer_id: Uuid,
    /// The escrow id; also the hold transfer's id, so a retry holds nothing twice.
    pub task_id: Uuid,
    /// How much to move into escrow.
    pub amount: Vibe,
    /// The executor the escrow is for; the network ledger needs it, the local one ignores it.
    pub payee: Option<[u8; PUBLIC_KEY_BYTES]>,
    /// When the escrow may be claimed (on a commit) or refunded (without one) on the network
    /// ledger; the local ledger ignores it.
    pub deadline: chrono::DateTime<chrono::Utc>,
}

/// Pay escrow `task_id` to `payee` and return the signed transaction to send it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<VibeTransaction, LedgerError>")]
pub struct ReleaseEscrow {
    /// The escrow id; also the id of the payment sent to the payee.
    pub task_id: Uuid,
    /// The Ed25519 public key of the node paid.
    pub payee: [u8; PUBLIC_KEY_BYTES],
    /// The expected price; unused by the handler, which pays the amount held.
    pub amount: Vibe,
}

/// Pay a peer directly (bandwidth shared with this node) and return the signed transaction.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<VibeTransaction, LedgerError>")]
pub struct PayPeer {
    /// The payment's id; a retry with the same id returns the queued payment, paying once.
    pub transfer_id: Uuid,
    /// The Ed25519 public key of the node paid.
    pub payee: [u8; PUBLIC_KEY_BYTES],
    /// How much to pay.
    pub amount: Vibe,
    /// Why the payment is made, as written into the signed transaction.
    pub reason: TransactionReason,
}

/// Several ledger operations in one SQLite transaction, all or none.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct SettleBatch(pub Vec<crate::ledger::LedgerOp>);

/// Return escrow `task_id` to this node.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), LedgerError>")]
pub struct RefundEscrow {
    /// The escrow id.
    pub task_id: Uuid,
}

/// Count what a peer did with a task.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordOutcome {
    /// The peer's Ed25519 public key.
    pub peer: [u8; PUBLIC_KEY_BYTES],
    /// What the peer did; counted towards its reputation.
    pub outcome: Outcome,
}

/// A peer's reputation in [0, 1].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<f64, LedgerError>")]
pub struct GetReputation {
    /// The peer's Ed25519 public key.
    pub peer: [u8; PUBLIC_KEY_BYTES],
}

/// This node admitted a task of `peer`'s: accept its payments from now on (see
/// `Ledger::record_counterparty`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordCounterparty {
    /// The peer's Ed25519 public key.
    pub peer: [u8; PUBLIC_KEY_BYTES],
}

/// Record a payment to this node (also what `Inbound` does for `VibeTransaction`s).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, LedgerError>")]
pub struct RecordIncoming(pub VibeTransaction);

/// A payment another node delivered (its envelope, as verified). Credited once; a repeat
/// is `Ok(false)`, which still deserves a receipt.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, LedgerError>")]
pub struct AcceptPayment(pub Inbound);

/// Payments whose next delivery is due (see `ledger::outbox`), at most `limit`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Vec<PendingPayment>, LedgerError>")]
pub struct TakeDuePayments {
    /// The most payments to return.
    pub limit: usize,
}

/// The payee `payee` sent a receipt for payment `tx_id`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, LedgerError>")]
pub struct ConfirmDelivery {
    /// The payment's id.
    pub tx_id: Uuid,
    /// Public key of the receipt's signer; the payment leaves the outbox only if it is the payee.
    pub payee: Vec<u8>,
}

/// Payments still waiting for a receipt.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64, LedgerError>")]
pub struct UndeliveredPayments;

/// Write a task's view to the journal (`open` until final).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct JournalTask {
    /// The task's id.
    pub id: Uuid,
    /// True until the task reaches a final state.
    pub open: bool,
    /// The task's view, as JSON.
    pub view: String,
}

/// Read task `0` from the journal.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<JournaledTask>, LedgerError>")]
pub struct LookupTask(pub Uuid);

/// How many SQLite transactions the ledger committed and how many writes they carried
/// (group commit: far fewer commits than writes under concurrent load).
#[derive(Debug, Clone, Message)]
#[rtype(result = "WriteStats")]
pub struct GetWriteStats;
