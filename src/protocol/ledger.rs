//! Ledger messages to the settlement engine: balance and history queries, escrow (hold,
//! release, refund), peer payments and batches, incoming payments and receipts, outcomes
//! and reputation, the task journal.

use actix::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use super::mesh::Inbound;
use crate::identity::PUBLIC_KEY_BYTES;
use crate::ledger::{
    HistoryQuery, JournaledTask, LedgerError, Outcome, PendingPayment, TransferRecord,
};
use crate::messages::{TransactionReason, Vibe, VibeTransaction};

/// This node's balance and what it has in escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BalanceSummary {
    pub balance: Vibe,
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
    pub transfer_id: Uuid,
    pub task_id: Uuid,
    pub amount: Vibe,
}

/// Pay escrow `task_id` to `payee` and return the signed transaction to send it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<VibeTransaction, LedgerError>")]
pub struct ReleaseEscrow {
    pub task_id: Uuid,
    pub payee: [u8; PUBLIC_KEY_BYTES],
    pub amount: Vibe,
}

/// Pay a peer directly (bandwidth shared with this node) and return the signed transaction.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<VibeTransaction, LedgerError>")]
pub struct PayPeer {
    pub transfer_id: Uuid,
    pub payee: [u8; PUBLIC_KEY_BYTES],
    pub amount: Vibe,
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
    pub task_id: Uuid,
}

/// Count what a peer did with a task.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordOutcome {
    pub peer: [u8; PUBLIC_KEY_BYTES],
    pub outcome: Outcome,
}

/// A peer's reputation in [0, 1].
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<f64, LedgerError>")]
pub struct GetReputation {
    pub peer: [u8; PUBLIC_KEY_BYTES],
}

/// This node admitted a task of `peer`'s: accept its payments from now on (see
/// `Ledger::record_counterparty`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RecordCounterparty {
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
    pub limit: usize,
}

/// The payee `payee` sent a receipt for payment `tx_id`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool, LedgerError>")]
pub struct ConfirmDelivery {
    pub tx_id: Uuid,
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
    pub id: Uuid,
    pub open: bool,
    pub view: String,
}

/// Read task `0` from the journal.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<JournaledTask>, LedgerError>")]
pub struct LookupTask(pub Uuid);
