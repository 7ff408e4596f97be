//! Reading the ledger: balances, counts, the invariant check, escrow states and the
//! transfer history.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{EscrowState, HISTORY_LIMIT_MAX, HistoryQuery, Ledger, LedgerError, TransferRecord};
use crate::messages::Vibe;

impl Ledger {
    /// This node's account name.
    pub fn own_account(&self) -> &str {
        &self.own
    }

    pub(super) fn balance_in(connection: &Connection, account: &str) -> Result<i64, LedgerError> {
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
}
