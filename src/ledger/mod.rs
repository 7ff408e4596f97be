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
//! transfer with a unique id, applied in one SQLite transaction (or, through
//! [`Ledger::write_group`], in one savepoint of a transaction shared with other writes): the same id with the same
//! content is a no-op, with other content an error. A payment from a peer is stored under an
//! id derived from the payer's key and its `tx_id` (`rules::incoming_transfer_id`), never
//! under the `tx_id` itself: a peer cannot take an id this node needs for its own escrow
//! release or refund. Payments are accepted only from counterparties (peers whose task this
//! node's executor admitted, kept in the `counterparties` table) and never past `i64::MAX`
//! on any balance. Rules are pure functions in `rules`.
//!
//! Here: the types and account names. Opening and migrating is in `schema`, reading in
//! `queries`, every write of money in `transfers`, counterparties and reputation in `peers`,
//! the `apn ledger` report in `report`, group commit (many writes, one
//! transaction and one fsync, each write in its own savepoint) in `group`.

pub mod audit;
mod group;
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
pub use group::{GroupWriter, WriteStats};
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
    /// SQLite reported an error other than a full disk; the transaction was rolled back.
    #[error("database: {0}")]
    Sqlite(rusqlite::Error),
    /// SQLITE_FULL: the write was rolled back; retrying after freeing space is safe.
    #[error("the disk holding the ledger is full; nothing was written: free space and retry")]
    DiskFull,
    #[error(
        "the ledger has schema version {found}, this build supports up to {supported}: upgrade the node"
    )]
    /// The file was written by a newer build; it is left untouched rather than downgraded.
    SchemaTooNew {
        /// Schema version stored in the file.
        found: i64,
        /// Highest version this build understands ([`SCHEMA_VERSION`]).
        supported: i64,
    },
    /// A debit would take this node's own account or an escrow below zero.
    #[error("overdraft: {account} has {available} VIBE, {needed} needed")]
    Overdraft {
        /// The account that would go negative (`node:<hex>` or `escrow:<id>`).
        account: String,
        /// Amount the debit asked for.
        needed: Vibe,
        /// Balance the account holds now.
        available: Vibe,
    },
    /// The id was already used by a transfer with other accounts, amount or kind.
    #[error("transfer {0} exists with different content")]
    TransferConflict(Uuid),
    /// No escrow was ever held under this id.
    #[error("no escrow {0}")]
    NoEscrow(Uuid),
    /// The escrow was released or refunded before; money leaves an escrow only once.
    #[error("escrow {id} is already {state:?}")]
    EscrowSettled {
        /// The escrow (its task attempt's id).
        id: Uuid,
        /// The final state it reached first.
        state: EscrowState,
    },
    /// A peer's `VibeTransaction` signature does not match its payer's key.
    #[error("the transaction's signature does not verify")]
    Forged,
    /// A peer's `VibeTransaction` pays some other node; it is not credited here.
    #[error("the transaction does not name this node as payee")]
    NotPayee,
    /// The payer is not a counterparty (no admitted task or bandwidth with this node).
    #[error("the payer has no task or bandwidth relationship with this node")]
    Unsolicited,
    /// A credit would take a balance past `i64::MAX` micro-VIBE.
    #[error("crediting {amount} VIBE to {account} would overflow its balance")]
    Overflow {
        /// The account that would overflow.
        account: String,
        /// The credit that was refused.
        amount: Vibe,
    },
    /// Transfers of zero are refused: they would only add rows.
    #[error("amount must be above zero")]
    ZeroAmount,
    /// A consistency check failed (non-zero sum, negative own or escrow balance): a bug.
    #[error("ledger invariant broken: {0}")]
    Invariant(String),
    /// No ledger file at this path (read-only tools such as `apn ledger` never create one).
    #[error("no ledger at {0}: has a node run with this data dir?")]
    NotFound(String),
    /// The data dir's identity key is missing or unreadable, so the own account is unknown.
    #[error("cannot read the node's identity: {0}")]
    Identity(String),
    /// An outbox payment failed to (de)serialize, or a payment envelope holds no
    /// `VibeTransaction`.
    #[error("a stored payment cannot be encoded or decoded: {0}")]
    Encoding(String),
    /// The network ledger (settlement mode `jetstream`) refused or could not take the entry.
    #[error("network ledger: {0}")]
    Network(String),
    /// The settlement engine stopped before it committed and answered the write; it may or
    /// may not be on disk (look it up by its id before retrying).
    #[error("the settlement engine stopped before answering; the write may not be committed")]
    Stopped,
}

