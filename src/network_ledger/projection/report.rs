//! What `apn ledger` and `GET /api/ledger` show of one account: read from the projection's
//! tables (balances, escrows, every message with its verdict, counterparty and amount), by
//! the node's own connection or by a read-only one beside a running node.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

use super::{HISTORY_LIMIT_MAX, ProjectionError, as_sql, from_sql};
use crate::messages::Vibe;
use crate::network_ledger::entry::AccountKey;

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

pub(super) fn report(
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

pub(super) fn history(
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

pub(super) fn open_holds(
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
