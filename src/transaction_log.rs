//! The transaction log's durable side: the panel hub's entries written to SQLite
//! (`transactions.sqlite3` in the data dir) so `/api/transactions` pages through history
//! that outlives the process.
//!
//! - [`TransactionStore`] owns a writer thread fed by a bounded queue: the hub hands an
//!   entry over with `try_send` and never waits for the disk. The writer takes what is
//!   queued (up to [`WRITE_BATCH_MAX`] entries) and commits it in one SQLite transaction,
//!   then keeps only the newest [`STORED_ENTRIES_MAX`] entries. A full queue loses the entry
//!   (the hub counts it), never stalls the hub.
//! - [`TransactionStore::flush`] answers once everything queued before it is committed; the
//!   node flushes at shutdown. Dropping the store lets the writer drain the queue and stop.
//! - Reads ([`read_page`]) open their own read-only connection, and run off the actors'
//!   threads (the hub's read runs on tokio's blocking pool).
//!
//! The functions taking a `Connection` are plain synchronous SQL, testable against a file
//! in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, params};
use uuid::Uuid;

use crate::protocol::panel::{TransactionDetails, TransactionLogEntry};

/// The file in the data dir that keeps the transaction log.
pub const TRANSACTION_LOG_FILE: &str = "transactions.sqlite3";
/// Entries kept on disk; older ones are deleted as new ones come.
pub const STORED_ENTRIES_MAX: u64 = 100_000;
/// Entries queued for the writer before new ones are lost.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Entries committed in one SQLite transaction at most.
pub const WRITE_BATCH_MAX: usize = 512;
/// How long a reader or the writer waits for the other's lock, in milliseconds.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// What can go wrong with the stored log.
#[derive(Debug, thiserror::Error)]
pub enum TransactionStoreError {
    /// SQLite refused (open, schema, query or write).
    #[error("transaction log database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode into an entry.
    #[error("stored transaction {seq} does not decode: {reason}")]
    Decode {
        /// The row's `seq`.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
    /// An entry does not encode for storage.
    #[error("transaction {seq} does not encode: {reason}")]
    Encode {
        /// The entry's `seq`.
        seq: u64,
        /// What was wrong.
        reason: String,
    },
    /// The writer thread could not start or has stopped.
    #[error("the transaction log writer is not running")]
    WriterGone,
    /// The read did not finish (its blocking task was cancelled or panicked).
    #[error("the transaction log read did not finish: {0}")]
    Read(String),
}

enum Command {
    Write(Box<TransactionLogEntry>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The writer's handle: queue entries, flush, and where readers open the file.
#[derive(Debug)]
pub struct TransactionStore {
    path: PathBuf,
    queue: SyncSender<Command>,
}

/// What the store held at open, for the hub to continue from.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: TransactionStore,
    /// The newest entries, oldest first (at most the `recent` asked for).
    pub recent: Vec<TransactionLogEntry>,
    /// The highest `seq` stored (0 for an empty log).
    pub last_seq: u64,
}

impl TransactionStore {
    /// Open (or create) the log at `path`, read its newest `recent` entries, and start the
    /// writer thread.
    pub fn open(path: &Path, recent: usize) -> Result<Opened, TransactionStoreError> {
        let connection = open_writer(path)?;
        let last_seq = last_seq(&connection)?;
        let mut newest = read_page_with(&connection, recent, None, None)?;
        newest.reverse();
        let (queue, receiver) = sync_channel(WRITE_QUEUE_MAX);
        std::thread::Builder::new()
            .name("apn-transaction-log".into())
            .spawn(move || write_loop(connection, receiver))
            .map_err(|_| TransactionStoreError::WriterGone)?;
        Ok(Opened {
            store: TransactionStore {
                path: path.to_path_buf(),
                queue,
            },
            recent: newest,
            last_seq,
        })
    }

