//! A node's SQLite projection of the ledger stream: every message the node has read, with
//! the rules' verdict, and the balances and escrows they derive, written in one transaction
//! together with the stream position they reach. A crash between batches loses nothing: the
//! node resumes reading after the stored position.
//!
//! On open the in-memory [`LedgerState`] is rebuilt by applying the stored messages again
//! with the same rules, and checked against the stored balances, so a projection file that
//! does not match its own history is refused instead of trusted (delete it and it is rebuilt
//! from the stream).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

mod report;
pub use report::{HistoryRow, HoldRow, ProjectionReport, read_report};

use super::entry::{AccountKey, Entry, EntryBody};
use super::rules::{Hold, HoldState, LedgerState, Skip};
use super::stream::StoredMessage;

/// The projection file in the data dir.
pub const PROJECTION_FILE: &str = "network-ledger.sqlite3";
/// Most rows one history query returns.
pub const HISTORY_LIMIT_MAX: usize = 1000;

/// A projection operation failed; the batch was not written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// SQLite failed; the transaction was rolled back and the state rebuilt from the file.
    #[error("projection database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The stored balances are not what the stored history derives.
    #[error(
        "the projection's balances do not match its history: delete {PROJECTION_FILE} to rebuild it from the stream"
    )]
    Inconsistent,
    /// Reading the stream failed; what was applied so far is stored.
    #[error(transparent)]
    Stream(#[from] super::stream::StreamError),
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Escrows the batch created or moved (executors wait for theirs).
    pub holds: Vec<Uuid>,
    /// Entries applied.
    pub applied: usize,
    /// Messages skipped by the rules.
    pub skipped: usize,
    /// Messages at or below the stored position (read twice), ignored.
    pub already_projected: usize,
    /// Money that arrived in an account with the batch, in stream order.
    pub credits: Vec<Credit>,
}

/// Money arriving in an account: a mint, a transfer, a released or claimed escrow. (A
/// refunded or disputed escrow returns the payer's own money and is not listed.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// The account credited.
    pub to: AccountKey,
    /// Where the money came from: the treasury, the payer.
    pub from: AccountKey,
    /// Micro-VIBE.
    pub amount: u64,
    /// The task attempt an escrow paid for.
    pub task: Option<Uuid>,
    /// The entry kind that moved it.
    pub kind: &'static str,
}

/// The projection: a SQLite file and the state it holds.
#[derive(Debug)]
pub struct Projection {
    connection: Connection,
    treasury: Vec<AccountKey>,
    state: LedgerState,
    position: u64,
}

