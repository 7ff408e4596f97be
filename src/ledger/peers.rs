//! What the ledger keeps about peers besides money: the counterparties whose payments
//! are accepted, and the outcome counts behind each peer's reputation score.

use chrono::Utc;
use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, Outcome, ReputationCounts, rules};

impl Ledger {
    /// Remember that this node has a relationship with `peer_key` (it admitted a task of
    /// that peer's): from now on its payments (task releases, bandwidth) are accepted.
    pub fn record_counterparty(&mut self, peer_key: &[u8]) -> Result<(), LedgerError> {
        self.connection.execute(
            "INSERT OR IGNORE INTO counterparties(peer, since) VALUES (?1, ?2)",
            params![hex::encode(peer_key), Utc::now().to_rfc3339()],
        )?;
        self.count_commit(1);
        Ok(())
    }

    /// Whether payments from `peer_key` are accepted.
    pub fn is_counterparty(&self, peer_key: &[u8]) -> Result<bool, LedgerError> {
        Ledger::is_counterparty_in(&self.connection, peer_key)
    }

    pub(super) fn is_counterparty_in(
        connection: &rusqlite::Connection,
        peer_key: &[u8],
    ) -> Result<bool, LedgerError> {
        Ok(connection
            .query_row(
                "SELECT 1 FROM counterparties WHERE peer = ?1",
                [hex::encode(peer_key)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
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
        self.count_commit(1);
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
