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
use serde::Serialize;
use uuid::Uuid;

use super::entry::{AccountKey, Entry, EntryBody};
use super::rules::{Hold, HoldState, LedgerState, Skip};
use super::stream::StoredMessage;
use crate::messages::Vibe;

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

/// One row of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    /// Stream sequence of the entry.
    pub sequence: u64,
    /// Stream time, milliseconds since the epoch.
    pub time_ms: i64,
    /// The account that wrote it (hex key).
    pub account: String,
    /// Entry kind (`mint`, `transfer`, `hold`, …), or `junk` for unreadable bytes.
    pub kind: String,
    /// `None` when applied, else why it was skipped.
    pub skipped: Option<String>,
    /// The other party of an applied entry: the payee of a transfer or hold, the other side
    /// of the escrow an entry settles (hex key).
    pub counterparty: Option<String>,
    /// The amount it moved or concerns.
    pub amount: Option<Vibe>,
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
        history(&self.connection, account, before, limit)
    }

    /// The escrows `account` is party to that are still held, oldest first.
    pub fn open_holds(&self, account: &AccountKey) -> Result<Vec<HoldRow>, ProjectionError> {
        open_holds(&self.connection, account)
    }

    /// What `apn ledger` and `/api/ledger` show for `account`.
    pub fn report(
        &self,
        account: &AccountKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<ProjectionReport, ProjectionError> {
        report(&self.connection, account, before, limit)
    }
}

/// Read the report of `account` from the projection file at `path` without opening it for
/// writing (the node may be running; SQLite's WAL lets a reader in beside it).
pub fn read_report(
    path: &Path,
    account: &AccountKey,
    before: Option<u64>,
    limit: usize,
) -> Result<ProjectionReport, ProjectionError> {
    let connection = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    report(&connection, account, before, limit)
}

/// An escrow as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldRow {
    /// The escrow's id.
    pub hold: Uuid,
    /// Who put the money in (hex key).
    pub payer: String,
    /// Who it is for (hex key).
    pub payee: String,
    /// Amount held.
    pub amount: Vibe,
    /// The task attempt it pays for.
    pub task: String,
    /// Stream time of the deadline, milliseconds since the epoch.
    pub deadline_ms: i64,
    /// Stream time of the payee's commit, if it committed.
    pub committed_at_ms: Option<i64>,
}

/// An account as its node's projection sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionReport {
    /// The account (hex Ed25519 key).
    pub account: String,
    /// The last stream sequence the projection has applied.
    pub position: u64,
    /// Spendable balance.
    pub balance: Vibe,
    /// Held in escrows this account pays.
    pub escrowed: Vibe,
    /// Held in escrows for this account.
    pub incoming: Vibe,
    /// Open escrows this account is party to.
    pub holds: Vec<HoldRow>,
    /// History, newest first; page with `before` = the last row's sequence.
    pub history: Vec<HistoryRow>,
}

impl std::fmt::Display for ProjectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "account   {}", self.account)?;
        writeln!(
            f,
            "settlement jetstream (projection at stream sequence {})",
            self.position
        )?;
        writeln!(f, "balance   {} VIBE", self.balance)?;
        writeln!(
            f,
            "escrowed  {} VIBE (paying), {} VIBE (incoming)",
            self.escrowed, self.incoming
        )?;
        writeln!(f, "{} open escrow(s)", self.holds.len())?;
        for hold in &self.holds {
            writeln!(
                f,
                "  {}  {:>14} VIBE  {}… -> {}…  deadline {}",
                hold.hold,
                hold.amount.to_string(),
                short(&hold.payer),
                short(&hold.payee),
                stream_time(hold.deadline_ms)
            )?;
        }
        writeln!(f, "last {} entr(ies):", self.history.len())?;
        for row in &self.history {
            let amount = row.amount.map(|a| format!("{a} VIBE")).unwrap_or_default();
            let other = row.counterparty.as_deref().map(short).unwrap_or("");
            let verdict = row
                .skipped
                .as_deref()
                .map(|s| format!("  skipped: {s}"))
                .unwrap_or_default();
            writeln!(
                f,
                "  #{:<8} {}  {:<8} {:>18}  {}… / {}…{}",
                row.sequence,
                stream_time(row.time_ms),
                row.kind,
                amount,
                short(&row.account),
                other,
                verdict
            )?;
        }
        Ok(())
    }
}

