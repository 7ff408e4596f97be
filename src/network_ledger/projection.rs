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

use super::entry::AccountKey;
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
}

/// One row of an account's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Stream sequence of the entry.
    pub sequence: u64,
    /// Stream time, milliseconds since the epoch.
    pub time_ms: i64,
    /// The account that wrote it.
    pub account: AccountKey,
    /// Entry kind (`mint`, `transfer`, `hold`, …), or `junk` for unreadable bytes.
    pub kind: String,
    /// `None` when applied, else why it was skipped.
    pub skipped: Option<String>,
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
                 skipped TEXT
             );
             CREATE INDEX IF NOT EXISTS net_messages_account ON net_messages (account, sequence);
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
            let (account, kind, skipped) = match message.slot() {
                None => (None, "junk", Some(Skip::NotAnAccountSubject)),
                Some(slot) => match self.state.apply(&slot, &message.payload) {
                    Ok(applied) => {
                        for touched in &applied.touched {
                            transaction.execute(
                                "INSERT INTO net_balances (account, balance) VALUES (?1, ?2)
                                 ON CONFLICT (account) DO UPDATE SET balance = excluded.balance",
                                params![touched.as_slice(), as_sql(self.state.balance(touched))],
                            )?;
                        }
                        if let Some(hold_id) = applied.hold
                            && let Some(hold) = self.state.hold(&hold_id)
                        {
                            store_hold(&transaction, &hold_id, hold)?;
                            outcome.holds.push(hold_id);
                        }
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
            transaction.execute(
                "INSERT INTO net_messages (sequence, subject, time_ms, payload, account, kind, skipped)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    as_sql(message.sequence),
                    message.subject,
                    message.time_ms,
                    message.payload,
                    account.as_ref().map(|a| a.as_slice()),
                    kind,
                    skipped.map(Skip::label),
                ],
            )?;
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

    /// An account's entries (written by it), newest first, before stream sequence `before`.
    pub fn history(
        &self,
        account: &AccountKey,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, ProjectionError> {
        let mut statement = self.connection.prepare(
            "SELECT sequence, time_ms, account, kind, skipped FROM net_messages
             WHERE account = ?1 AND sequence < ?2 ORDER BY sequence DESC LIMIT ?3",
        )?;
        let before = before.map(as_sql).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit.min(HISTORY_LIMIT_MAX)).unwrap_or(0);
        let rows = statement.query_map(params![account.as_slice(), before, limit], |row| {
            let account: Vec<u8> = row.get(2)?;
            Ok(HistoryRow {
                sequence: from_sql(row.get(0)?),
                time_ms: row.get(1)?,
                account: account.try_into().unwrap_or([0; 32]),
                kind: row.get(3)?,
                skipped: row.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
    transaction.execute(
        "INSERT INTO net_holds (hold, payer, payee, amount, task, deadline_ms, committed_at_ms, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (hold) DO UPDATE SET committed_at_ms = excluded.committed_at_ms,
                                          state = excluded.state",
        params![
            id.to_string(),
            hold.payer.as_slice(),
            hold.payee.as_slice(),
            as_sql(hold.amount),
            hold.task.to_string(),
            hold.deadline_ms,
            hold.commit.map(|(_, at)| at),
            state,
        ],
    )?;
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
        let history = reopened.history(&node.public_key(), None, 10).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].kind, "transfer");
        assert_eq!(history[1].skipped.as_deref(), Some("malformed"));
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