    /// Queue `entry` for the writer. `false` when the queue is full or the writer stopped:
    /// the entry is not stored.
    pub fn write(&self, entry: TransactionLogEntry) -> bool {
        match self.queue.try_send(Command::Write(Box::new(entry))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// A receiver that resolves once every entry queued before this call is committed
    /// (or errs when the writer is gone). Never blocks.
    pub fn flush(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        // A full queue: the flush waits its turn on a thread of its own rather than here.
        if let Err(TrySendError::Full(command)) = self.queue.try_send(Command::Flush(sender)) {
            let queue = self.queue.clone();
            std::thread::spawn(move || {
                let _ = queue.send(command);
            });
        }
        receiver
    }

    /// The database file, for readers.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_writer(path: &Path) -> Result<Connection, TransactionStoreError> {
    let connection = Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // A log for people, not money: a crash may lose the last commits, never corrupt.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS transactions (
             seq INTEGER PRIMARY KEY,
             id TEXT NOT NULL,
             timestamp TEXT NOT NULL,
             type TEXT NOT NULL,
             details TEXT NOT NULL,
             description TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS transactions_by_type ON transactions (type, seq);",
    )?;
    Ok(connection)
}

fn last_seq(connection: &Connection) -> Result<u64, TransactionStoreError> {
    let seq: Option<i64> =
        connection.query_row("SELECT MAX(seq) FROM transactions", [], |row| row.get(0))?;
    Ok(seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0))
}

/// The writer thread: batch, commit, prune; answer flushes after what precedes them.
fn write_loop(mut connection: Connection, queue: Receiver<Command>) {
    let mut batch: Vec<TransactionLogEntry> = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut flushes = Vec::new();
    // Blocks until there is work; ends when every sender is gone and the queue is empty.
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Write(entry) => batch.push(*entry),
                Command::Flush(done) => flushes.push(done),
            }
            if batch.len() >= WRITE_BATCH_MAX {
                break;
            }
            next = match queue.try_recv() {
                Ok(command) => Some(command),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
            };
        }
        if !batch.is_empty() {
            if let Err(e) = insert_batch(&mut connection, &batch, STORED_ENTRIES_MAX) {
                tracing::warn!(error = %e, entries = batch.len(), "transaction log entries not stored");
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Insert `entries` in one SQLite transaction, then delete all but the newest `keep`.
pub fn insert_batch(
    connection: &mut Connection,
    entries: &[TransactionLogEntry],
    keep: u64,
) -> Result<(), TransactionStoreError> {
    let transaction = connection.transaction()?;
    {
        let mut insert = transaction.prepare_cached(
            "INSERT OR IGNORE INTO transactions (seq, id, timestamp, type, details, description)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for entry in entries {
            let (kind, details) =
                split_details(&entry.details).map_err(|reason| TransactionStoreError::Encode {
                    seq: entry.seq,
                    reason,
                })?;
            insert.execute(params![
                i64::try_from(entry.seq).unwrap_or(i64::MAX),
                entry.id.to_string(),
                entry.timestamp.to_rfc3339(),
                kind,
                details,
                entry.description,
            ])?;
        }
    }
    transaction.execute(
        "DELETE FROM transactions WHERE seq <= (SELECT MAX(seq) FROM transactions) - ?1",
        params![i64::try_from(keep).unwrap_or(i64::MAX)],
    )?;
    transaction.commit()?;
    Ok(())
}

/// The entry's `type` name and its `details` as JSON text.
fn split_details(details: &TransactionDetails) -> Result<(String, String), String> {
    let value = serde_json::to_value(details).map_err(|e| e.to_string())?;
    let kind = value["type"].as_str().unwrap_or_default().to_string();
    Ok((kind, value["details"].to_string()))
}

/// Stored entries, newest first: at most `limit`, with `seq` below `before`, of type `kind`.
/// Opens a read-only connection of its own; blocking, so call it off the actors' threads.
pub fn read_page(
    path: &Path,
    limit: usize,
    before: Option<u64>,
    kind: Option<&str>,
) -> Result<Vec<TransactionLogEntry>, TransactionStoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    read_page_with(&connection, limit, before, kind)
}

fn read_page_with(
    connection: &Connection,
    limit: usize,
    before: Option<u64>,
    kind: Option<&str>,
) -> Result<Vec<TransactionLogEntry>, TransactionStoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let mut query = connection.prepare_cached(
        "SELECT seq, id, timestamp, type, details, description FROM transactions
         WHERE seq < ?1 AND (?2 IS NULL OR type = ?2)
         ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = query.query_map(
        params![before, kind, i64::try_from(limit).unwrap_or(i64::MAX)],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, String>(5)?,
            ))
        },
    )?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, id, timestamp, kind, details, description) = row?;
        let seq = u64::try_from(seq).unwrap_or(0);
        let decode = |reason: String| TransactionStoreError::Decode { seq, reason };
        let id = Uuid::parse_str(&id).map_err(|e| decode(e.to_string()))?;
        let timestamp = DateTime::parse_from_rfc3339(&timestamp)
            .map_err(|e| decode(e.to_string()))?
            .with_timezone(&Utc);
        let details: serde_json::Value =
            serde_json::from_str(&details).map_err(|e| decode(e.to_string()))?;
        let details: TransactionDetails =
            serde_json::from_value(serde_json::json!({ "type": kind, "details": details }))
                .map_err(|e| decode(e.to_string()))?;
        entries.push(TransactionLogEntry {
            id,
            seq,
            timestamp,
            details,
            description,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::messages::Vibe;
    use crate::protocol::panel::{ExecutionDetails, VibeEarnedDetails};

    fn entry(seq: u64) -> TransactionLogEntry {
        let mut entry = TransactionLogEntry::new(
            TransactionDetails::ExecutionCompleted(ExecutionDetails {
                task_id: Uuid::new_v4(),
                task_title: format!("task {seq}"),
                executor_node: Some("apn_1a2b3c4d".into()),
                execution_time_ms: Some(1200),
                files_modified: Some(2),
                vibe_paid: Some(Vibe::from_micros(2_500_000)),
                ..ExecutionDetails::default()
            }),
            format!("task {seq} done"),
        );
        entry.seq = seq;
        entry
    }

    #[test]
    fn entries_serialize_in_the_seed_shape_and_round_trip() {
        let original = entry(7);
        let value = serde_json::to_value(&original).unwrap();
        assert_eq!(value["type"], "execution_completed");
        assert_eq!(value["details"]["task_title"], "task 7");
        assert_eq!(value["details"]["vibe_paid"], "2.5");
        assert_eq!(value["details"]["execution_time_ms"], 1200);
        assert!(value["details"].get("origin_node").is_none());
        assert_eq!(value["description"], "task 7 done");
        let back: TransactionLogEntry = serde_json::from_value(value).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn a_batch_is_stored_paged_filtered_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRANSACTION_LOG_FILE);
        let mut connection = open_writer(&path).unwrap();
        let mut entries: Vec<_> = (1..=10).map(entry).collect();
        let mut earned = TransactionLogEntry::new(
            TransactionDetails::VibeEarned(VibeEarnedDetails {
                vibe_earned: Vibe::from_micros(1),
                peer_node: None,
                task_id: None,
                purpose: None,
            }),
            "earned",
        );
        earned.seq = 11;
        entries.push(earned.clone());
        insert_batch(&mut connection, &entries, 8).unwrap();
        let all = read_page(&path, 100, None, None).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![11, 10, 9, 8, 7, 6, 5, 4]
        );
        assert_eq!(all[1], entries[9]);
        let page = read_page(&path, 2, Some(9), None).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 7]);
        let only = read_page(&path, 10, None, Some("vibe_earned")).unwrap();
        assert_eq!(only, vec![earned]);
        assert_eq!(last_seq(&connection).unwrap(), 11);
    }

    #[actix_rt::test]
    async fn the_writer_commits_before_a_flush_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRANSACTION_LOG_FILE);
        let opened = TransactionStore::open(&path, 10).unwrap();
        assert_eq!(opened.last_seq, 0);
        for seq in 1..=3 {
            assert!(opened.store.write(entry(seq)));
        }
        opened.store.flush().await.unwrap();
        assert_eq!(read_page(&path, 10, None, None).unwrap().len(), 3);
        drop(opened);
        let reopened = TransactionStore::open(&path, 2).unwrap();
        assert_eq!(reopened.last_seq, 3);
        assert_eq!(
            reopened.recent.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
