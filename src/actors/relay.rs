//! `ExecutionRelay`: the origin side of execution streams. The distributor hands it every
//! decrypted update of this node's tasks (remote or local); it keeps a bounded history per
//! task (for the panel, the API and late subscribers) and fans updates out to subscribers
//! (the SSE endpoint, tests, the CLI's follow mode).
//!
//! The executor side of streaming (batching logs, sending with backpressure) lives in the
//! run task (`executor_run.rs`), one per execution, which owns the execution's Noise
//! session; keeping it there avoids sharing the session between actors.
//!
//! Log lines are also written to SQLite (`executions.sqlite3` in the data dir, bounded per
//! task, flushed in batches) so a task's logs outlive the node process.
//!
//! In: `RecordUpdate`, `SubscribeExecution`, `GetExecutionLogs`. Out: `ExecutionEvent` to
//! subscribers (try_send: a full subscriber loses events, never stalls the relay).

use std::collections::{HashMap, VecDeque};

use actix::prelude::*;
use uuid::Uuid;

use crate::market::LogLine;
use crate::protocol::panel::PanelEvent;
use crate::protocol::panel::PanelSender;

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::execution::{
    ExecutionEvent, GetExecutionLogs, RecordUpdate, SubscribeExecution,
};

/// Log lines kept per task; older lines are dropped (the count is kept).
pub const LOG_LINES_PER_TASK_MAX: usize = 10_000;
/// Tasks whose history is kept; the oldest is forgotten first.
pub const TASKS_KEPT_MAX: usize = 1_000;
/// Subscribers per task.
pub const SUBSCRIBERS_PER_TASK_MAX: usize = 64;

#[derive(Default)]
struct TaskStream {
    history: VecDeque<ExecutionEvent>,
    dropped_lines: u64,
    subscribers: Vec<Recipient<ExecutionEvent>>,
}

/// The file in the data dir that keeps execution logs.
pub const LOG_STORE_FILE: &str = "executions.sqlite3";
/// How often buffered log lines are written.
const LOG_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// The `ExecutionRelay` role.
#[derive(Default)]
pub struct ExecutionRelay {
    streams: HashMap<Uuid, TaskStream>,
    order: VecDeque<Uuid>,
    panel: Option<PanelSender>,
    store: Option<rusqlite::Connection>,
    pending: Vec<(Uuid, LogLine)>,
    stored_per_task: HashMap<Uuid, usize>,
}

impl ExecutionRelay {
    /// A relay that also feeds the panel (no log store).
    pub fn new(panel: Option<PanelSender>) -> Self {
        ExecutionRelay {
            panel,
            ..ExecutionRelay::default()
        }
    }

    /// A relay that keeps logs in `path` too.
    pub fn with_store(
        panel: Option<PanelSender>,
        path: &std::path::Path,
    ) -> Result<Self, rusqlite::Error> {
        let store = rusqlite::Connection::open(path)?;
        store.pragma_update(None, "journal_mode", "WAL")?;
        // Logs are not money: NORMAL durability is enough.
        store.pragma_update(None, "synchronous", "NORMAL")?;
        store.execute_batch(
            "CREATE TABLE IF NOT EXISTS log_lines (
                 task_id TEXT NOT NULL, at_ms INTEGER NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS log_lines_by_task ON log_lines(task_id);",
        )?;
        Ok(ExecutionRelay {
            panel,
            store: Some(store),
            ..ExecutionRelay::default()
        })
    }

    fn flush(&mut self) {
        let Some(store) = self.store.as_mut() else {
            self.pending.clear();
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        let result = (|| -> Result<(), rusqlite::Error> {
            let transaction = store.transaction()?;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO log_lines (task_id, at_ms, stream, line) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (task_id, line) in &self.pending {
                    insert.execute(rusqlite::params![
                        task_id.to_string(),
                        line.at_ms,
                        line.stream,
                        line.line
                    ])?;
                }
            }
            transaction.commit()
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, lines = self.pending.len(), "execution logs not stored");
        }
        self.pending.clear();
    }