impl LedgerError {
    /// A copy of this error for each caller of a group that failed as a whole (see
    /// [`Ledger::write_group`]). SQLite errors other than `SqliteFailure` carry no code to
    /// copy; they become a generic `SqliteFailure` with the same message.
    pub fn duplicate(&self) -> LedgerError {
        use rusqlite::{Error as Sql, ffi};
        match self {
            LedgerError::Sqlite(Sql::SqliteFailure(code, message)) => {
                LedgerError::Sqlite(Sql::SqliteFailure(*code, message.clone()))
            }
            LedgerError::Sqlite(other) => LedgerError::Sqlite(Sql::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some(other.to_string()),
            )),
            LedgerError::DiskFull => LedgerError::DiskFull,
            LedgerError::SchemaTooNew { found, supported } => LedgerError::SchemaTooNew {
                found: *found,
                supported: *supported,
            },
            LedgerError::Overdraft {
                account,
                needed,
                available,
            } => LedgerError::Overdraft {
                account: account.clone(),
                needed: *needed,
                available: *available,
            },
            LedgerError::TransferConflict(id) => LedgerError::TransferConflict(*id),
            LedgerError::NoEscrow(id) => LedgerError::NoEscrow(*id),
            LedgerError::EscrowSettled { id, state } => LedgerError::EscrowSettled {
                id: *id,
                state: *state,
            },
            LedgerError::Forged => LedgerError::Forged,
            LedgerError::NotPayee => LedgerError::NotPayee,
            LedgerError::Unsolicited => LedgerError::Unsolicited,
            LedgerError::Overflow { account, amount } => LedgerError::Overflow {
                account: account.clone(),
                amount: *amount,
            },
            LedgerError::ZeroAmount => LedgerError::ZeroAmount,
            LedgerError::Invariant(text) => LedgerError::Invariant(text.clone()),
            LedgerError::NotFound(text) => LedgerError::NotFound(text.clone()),
            LedgerError::Identity(text) => LedgerError::Identity(text.clone()),
            LedgerError::Encoding(text) => LedgerError::Encoding(text.clone()),
            LedgerError::Network(text) => LedgerError::Network(text.clone()),
            LedgerError::Stopped => LedgerError::Stopped,
        }
    }
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
    /// Credit this node's own account from the mint (e.g. `economics.initial_balance`).
    Mint {
        /// Transfer id; minting again under the same id is a no-op.
        id: Uuid,
        /// Amount granted.
        amount: Vibe,
    },
    /// Move money from this node's own account into a new escrow.
    Hold {
        /// The escrow's id (the task attempt it pays for).
        escrow: Uuid,
        /// Amount held; fails with `Overdraft` if the own balance is short.
        amount: Vibe,
    },
    /// Pay a held escrow out in full to the executor's mirror account.
    Release {
        /// The escrow to release.
        escrow: Uuid,
        /// Ed25519 public key of the node paid.
        payee: [u8; 32],
    },
    /// Return a held escrow in full to this node's own account.
    Refund {
        /// The escrow to refund.
        escrow: Uuid,
    },
}

/// One transfer as history shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferRecord {
    /// Unique transfer id (for a peer's payment, derived from payer key and `tx_id`).
    pub id: Uuid,
    /// Debited account (`node:<hex>`, `escrow:<id>` or `mint`).
    pub from: String,
    /// Credited account, same naming as `from`.
    pub to: String,
    /// Amount moved, always above zero.
    pub amount: Vibe,
    /// mint, hold, release, refund, incoming.
    pub kind: String,
    /// Task attempt the money was for; None for mints and bandwidth payments.
    pub task_id: Option<Uuid>,
    /// `TransactionReason` name (e.g. `TaskExecution`); None for escrow moves and mints.
    pub reason: Option<String>,
    /// When this ledger committed the transfer (this node's clock).
    pub created_at: DateTime<Utc>,
}

/// Filters for [`Ledger::history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only transfers created at or after this instant; None: no lower bound.
    pub since: Option<DateTime<Utc>>,
    /// Only transfers created strictly before this instant; None: no upper bound.
    pub before: Option<DateTime<Utc>>,
    /// An account involved on either side (e.g. `node:<hex>`).
    pub account: Option<String>,
    /// Only transfers for this task attempt; None: any.
    pub task_id: Option<Uuid>,
    /// Only transfers with this `TransactionReason` name; None: any.
    pub reason: Option<String>,
    /// Most rows returned, newest first; clamped to 1..=[`HISTORY_LIMIT_MAX`].
    pub limit: usize,
}

/// The ledger of one node.
pub struct Ledger {
    connection: Connection,
    own: String,
    stats: WriteStats,
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
