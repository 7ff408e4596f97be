//! The task journal: each task this node originated, as its owner last saw it, kept beside
//! the escrow that pays for it. A task's live state is in the distributor's memory; the
//! journal is what outlives the process. On start, tasks a previous run left open are
//! marked interrupted and every escrow still held is refunded, because no live task can
//! release it any more. The view is opaque JSON here: the distributor owns its shape.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{EscrowState, GroupWriter, Ledger, LedgerError};

/// A journaled task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournaledTask {
    /// The view as the distributor wrote it (JSON).
    pub view: String,
    /// Set when a restart cut the task short: why.
    pub interrupted: Option<String>,
}

/// What start-up recovery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Open journaled tasks marked interrupted because the node restarted under them.
    pub tasks_interrupted: u64,
    /// Held escrows of those tasks returned to this node's own account.
    pub escrows_refunded: u64,
}

impl Ledger {
    /// Record task `id` (`open` until it reaches a final state) with its view.
    pub fn journal_task(&mut self, id: Uuid, open: bool, view: &str) -> Result<(), LedgerError> {
        self.write(|sql, own| GroupWriter::new(sql, own).journal_task(id, open, view))
    }

    /// Task `id` from the journal.
    pub fn journaled_task(&self, id: Uuid) -> Result<Option<JournaledTask>, LedgerError> {
        Ok(self
            .connection
            .query_row(
                "SELECT view, interrupted FROM tasks WHERE id = ?1",
                [id.to_string()],
                |row| {
                    Ok(JournaledTask {
                        view: row.get(0)?,
                        interrupted: row.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Tasks still open in the journal.
    pub fn open_tasks(&self) -> Result<u64, LedgerError> {
        Ok(self
            .connection
            .query_row("SELECT COUNT(*) FROM tasks WHERE open = 1", [], |row| {
                row.get::<_, i64>(0)
            })?
            .max(0) as u64)
    }

    /// Start-up recovery, one SQLite transaction: open tasks become interrupted with
    /// `reason`, held escrows are refunded. Call before any task can start.
    pub fn recover_after_restart(&mut self, reason: &str) -> Result<Recovery, LedgerError> {
        self.write(|transaction, own| {
            let tasks_interrupted = transaction.execute(
                "UPDATE tasks SET open = 0, interrupted = ?1, updated_at = ?2 WHERE open = 1",
                params![reason, chrono::Utc::now().to_rfc3339()],
            )? as u64;
            let held: Vec<String> = {
                let mut statement =
                    transaction.prepare("SELECT id FROM escrows WHERE state = 'held'")?;
                statement
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?
            };
            let mut escrows_refunded = 0;
            for id in held {
                let Ok(escrow) = id.parse::<Uuid>() else {
                    return Err(LedgerError::Invariant(format!(
                        "escrow id {id} is not a uuid"
                    )));
                };
                Ledger::settle_in(transaction, own, escrow, EscrowState::Refunded, None)?;
                escrows_refunded += 1;
            }
            Ok(Recovery {
                tasks_interrupted,
                escrows_refunded,
            })
        })
    }
}