    fn stored_lines(&self, task_id: Uuid) -> Option<Vec<LogLine>> {
        let store = self.store.as_ref()?;
        let mut statement = store
            .prepare("SELECT at_ms, stream, line FROM log_lines WHERE task_id = ?1 ORDER BY rowid")
            .ok()?;
        let rows = statement
            .query_map([task_id.to_string()], |row| {
                // The stream names the line's type (`LogLine::new` derives it), so the
                // store needs no column of its own for it.
                Ok(LogLine::new(
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get(0)?,
                ))
            })
            .ok()?;
        rows.collect::<Result<Vec<_>, _>>().ok()
    }
}

impl Actor for ExecutionRelay {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(LOG_FLUSH_INTERVAL, |actor, _| actor.flush());
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        self.flush();
        Running::Stop
    }
}

fn task_of(event: &ExecutionEvent) -> Uuid {
    match event {
        ExecutionEvent::Started { task_id, .. }
        | ExecutionEvent::Progress { task_id, .. }
        | ExecutionEvent::Log { task_id, .. }
        | ExecutionEvent::Finished { task_id, .. } => *task_id,
    }
}

impl ExecutionRelay {
    fn stream(&mut self, task_id: Uuid) -> &mut TaskStream {
        if !self.streams.contains_key(&task_id) {
            if self.order.len() >= TASKS_KEPT_MAX
                && let Some(oldest) = self.order.pop_front()
            {
                self.streams.remove(&oldest);
                self.stored_per_task.remove(&oldest);
            }
            self.order.push_back(task_id);
        }
        self.streams.entry(task_id).or_default()
    }
}

impl Handler<RecordUpdate> for ExecutionRelay {
    type Result = ();

    fn handle(&mut self, RecordUpdate(event): RecordUpdate, _ctx: &mut Self::Context) {
        if let ExecutionEvent::Log { task_id, line, .. } = &event {
            let stored = self.stored_per_task.entry(*task_id).or_default();
            if *stored < LOG_LINES_PER_TASK_MAX && self.store.is_some() {
                *stored += 1;
                self.pending.push((*task_id, line.clone()));
            }
        }
        if let Some(panel) = &self.panel {
            panel.publish(PanelEvent::Execution(event.clone()));
        }
        let stream = self.stream(task_of(&event));
        stream.subscribers.retain(|s| s.connected());
        for subscriber in &stream.subscribers {
            let _ = subscriber.try_send(event.clone());
        }
        if stream.history.len() >= LOG_LINES_PER_TASK_MAX {
            stream.history.pop_front();
            stream.dropped_lines += 1;
        }
        stream.history.push_back(event);
    }
}

impl Handler<SubscribeExecution> for ExecutionRelay {
    type Result = MessageResult<SubscribeExecution>;

    fn handle(&mut self, request: SubscribeExecution, _ctx: &mut Self::Context) -> Self::Result {
        let stream = self.stream(request.task_id);
        stream.subscribers.retain(|s| s.connected());
        if stream.subscribers.len() < SUBSCRIBERS_PER_TASK_MAX {
            stream.subscribers.push(request.subscriber);
        }
        MessageResult(stream.history.iter().cloned().collect())
    }
}

impl Handler<GetExecutionLogs> for ExecutionRelay {
    type Result = MessageResult<GetExecutionLogs>;

    fn handle(&mut self, request: GetExecutionLogs, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        if let Some(lines) = self.stored_lines(request.0) {
            return MessageResult(lines);
        }
        let lines = self
            .streams
            .get(&request.0)
            .map(|stream| {
                stream
                    .history
                    .iter()
                    .filter_map(|event| match event {
                        ExecutionEvent::Log { line, .. } => Some(line.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        MessageResult(lines)
    }
}
