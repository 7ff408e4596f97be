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

pub mod audit;
mod journal;
mod outbox;
pub mod rules;

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use uuid::Uuid;

use crate::messages::{TransactionReason, Vibe, VibeTransaction};
pub use journal::{JournaledTask, Recovery};
pub use outbox::PendingPayment;
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

impl Ledger {
    /// Open (or create) the ledger at `path` for the node with `own_key`.
    pub fn open(path: &Path, own_key: &[u8]) -> Result<Ledger, LedgerError> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a settlement that returned is on disk even if the machine loses power.
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ledger::with_connection(connection, own_key)
    }

    /// An in-memory ledger (tests, property checks).
    pub fn open_in_memory(own_key: &[u8]) -> Result<Ledger, LedgerError> {
        Ledger::with_connection(Connection::open_in_memory()?, own_key)
    }

    fn with_connection(connection: Connection, own_key: &[u8]) -> Result<Ledger, LedgerError> {
        let mut ledger = Ledger {
            connection,
            own: node_account(own_key),
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS accounts (
                     name TEXT PRIMARY KEY,
                     balance INTEGER NOT NULL DEFAULT 0
                 );
                 CREATE TABLE IF NOT EXISTS transfers (
                     id TEXT PRIMARY KEY,
                     from_account TEXT NOT NULL,
                     to_account TEXT NOT NULL,
                     amount INTEGER NOT NULL CHECK (amount > 0),
                     kind TEXT NOT NULL,
                     task_id TEXT,
                     reason TEXT,
                     created_at TEXT NOT NULL,
                     seq INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS transfers_by_seq ON transfers(seq);
                 CREATE TABLE IF NOT EXISTS escrows (
                     id TEXT PRIMARY KEY,
                     payer TEXT NOT NULL,
                     amount INTEGER NOT NULL,
                     state TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS reputation (
                     peer TEXT PRIMARY KEY,
                     completed INTEGER NOT NULL DEFAULT 0,
                     failed INTEGER NOT NULL DEFAULT 0,
                     timed_out INTEGER NOT NULL DEFAULT 0,
                     bad_results INTEGER NOT NULL DEFAULT 0
                 );
                 PRAGMA user_version = 1;",
            )?;
            transaction.commit()?;
        }
        if version < 2 {
            // Version 2: payments awaiting the payee's receipt, and the task journal.
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (
                     tx_id TEXT PRIMARY KEY,
                     payee TEXT NOT NULL,
                     body BLOB NOT NULL,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     next_attempt_ms INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS tasks (
                     id TEXT PRIMARY KEY,
                     open INTEGER NOT NULL,
                     view TEXT NOT NULL,
                     interrupted TEXT,
                     updated_at TEXT NOT NULL
                 );
                 PRAGMA user_version = 2;",
            )?;
            transaction.commit()?;
        }
        if version < 3 {
            // Version 3: payments from peers are stored under ids derived from the payer's key
            // (`rules::incoming_transfer_id`); rename the ones stored under their raw tx id.
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let incoming: Vec<(String, String)> = {
                let mut statement = transaction
                    .prepare("SELECT id, from_account FROM transfers WHERE kind = 'incoming'")?;
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            for (id, from) in incoming {
                let payer = from
                    .strip_prefix("node:")
                    .and_then(|key| hex::decode(key).ok());
                let (Some(payer), Ok(tx_id)) = (payer, id.parse::<Uuid>()) else {
                    return Err(LedgerError::Invariant(format!(
                        "incoming transfer {id} from {from} cannot be migrated"
                    )));
                };
                let derived = rules::incoming_transfer_id(&payer, &tx_id);
                transaction.execute(
                    "UPDATE transfers SET id = ?2 WHERE id = ?1",
                    params![id, derived.to_string()],
                )?;
            }
            // And the peers this node has a relationship with (it admitted a task of theirs):
            // the only ones whose payments it accepts.
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS counterparties (
                     peer TEXT PRIMARY KEY,
                     since TEXT NOT NULL
                 );
                 PRAGMA user_version = 3;",
            )?;
            transaction.commit()?;
        }
        Ok(())
    }

    /// This node's account name.
    pub fn own_account(&self) -> &str {
        &self.own
    }

    fn balance_in(connection: &Connection, account: &str) -> Result<i64, LedgerError> {
        Ok(connection
            .query_row(
                "SELECT balance FROM accounts WHERE name = ?1",
                [account],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// Balance of an account, in micro-VIBE (mirrors and the mint may be negative).
    pub fn balance_micros(&self, account: &str) -> Result<i64, LedgerError> {
        Ledger::balance_in(&self.connection, account)
    }

    /// This node's own balance.
    pub fn own_balance(&self) -> Result<Vibe, LedgerError> {
        Ok(Vibe::from_micros(
            self.balance_micros(&self.own)?.max(0) as u64
        ))
    }

    /// VIBE held in escrows this node funded and that are not settled yet.
    pub fn escrowed(&self) -> Result<Vibe, LedgerError> {
        let total: i64 = self.connection.query_row(
            "SELECT COALESCE(SUM(amount), 0) FROM escrows WHERE state = 'held'",
            [],
            |row| row.get(0),
        )?;
        Ok(Vibe::from_micros(total.max(0) as u64))
    }

    /// Every account with its balance in micro-VIBE.
    pub fn balances(&self) -> Result<std::collections::BTreeMap<String, i64>, LedgerError> {
        let mut statement = self
            .connection
            .prepare("SELECT name, balance FROM accounts")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Transfers of a kind (`mint`, `hold`, `release`, `refund`, `incoming`).
    pub fn transfer_count(&self, kind: &str) -> Result<u64, LedgerError> {
        let count: i64 = self.connection.query_row(
            "SELECT COUNT(*) FROM transfers WHERE kind = ?1",
            [kind],
            |row| row.get(0),
        )?;
        Ok(count as u64)
    }

    /// Escrows in a state.
    pub fn escrow_count(&self, state: EscrowState) -> Result<u64, LedgerError> {
        let count: i64 = self.connection.query_row(
            "SELECT COUNT(*) FROM escrows WHERE state = ?1",
            [state.name()],
            |row| row.get(0),
        )?;
        Ok(count as u64)
    }

    /// Sum over every account (zero while the books balance).
    pub fn total_micros(&self) -> Result<i128, LedgerError> {
        let mut statement = self.connection.prepare("SELECT balance FROM accounts")?;
        let balances = statement.query_map([], |row| row.get::<_, i64>(0))?;
        let mut total: i128 = 0;
        for balance in balances {
            total += i128::from(balance?);
        }
        Ok(total)
    }

    /// Check the invariants; an error means a bug, never bad input.
    pub fn check_invariants(&self) -> Result<(), LedgerError> {
        let total = self.total_micros()?;
        if total != 0 {
            return Err(LedgerError::Invariant(format!(
                "accounts sum to {total}, not 0"
            )));
        }
        let negative: i64 = self.connection.query_row(
            "SELECT COUNT(*) FROM accounts WHERE balance < 0 AND (name = ?1 OR name LIKE 'escrow:%')",
            [&self.own],
            |row| row.get(0),
        )?;
        if negative > 0 {
            return Err(LedgerError::Invariant(
                "an own or escrow balance is negative".into(),
            ));
        }
        Ok(())
    }

    /// Apply one transfer inside `transaction`. Returns false when the same transfer was
    /// already applied (idempotent retry).
    fn apply(
        transaction: &rusqlite::Transaction<'_>,
        own: &str,
        new: &NewTransfer<'_>,
    ) -> Result<bool, LedgerError> {
        if new.amount == Vibe::ZERO {
            return Err(LedgerError::ZeroAmount);
        }
        let existing: Option<(String, String, i64, String)> = transaction
            .query_row(
                "SELECT from_account, to_account, amount, kind FROM transfers WHERE id = ?1",
                [new.id.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        if let Some(existing) = existing {
            let same = rules::same_transfer(
                (&existing.0, &existing.1, existing.2, &existing.3),
                (new.from, new.to, new.amount.micros() as i64, new.kind),
            );
            return if same {
                Ok(false)
            } else {
                Err(LedgerError::TransferConflict(new.id))
            };
        }
        let available = Ledger::balance_in(transaction, new.from)?;
        let may_go_negative = rules::may_go_negative(new.from, own);
        rules::check_debit(available, new.amount, may_go_negative).map_err(|_| {
            LedgerError::Overdraft {
                account: new.from.to_string(),
                needed: new.amount,
                available: Vibe::from_micros(available.max(0) as u64),
            }
        })?;
        let overflow = || LedgerError::Overflow {
            account: new.to.to_string(),
            amount: new.amount,
        };
        rules::check_credit(Ledger::balance_in(transaction, new.to)?, new.amount)
            .map_err(|_| overflow())?;
        let amount = i64::try_from(new.amount.micros()).map_err(|_| overflow())?;
        transaction.execute(
            "INSERT INTO accounts(name, balance) VALUES (?1, -?2)
             ON CONFLICT(name) DO UPDATE SET balance = balance - ?2",
            params![new.from, amount],
        )?;
        transaction.execute(
            "INSERT INTO accounts(name, balance) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET balance = balance + ?2",
            params![new.to, amount],
        )?;
        let seq: i64 = transaction.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM transfers",
            [],
            |row| row.get(0),
        )?;
        transaction.execute(
            "INSERT INTO transfers(id, from_account, to_account, amount, kind, task_id, reason, created_at, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.id.to_string(),
                new.from,
                new.to,
                amount,
                new.kind,
                new.task_id.map(|t| t.to_string()),
                new.reason,
                Utc::now().to_rfc3339(),
                seq
            ],
        )?;
        Ok(true)
    }

    fn write<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, &str) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let result = work(&transaction, &self.own)?;
        transaction.commit()?;
        if cfg!(debug_assertions) {
            self.check_invariants()?;
        }
        Ok(result)
    }

    /// Apply several operations in one SQLite transaction: all of them or none. Far fewer
    /// fsyncs than one transaction each (see the `ledger` benchmark).
    pub fn apply_batch(&mut self, operations: &[LedgerOp]) -> Result<(), LedgerError> {
        self.write(|transaction, own| {
            for operation in operations {
                Ledger::apply_op(transaction, own, operation)?;
            }
            Ok(())
        })
    }

    fn apply_op(
        transaction: &rusqlite::Transaction<'_>,
        own: &str,
        operation: &LedgerOp,
    ) -> Result<(), LedgerError> {
        match operation {
            LedgerOp::Mint { id, amount } => {
                Ledger::apply(
                    transaction,
                    own,
                    &NewTransfer {
                        id: *id,
                        from: MINT,
                        to: own,
                        amount: *amount,
                        kind: "mint",
                        task_id: None,
                        reason: None,
                    },
                )?;
            }
            LedgerOp::Hold { escrow, amount } => {
                Ledger::hold_in(transaction, own, *escrow, None, *amount).map(|_| ())?
            }
            LedgerOp::Release { escrow, payee } => Ledger::settle_in(
                transaction,
                own,
                *escrow,
                EscrowState::Released,
                Some(&node_account(payee)),
            )
            .map(|_| ())?,
            LedgerOp::Refund { escrow } => {
                Ledger::settle_in(transaction, own, *escrow, EscrowState::Refunded, None)
                    .map(|_| ())?
            }
        }
        Ok(())
    }

    /// Pay `amount` from this node to `payee` directly (bandwidth and relay settlements).
    pub fn pay(
        &mut self,
        id: Uuid,
        payee: &[u8],
        amount: Vibe,
        reason: TransactionReason,
    ) -> Result<bool, LedgerError> {
        let to = node_account(payee);
        self.write(|transaction, own| Ledger::pay_in(transaction, own, id, &to, amount, reason))
    }

    fn pay_in(
        transaction: &rusqlite::Transaction<'_>,
        own: &str,
        id: Uuid,
        to: &str,
        amount: Vibe,
        reason: TransactionReason,
    ) -> Result<bool, LedgerError> {
        Ledger::apply(
            transaction,
            own,
            &NewTransfer {
                id,
                from: own,
                to,
                amount,
                kind: "payment",
                task_id: None,
                reason: Some(reason_name(reason)),
            },
        )
    }

    /// Grant `amount` from the mint to `to` (explicit grants only).
    pub fn mint(&mut self, id: Uuid, to: &str, amount: Vibe) -> Result<bool, LedgerError> {
        self.write(|transaction, own| {
            Ledger::apply(
                transaction,
                own,
                &NewTransfer {
                    id,
                    from: MINT,
                    to,
                    amount,
                    kind: "mint",
                    task_id: None,
                    reason: None,
                },
            )
        })
    }

    /// Move `amount` from this node's account into escrow `escrow_id`.
    pub fn hold(
        &mut self,
        escrow_id: Uuid,
        task_id: Option<Uuid>,
        amount: Vibe,
    ) -> Result<bool, LedgerError> {
        self.write(|transaction, own| Ledger::hold_in(transaction, own, escrow_id, task_id, amount))
    }

    fn hold_in(
        transaction: &rusqlite::Transaction<'_>,
        own: &str,
        escrow_id: Uuid,
        task_id: Option<Uuid>,
        amount: Vibe,
    ) -> Result<bool, LedgerError> {
        let escrow = escrow_account(&escrow_id);
        let applied = Ledger::apply(
            transaction,
            own,
            &NewTransfer {
                id: escrow_id,
                from: own,
                to: &escrow,
                amount,
                kind: "hold",
                task_id,
                reason: Some("TaskExecution"),
            },
        )?;
        if applied {
            transaction.execute(
                "INSERT INTO escrows(id, payer, amount, state) VALUES (?1, ?2, ?3, 'held')",
                params![escrow_id.to_string(), own, amount.micros() as i64],
            )?;
        }
        Ok(applied)
    }

    fn settle_escrow(
        &mut self,
        escrow_id: Uuid,
        to_state: EscrowState,
        payee: Option<&str>,
    ) -> Result<Vibe, LedgerError> {
        self.write(|transaction, own| {
            Ledger::settle_in(transaction, own, escrow_id, to_state, payee)
        })
    }

    fn settle_in(
        transaction: &rusqlite::Transaction<'_>,
        own: &str,
        escrow_id: Uuid,
        to_state: EscrowState,
        payee: Option<&str>,
    ) -> Result<Vibe, LedgerError> {
        let row: Option<(String, i64, String)> = transaction
            .query_row(
                "SELECT payer, amount, state FROM escrows WHERE id = ?1",
                [escrow_id.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let (payer, amount, state) = row.ok_or(LedgerError::NoEscrow(escrow_id))?;
        let state = EscrowState::from_name(&state);
        rules::escrow_transition(state, to_state).map_err(|state| LedgerError::EscrowSettled {
            id: escrow_id,
            state,
        })?;
        let amount = Vibe::from_micros(amount as u64);
        let escrow = escrow_account(&escrow_id);
        let (to, kind) = match to_state {
            EscrowState::Released => (payee.unwrap_or(own).to_string(), "release"),
            _ => (payer, "refund"),
        };
        // Settlement ids derive from the escrow: a retried release is the same transfer.
        let id = rules::settlement_id(&escrow_id, kind);
        Ledger::apply(
            transaction,
            own,
            &NewTransfer {
                id,
                from: &escrow,
                to: &to,
                amount,
                kind,
                task_id: None,
                reason: Some("TaskExecution"),
            },
        )?;
        transaction.execute(
            "UPDATE escrows SET state = ?2 WHERE id = ?1",
            params![escrow_id.to_string(), to_state.name()],
        )?;
        Ok(amount)
    }

    /// Pay escrow `escrow_id` to `payee_key`. Exactly once.
    pub fn release(&mut self, escrow_id: Uuid, payee_key: &[u8]) -> Result<Vibe, LedgerError> {
        let payee = node_account(payee_key);
        self.settle_escrow(escrow_id, EscrowState::Released, Some(&payee))
    }

    /// Return escrow `escrow_id` to this node. Exactly once.
    pub fn refund(&mut self, escrow_id: Uuid) -> Result<Vibe, LedgerError> {
        self.settle_escrow(escrow_id, EscrowState::Refunded, None)
    }

    /// State of an escrow.
    pub fn escrow_state(&self, escrow_id: Uuid) -> Result<Option<EscrowState>, LedgerError> {
        Ok(self
            .connection
            .query_row(
                "SELECT state FROM escrows WHERE id = ?1",
                [escrow_id.to_string()],
                |row| row.get::<_, String>(0),
            )
            .optional()?
            .map(|s| EscrowState::from_name(&s)))
    }

    /// Credit this node for a payment another node signed, stored under
    /// `rules::incoming_transfer_id(payer, tx_id)`. Refused (nothing written) when the
    /// signature does not verify, the payee is another node, the payer is not a
    /// counterparty ([`Ledger::record_counterparty`]) or the credit would overflow; a replay
    /// is a no-op.
    pub fn record_incoming(
        &mut self,
        transaction: &VibeTransaction,
        own_key: &[u8],
    ) -> Result<bool, LedgerError> {
        if !transaction.verify() {
            return Err(LedgerError::Forged);
        }
        if transaction.to.as_slice() != own_key {
            return Err(LedgerError::NotPayee);
        }
        if !self.is_counterparty(&transaction.from)? {
            return Err(LedgerError::Unsolicited);
        }
        let payer = node_account(&transaction.from);
        let reason = reason_name(transaction.reason);
        let id = rules::incoming_transfer_id(&transaction.from, &transaction.tx_id);
        self.write(|sql, own| {
            Ledger::apply(
                sql,
                own,
                &NewTransfer {
                    id,
                    from: &payer,
                    to: own,
                    amount: transaction.amount,
                    kind: "incoming",
                    task_id: transaction.task_id,
                    reason: Some(reason),
                },
            )
        })
    }

    /// Remember that this node has a relationship with `peer_key` (it admitted a task of
    /// that peer's): from now on its payments (task releases, bandwidth) are accepted.
    pub fn record_counterparty(&mut self, peer_key: &[u8]) -> Result<(), LedgerError> {
        self.connection.execute(
            "INSERT OR IGNORE INTO counterparties(peer, since) VALUES (?1, ?2)",
            params![hex::encode(peer_key), Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    /// Whether payments from `peer_key` are accepted.
    pub fn is_counterparty(&self, peer_key: &[u8]) -> Result<bool, LedgerError> {
        Ok(self
            .connection
            .query_row(
                "SELECT 1 FROM counterparties WHERE peer = ?1",
                [hex::encode(peer_key)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// History, newest first.
    pub fn history(&self, query: &HistoryQuery) -> Result<Vec<TransferRecord>, LedgerError> {
        let limit = query.limit.clamp(1, HISTORY_LIMIT_MAX);
        let mut statement = self.connection.prepare(
            "SELECT id, from_account, to_account, amount, kind, task_id, reason, created_at FROM transfers
             WHERE (?1 IS NULL OR created_at >= ?1) AND (?2 IS NULL OR created_at < ?2)
               AND (?3 IS NULL OR from_account = ?3 OR to_account = ?3)
               AND (?4 IS NULL OR task_id = ?4) AND (?5 IS NULL OR reason = ?5)
             ORDER BY seq DESC LIMIT ?6",
        )?;
        let rows = statement.query_map(
            params![
                query.since.map(|t| t.to_rfc3339()),
                query.before.map(|t| t.to_rfc3339()),
                query.account,
                query.task_id.map(|t| t.to_string()),
                query.reason,
                limit as i64
            ],
            |row| {
                let id: String = row.get(0)?;
                let task: Option<String> = row.get(5)?;
                let created: String = row.get(7)?;
                Ok(TransferRecord {
                    id: id.parse().unwrap_or_default(),
                    from: row.get(1)?,
                    to: row.get(2)?,
                    amount: Vibe::from_micros(row.get::<_, i64>(3)?.max(0) as u64),
                    kind: row.get(4)?,
                    task_id: task.and_then(|t| t.parse().ok()),
                    reason: row.get(6)?,
                    created_at: DateTime::parse_from_rfc3339(&created)
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Count an outcome for a peer.
    pub fn record_outcome(&mut self, peer_key: &[u8], outcome: Outcome) -> Result<(), LedgerError> {
        let column = match outcome {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::BadResult => "bad_results",
        };
        let sql = format!(
            "INSERT INTO reputation(peer, {column}) VALUES (?1, 1)
             ON CONFLICT(peer) DO UPDATE SET {column} = {column} + 1"
        );
        self.connection.execute(&sql, [hex::encode(peer_key)])?;
        Ok(())
    }

    /// A peer's counts.
    pub fn reputation_counts(&self, peer_key: &[u8]) -> Result<ReputationCounts, LedgerError> {
        Ok(self
            .connection
            .query_row(
                "SELECT completed, failed, timed_out, bad_results FROM reputation WHERE peer = ?1",
                [hex::encode(peer_key)],
                |row| {
                    Ok(ReputationCounts {
                        completed: row.get::<_, i64>(0)? as u64,
                        failed: row.get::<_, i64>(1)? as u64,
                        timed_out: row.get::<_, i64>(2)? as u64,
                        bad_results: row.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// A peer's score in [0, 1] (see [`rules::reputation_score`]).
    pub fn reputation(&self, peer_key: &[u8]) -> Result<f64, LedgerError> {
        Ok(rules::reputation_score(&self.reputation_counts(peer_key)?))
    }
}

/// What `apn ledger` shows.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerReport {
    pub account: String,
    pub balance: Vibe,
    pub escrowed: Vibe,
    pub transfers: Vec<TransferRecord>,
}

impl std::fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "account   {}", self.account)?;
        writeln!(f, "balance   {} VIBE", self.balance)?;
        writeln!(f, "escrowed  {} VIBE", self.escrowed)?;
        writeln!(f, "last {} transfer(s):", self.transfers.len())?;
        for transfer in &self.transfers {
            writeln!(
                f,
                "  {}  {:<8} {:>14} VIBE  {} -> {}",
                transfer.created_at.format("%Y-%m-%d %H:%M:%S"),
                transfer.kind,
                transfer.amount.to_string(),
                short_account(&transfer.from),
                short_account(&transfer.to)
            )?;
        }
        Ok(())
    }
}

fn short_account(account: &str) -> String {
    match account.strip_prefix("node:") {
        Some(key) => format!("node:{}…", &key[..key.len().min(12)]),
        None => account.chars().take(20).collect(),
    }
}

/// Read the ledger of the node whose data dir is `data_dir` (its key names its account).
pub fn report(data_dir: &Path, last: usize) -> Result<LedgerReport, LedgerError> {
    let path = data_dir.join(LEDGER_FILE);
    if !path.exists() {
        return Err(LedgerError::NotFound(path.display().to_string()));
    }
    let identity = crate::identity::Identity::load_or_create(data_dir)
        .map_err(|e| LedgerError::Identity(e.to_string()))?;
    let ledger = Ledger::open(&path, &identity.public_key())?;
    Ok(LedgerReport {
        account: ledger.own_account().to_string(),
        balance: ledger.own_balance()?,
        escrowed: ledger.escrowed()?,
        transfers: ledger.history(&HistoryQuery {
            limit: last.max(1),
            ..HistoryQuery::default()
        })?,
    })
}