fn short(hex_key: &str) -> &str {
    hex_key.get(..12).unwrap_or(hex_key)
}

fn stream_time(time_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(time_ms)
        .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| time_ms.to_string())
}

fn report(
    connection: &Connection,
    account: &AccountKey,
    before: Option<u64>,
    limit: usize,
) -> Result<ProjectionReport, ProjectionError> {
    let key = account.as_slice();
    let balance: Option<i64> = connection
        .query_row(
            "SELECT balance FROM net_balances WHERE account = ?1",
            params![key],
            |row| row.get(0),
        )
        .optional()?;
    let held = |column: &str| -> Result<u64, rusqlite::Error> {
        let total: i64 = connection.query_row(
            &format!(
                "SELECT COALESCE(SUM(amount), 0) FROM net_holds WHERE {column} = ?1 AND state = 'held'"
            ),
            params![key],
            |row| row.get(0),
        )?;
        Ok(from_sql(total))
    };
    let position: Option<i64> = connection
        .query_row(
            "SELECT sequence FROM net_position WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(ProjectionReport {
        account: hex::encode(account),
        position: position.map(from_sql).unwrap_or(0),
        balance: Vibe::from_micros(balance.map(from_sql).unwrap_or(0)),
        escrowed: Vibe::from_micros(held("payer")?),
        incoming: Vibe::from_micros(held("payee")?),
        holds: open_holds(connection, account)?,
        history: history(connection, account, before, limit)?,
    })
}

