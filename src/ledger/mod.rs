//! The node's double-entry ledger in SQLite (WAL, `synchronous=FULL`). No actix here: plain
//! functions over a `rusqlite::Connection`, run by the `SettlementEngine` actor.
//!
//! Accounts: `node:<hex key>` (this node's own account, and mirrors of remote nodes),
//! `escrow:<id>` (a held payment), `mint` (the source of explicit grants such as
//! `economics.initial_balance`). Each node keeps its own ledger: a remote node's mirror is
//! credited when this node pays it and debited when it pays this node, so mirrors and the
//! mint may go negative; this node's own account and escrows never do.
//!
//! Invariants, checked after every write in debug builds: the sum over all accounts is zero
//! (the mint balances every grant), no own or escrow balance is negative. Every movement is a
//! transfer with a unique id, applied in one SQLite transaction: the same id with the same
//! content is a no-op, with other content an error. A payment from a peer is stored under an
//! id derived from the payer's key and its `tx_id` (`rules::incoming_transfer_id`), never
//! under the `tx_id` itself: a peer cannot take an id this node needs for its own escrow
//! release or refund. Payments are accepted only from counterparties (peers whose task this
//! node's executor admitted, kept in the `counterparties` table) and never past `i64::MAX`
//! on any balance. Rules are pure functions in `rules`.
//!
//! Here: the types and account names. Opening and migrating is in `schema`, reading in
//! `queries`, every write of money in `transfers`, counterparties and reputation in `peers`,
//! the `apn ledger` report in `report`.

pub mod audit;
mod journal;
mod outbox;
mod peers;
mod queries;
mod report;
pub mod rules;
mod schema;
mod transfers;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;
use uuid::Uuid;

use crate::messages::{TransactionReason, Vibe};
pub use journal::{JournaledTask, Recovery};
pub use outbox::PendingPayment;
pub use report::{LedgerReport, report};
pub use rules::{EscrowState, Outcome, ReputationCounts};

/// The ledger file in the data dir.
pub const LEDGER_FILE: &str = "ledger.sqlite3";
/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = 3;
/// Most rows a history query returns.
pub const HISTORY_LIMIT_MAX: usize = 1000;
/// The mint account.
pub const MINT: &str = "mint";

/// A ledger operation failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    #[error("the disk holding the ledger is full; nothing was written: free space and retry")]
    DiskFull,
    #[error(
        "the ledger has schema version {found}, this build supports up to {supported}: upgrade the node"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("overdraft: {account} has {available} VIBE, {needed} needed")]
    Overdraft {
        account: String,
        needed: Vibe,
        available: Vibe,
    },
    #[error("transfer {0} exists with different content")]
    TransferConflict(Uuid),
    #[error("no escrow {0}")]
    NoEscrow(Uuid),
    #[error("escrow {id} is already {state:?}")]
    EscrowSettled { id: Uuid, state: EscrowState },
    #[error("the transaction's signature does not verify")]
    Forged,
    #[error("the transaction does not name this node as payee")]
    NotPayee,
    #[error("the payer has no task or bandwidth relationship with this node")]
    Unsolicited,
    #[error("crediting {amount} VIBE to {account} would overflow its balance")]
    Overflow { account: String, amount: Vibe },
    #[error("amount must be above zero")]
    ZeroAmount,
    #[error("ledger invariant broken: {0}")]
    Invariant(String),
    #[error("no ledger at {0}: has a node run with this data dir?")]
    NotFound(String),
    #[error("cannot read the node's identity: {0}")]
    Identity(String),
    #[error("a stored payment cannot be encoded or decoded: {0}")]
    Encoding(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(error: rusqlite::Error) -> Self {
        // SQLite rolls the transaction back on SQLITE_FULL; say so instead of a bare code.
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => LedgerError::DiskFull,
            _ => LedgerError::Sqlite(error),
        }
    }
}

/// The account name of a node key.
pub fn node_account(key: &[u8]) -> String {
    format!("node:{}", hex::encode(key))
}

/// The account name of an escrow.
pub fn escrow_account(id: &Uuid) -> String {
    format!("escrow:{id}")
}

/// One operation of a batch.
#[derive(Debug, Clone)]
pub enum LedgerOp {
    Mint { id: Uuid, amount: Vibe },
    Hold { escrow: Uuid, amount: Vibe },
    Release { escrow: Uuid, payee: [u8; 32] },
    Refund { escrow: Uuid },
}

/// One transfer as history shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferRecord {
    pub id: Uuid,
    pub from: String,
    pub to: String,
    pub amount: Vibe,
    /// mint, hold, release, refund, incoming.
    pub kind: String,
    pub task_id: Option<Uuid>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Filters for [`Ledger::history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub since: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    /// An account involved on either side (e.g. `node:<hex>`).
    pub account: Option<String>,
    pub task_id: Option<Uuid>,
    pub reason: Option<String>,
    pub limit: usize,
}

/// The ledger of one node.
pub struct Ledger {
    connection: Connection,
    own: String,
}

fn reason_name(reason: TransactionReason) -> &'static str {
    match reason {
        TransactionReason::TaskExecution => "TaskExecution",
        TransactionReason::BandwidthShare => "BandwidthShare",
        TransactionReason::Relay => "Relay",
    }
}

struct NewTransfer<'a> {
    id: Uuid,
    from: &'a str,
    to: &'a str,
    amount: Vibe,
    kind: &'a str,
    task_id: Option<Uuid>,
    reason: Option<&'a str>,
}