impl Projection {
    /// Open (or create) the projection at `path`, accepting mints from `treasury`.
    pub fn open(path: &Path, treasury: &[AccountKey]) -> Result<Self, ProjectionError> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Projection::with_connection(connection, treasury)
    }

    /// An in-memory projection (tests).
    pub fn open_in_memory(treasury: &[AccountKey]) -> Result<Self, ProjectionError> {
        Projection::with_connection(Connection::open_in_memory()?, treasury)
    }

    fn with_connection(
        connection: Connection,
        treasury: &[AccountKey],
    ) -> Result<Self, ProjectionError> {
        connection.execute_batch(
            "CREATE TABLE IF NOT EXISTS net_position (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 sequence INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS net_messages (
                 sequence INTEGER PRIMARY KEY,
                 subject TEXT NOT NULL,
                 time_ms INTEGER NOT NULL,
                 payload BLOB NOT NULL,
                 account BLOB,
                 kind TEXT NOT NULL,
                 skipped TEXT,
                 counterparty BLOB,
                 amount INTEGER
             );
             CREATE INDEX IF NOT EXISTS net_messages_account ON net_messages (account, sequence);
             CREATE INDEX IF NOT EXISTS net_messages_counterparty
                 ON net_messages (counterparty, sequence);
             CREATE TABLE IF NOT EXISTS net_balances (
                 account BLOB PRIMARY KEY,
                 balance INTEGER NOT NULL CHECK (balance >= 0)
             );
             CREATE TABLE IF NOT EXISTS net_holds (
                 hold TEXT PRIMARY KEY,
                 payer BLOB NOT NULL,
                 payee BLOB NOT NULL,
                 amount INTEGER NOT NULL,
                 task TEXT NOT NULL,
                 deadline_ms INTEGER NOT NULL,
                 committed_at_ms INTEGER,
                 state TEXT NOT NULL
             );",
        )?;
        let mut projection = Projection {
            connection,
            treasury: treasury.to_vec(),
            state: LedgerState::new(treasury.iter().copied()),
            position: 0,
        };
        projection.rebuild()?;
        Ok(projection)
    }

    /// The state derived so far.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The last stream sequence projected (0: none): read on from the next one.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Apply `messages` in order and store them, their effects and the new position in one
    /// transaction. A failed write leaves file and state as they were.
    pub fn apply(&mut self, messages: &[StoredMessage]) -> Result<BatchOutcome, ProjectionError> {
        let result = self.apply_in_transaction(messages);
        if result.is_err() {
            // The in-memory state may be ahead of the rolled-back file: derive it again.
            self.rebuild()?;
        }
        result
    }

    fn apply_in_transaction(
        &mut self,
        messages: &[StoredMessage],
    ) -> Result<BatchOutcome, ProjectionError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcome = BatchOutcome::default();
        let mut position = self.position;
        for message in messages {
            if message.sequence <= position {
                outcome.already_projected += 1;
                continue;
            }
            position = message.sequence;
            let mut counterparty = None;
            let (account, kind, skipped) = match message.slot() {
                None => (None, "junk", Some(Skip::NotAnAccountSubject)),
                Some(slot) => match self.state.apply(&slot, &message.payload) {
                    Ok(applied) => {
                        for touched in &applied.touched {
                            transaction
                                .prepare_cached(
                                    "INSERT INTO net_balances (account, balance) VALUES (?1, ?2)
                                 ON CONFLICT (account) DO UPDATE SET balance = excluded.balance",
                                )?
                                .execute(params![
                                    touched.as_slice(),
                                    as_sql(self.state.balance(touched))
                                ])?;
                        }
                        if let Some(hold_id) = applied.hold
                            && let Some(hold) = self.state.hold(&hold_id)
                        {
                            store_hold(&transaction, &hold_id, hold)?;
                            outcome.holds.push(hold_id);
                        }
                        counterparty = counterparty_of(&self.state, &applied.entry);
                        outcome
                            .credits
                            .extend(credit_of(&self.state, &applied.entry));
                        (Some(slot.account), applied.entry.body.kind(), None)
                    }
                    Err(skip) => (Some(slot.account), kind_of(&message.payload), Some(skip)),
                },
            };
            if let Some(skip) = skipped {
                tracing::debug!(
                    sequence = message.sequence,
                    reason = skip.label(),
                    "ledger entry skipped"
                );
                outcome.skipped += 1;
            } else {
                outcome.applied += 1;
            }
            transaction.prepare_cached(
                "INSERT INTO net_messages
                     (sequence, subject, time_ms, payload, account, kind, skipped, counterparty, amount)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                    as_sql(message.sequence),
                    message.subject,
                    message.time_ms,
                    message.payload,
                    account.as_ref().map(|a| a.as_slice()),
                    kind,
                    skipped.map(Skip::label),
                    counterparty.as_ref().map(|(other, _)| other.as_slice()),
                    counterparty.map(|(_, amount)| as_sql(amount)),
                ])?;
        }
        transaction.execute(
            "INSERT INTO net_position (id, sequence) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET sequence = excluded.sequence",
            params![as_sql(position)],
        )?;
        transaction.commit()?;
        self.position = position;
        Ok(outcome)
    }

    /// Derive the state again from the stored messages and check it against the stored rows.
    fn rebuild(&mut self) -> Result<(), ProjectionError> {
        let mut state = LedgerState::new(self.treasury.iter().copied());
        let mut statement = self.connection.prepare(
            "SELECT sequence, subject, time_ms, payload FROM net_messages ORDER BY sequence",
        )?;
        let rows = statement.query_map([], |row| {
            Ok(StoredMessage {
                sequence: from_sql(row.get(0)?),
                subject: row.get(1)?,
                time_ms: row.get(2)?,
                payload: row.get(3)?,
            })
        })?;
        for row in rows {
            let message = row?;
            if let Some(slot) = message.slot() {
                // The verdict was stored with the row; only the state matters here.
                let _verdict = state.apply(&slot, &message.payload);
            }
        }
        drop(statement);
        let mut stored = std::collections::BTreeMap::new();
        let mut statement = self
            .connection
            .prepare("SELECT account, balance FROM net_balances")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, Vec<u8>>(0)?, from_sql(row.get(1)?)))
        })?;
        for row in rows {
            let (account, balance) = row?;
            let account: AccountKey = account
                .try_into()
                .map_err(|_| ProjectionError::Inconsistent)?;
            stored.insert(account, balance);
        }
        drop(statement);
        let derived: std::collections::BTreeMap<AccountKey, u64> = state
            .balances()
            .iter()
            .map(|(account, balance)| (*account, *balance))
            .collect();
        if derived != stored {
            return Err(ProjectionError::Inconsistent);
        }
        let position: Option<i64> = self
            .connection
            .query_row(
                "SELECT sequence FROM net_position WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()?;
        self.position = position.map(from_sql).unwrap_or(0);
        self.state = state;
        Ok(())
    }

    /// Why the message at `sequence` was skipped: `Ok(None)` when it was applied, `Ok(Some)`
    /// with the reason when skipped, an error when it is not projected (yet).
    pub fn verdict(&self, sequence: u64) -> Result<Option<String>, ProjectionError> {
        Ok(self.connection.query_row(
            "SELECT skipped FROM net_messages WHERE sequence = ?1",
            params![as_sql(sequence)],
            |row| row.get(0),
        )?)
    }

    /// An account's history, newest first, before stream sequence `before`: the entries it
    /// wrote (applied or skipped) and the applied ones that name it as the other party.
    pub fn history(
        &self,
        account: &AccountKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, ProjectionError> {
        report::history(&self.connection, account, before, limit)
    }

    /// The escrows `account` is party to that are still held, oldest first.
    pub fn open_holds(&self, account: &AccountKey) -> Result<Vec<HoldRow>, ProjectionError> {
        report::open_holds(&self.connection, account)
    }

    /// What `apn ledger` and `/api/ledger` show for `account`.
    pub fn report(
        &self,
        account: &AccountKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<ProjectionReport, ProjectionError> {
        report::report(&self.connection, account, before, limit)
    }
}

/// The money an applied entry brought into an account, if any.
fn credit_of(state: &LedgerState, entry: &Entry) -> Option<Credit> {
    let credit = |to, from, amount, task| Credit {
        to,
        from,
        amount,
        task,
        kind: entry.body.kind(),
    };
    match &entry.body {
        EntryBody::Mint { to, amount, .. } | EntryBody::Transfer { to, amount, .. } => {
            Some(credit(*to, entry.account, amount.micros(), None))
        }
        EntryBody::Release { hold } | EntryBody::Claim { hold } => state
            .hold(hold)
            .map(|h| credit(h.payee, h.payer, h.amount, Some(h.task))),
        EntryBody::Hold { .. }
        | EntryBody::Commit { .. }
        | EntryBody::Dispute { .. }
        | EntryBody::Refund { .. } => None,
    }
}

/// The other party and the amount of an applied entry, for the history of both sides.
fn counterparty_of(state: &LedgerState, entry: &Entry) -> Option<(AccountKey, u64)> {
    match &entry.body {
        EntryBody::Mint { to, amount, .. } | EntryBody::Transfer { to, amount, .. } => {
            Some((*to, amount.micros()))
        }
        EntryBody::Hold { payee, amount, .. } => Some((*payee, amount.micros())),
        EntryBody::Commit { hold, .. }
        | EntryBody::Release { hold }
        | EntryBody::Claim { hold }
        | EntryBody::Dispute { hold, .. }
        | EntryBody::Refund { hold } => state.hold(hold).map(|hold| {
            let other = if hold.payer == entry.account {
                hold.payee
            } else {
                hold.payer
            };
            (other, hold.amount)
        }),
    }
}

/// The kind of a skipped message: its entry's, when it is a readable entry at all.
fn kind_of(payload: &[u8]) -> &'static str {
    super::entry::open(payload)
        .map(|entry| entry.body.kind())
        .unwrap_or("junk")
}

fn store_hold(
    transaction: &rusqlite::Transaction<'_>,
    id: &Uuid,
    hold: &Hold,
) -> Result<(), rusqlite::Error> {
    let state = match hold.state {
        HoldState::Held => "held",
        HoldState::Released => "released",
        HoldState::Claimed => "claimed",
        HoldState::Disputed => "disputed",
        HoldState::Refunded => "refunded",
    };
    transaction.prepare_cached(
        "INSERT INTO net_holds (hold, payer, payee, amount, task, deadline_ms, committed_at_ms, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (hold) DO UPDATE SET committed_at_ms = excluded.committed_at_ms,
                                          state = excluded.state",
    )?
    .execute(params![
            id.to_string(),
            hold.payer.as_slice(),
            hold.payee.as_slice(),
            as_sql(hold.amount),
            hold.task.to_string(),
            hold.deadline_ms,
            hold.commit.map(|(_, at)| at),
            state,
        ])?;
    Ok(())
}

/// SQLite integers are i64; stream sequences and micro-VIBE are u64. Stored as the same bits
/// so the full u64 range round-trips.
fn as_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

#[cfg(test)]
mod tests;