fn history(
    connection: &Connection,
    account: &AccountKey,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<HistoryRow>, ProjectionError> {
    let mut statement = connection.prepare(
        "SELECT sequence, time_ms, account, kind, skipped, counterparty, amount FROM net_messages
         WHERE (account = ?1 OR counterparty = ?1) AND sequence < ?2
         ORDER BY sequence DESC LIMIT ?3",
    )?;
    let before = before.map(as_sql).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit.min(HISTORY_LIMIT_MAX)).unwrap_or(0);
    let rows = statement.query_map(params![account.as_slice(), before, limit], |row| {
        let writer: Vec<u8> = row.get(2)?;
        let counterparty: Option<Vec<u8>> = row.get(5)?;
        let amount: Option<i64> = row.get(6)?;
        Ok(HistoryRow {
            sequence: from_sql(row.get(0)?),
            time_ms: row.get(1)?,
            account: hex::encode(writer),
            kind: row.get(3)?,
            skipped: row.get(4)?,
            counterparty: counterparty.map(hex::encode),
            amount: amount.map(|amount| Vibe::from_micros(from_sql(amount))),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn open_holds(
    connection: &Connection,
    account: &AccountKey,
) -> Result<Vec<HoldRow>, ProjectionError> {
    let mut statement = connection.prepare(
        "SELECT hold, payer, payee, amount, task, deadline_ms, committed_at_ms FROM net_holds
         WHERE (payer = ?1 OR payee = ?1) AND state = 'held' ORDER BY deadline_ms",
    )?;
    let rows = statement.query_map(params![account.as_slice()], |row| {
        let hold: String = row.get(0)?;
        Ok(HoldRow {
            hold: hold.parse().unwrap_or_default(),
            payer: hex::encode(row.get::<_, Vec<u8>>(1)?),
            payee: hex::encode(row.get::<_, Vec<u8>>(2)?),
            amount: Vibe::from_micros(from_sql(row.get(3)?)),
            task: row.get(4)?,
            deadline_ms: row.get(5)?,
            committed_at_ms: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
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
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::messages::Vibe;
    use crate::network_ledger::entry::{EntryBody, sign, subject_of};

    fn message(sequence: u64, account: &AccountKey, payload: Vec<u8>) -> StoredMessage {
        StoredMessage {
            subject: subject_of(account),
            sequence,
            time_ms: 1_000_000 + i64::try_from(sequence).unwrap(),
            payload,
        }
    }

    #[test]
    fn a_reopened_projection_has_the_same_state_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROJECTION_FILE);
        let treasury = Identity::ephemeral();
        let node = Identity::ephemeral();
        let t = treasury.public_key();
        let mint = EntryBody::Mint {
            to: node.public_key(),
            amount: Vibe::from_whole(5),
            memo: String::new(),
        };
        let pay = EntryBody::Transfer {
            to: t,
            amount: Vibe::from_whole(2),
            memo: String::new(),
        };
        let batch = vec![
            message(1, &t, sign(&treasury, Uuid::new_v4(), 0, mint).unwrap()),
            message(2, &node.public_key(), b"junk".to_vec()),
            message(
                3,
                &node.public_key(),
                sign(&node, Uuid::new_v4(), 2, pay).unwrap(),
            ),
        ];
        let mut projection = Projection::open(&path, &[t]).unwrap();
        let outcome = projection.apply(&batch).unwrap();
        assert_eq!((outcome.applied, outcome.skipped), (2, 1));
        // The mint credited the node; the node's transfer credited the treasury.
        let credited: Vec<(AccountKey, u64, &str)> = outcome
            .credits
            .iter()
            .map(|c| (c.to, c.amount, c.kind))
            .collect();
        assert_eq!(
            credited,
            [
                (node.public_key(), Vibe::from_whole(5).micros(), "mint"),
                (t, Vibe::from_whole(2).micros(), "transfer"),
            ]
        );
        // Read twice (a consumer restart): nothing changes.
        assert_eq!(projection.apply(&batch).unwrap().already_projected, 3);
        let before = projection.state().clone();
        drop(projection);
        let reopened = Projection::open(&path, &[t]).unwrap();
        assert_eq!(reopened.position(), 3);
        assert_eq!(reopened.state(), &before);
        assert_eq!(
            reopened.state().balance(&node.public_key()),
            Vibe::from_whole(3).micros()
        );
        // Its own entries and the mint that named it, newest first.
        let history = reopened.history(&node.public_key(), None, 10).unwrap();
        let kinds: Vec<&str> = history.iter().map(|row| row.kind.as_str()).collect();
        assert_eq!(kinds, ["transfer", "junk", "mint"]);
        assert_eq!(history[1].skipped.as_deref(), Some("malformed"));
        assert_eq!(history[2].account, hex::encode(t));
        assert_eq!(history[2].amount, Some(Vibe::from_whole(5)));
        // Paging: before the transfer's sequence.
        let page = reopened.history(&node.public_key(), Some(3), 10).unwrap();
        assert_eq!(page.len(), 2);
        let report = read_report(&path, &node.public_key(), None, 10).unwrap();
        assert_eq!(report.balance, Vibe::from_whole(3));
        assert_eq!(report.position, 3);
        assert_eq!(report.history, history);
    }

    #[test]
    fn a_projection_whose_balances_were_edited_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROJECTION_FILE);
        let treasury = Identity::ephemeral();
        let t = treasury.public_key();
        let mint = EntryBody::Mint {
            to: t,
            amount: Vibe::from_whole(5),
            memo: String::new(),
        };
        let mut projection = Projection::open(&path, &[t]).unwrap();
        projection
            .apply(&[message(
                1,
                &t,
                sign(&treasury, Uuid::new_v4(), 0, mint).unwrap(),
            )])
            .unwrap();
        drop(projection);
        let connection = Connection::open(&path).unwrap();
        connection
            .execute("UPDATE net_balances SET balance = balance + 1", [])
            .unwrap();
        drop(connection);
        assert!(matches!(
            Projection::open(&path, &[t]),
            Err(ProjectionError::Inconsistent)
        ));
    }
}
