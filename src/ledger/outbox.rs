//! The payment outbox. Every payment this node signs (an escrow released to an executor, a
//! bandwidth share) is stored in the same SQLite transaction as the settlement that debits
//! it, and stays there until the payee's receipt arrives. A payee that is down, a relay
//! that restarts, or this node dying right after it settled loses nothing: the payment is
//! sent again, and the payee's ledger ignores a repeat by its id.

use rusqlite::{OptionalExtension, params};
use uuid::Uuid;

use super::{GroupWriter, Ledger, LedgerError};
use crate::identity::PUBLIC_KEY_BYTES;
use crate::messages::{TransactionReason, Vibe, VibeTransaction};

/// First retry this long after a payment was signed; the receipt normally beats it.
const RETRY_FIRST_MS: i64 = 2_000;
/// Retries back off up to this interval.
const RETRY_MAX_MS: i64 = 30_000;

/// A payment waiting for its payee's receipt.
#[derive(Debug, Clone)]
pub struct PendingPayment {
    /// The signed payment, resent unchanged until the payee acknowledges it.
    pub transaction: VibeTransaction,
    /// Deliveries tried so far (the first, immediate one is not counted).
    pub attempts: u32,
}

/// When attempt number `attempts + 1` is due after `now_ms`: doubling, capped.
pub(crate) fn next_attempt_ms(now_ms: i64, attempts: u32) -> i64 {
    let backoff = RETRY_FIRST_MS.saturating_mul(1_i64 << attempts.min(16));
    now_ms.saturating_add(backoff.min(RETRY_MAX_MS))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Ledger {
    /// Pay escrow `escrow_id` to `payee` and queue the payment `sign` makes for the amount
    /// held, both in one SQLite transaction. Exactly once per escrow.
    pub fn release_signed(
        &mut self,
        escrow_id: Uuid,
        payee: &[u8; PUBLIC_KEY_BYTES],
        sign: impl FnOnce(Vibe) -> VibeTransaction,
    ) -> Result<VibeTransaction, LedgerError> {
        self.write(|sql, own| GroupWriter::new(sql, own).release_signed(escrow_id, payee, sign))
    }

    /// Pay `amount` to `payee` directly and queue the signed payment, in one SQLite
    /// transaction. A retry with the same `id` is a no-op that returns the queued payment.
    pub fn pay_signed(
        &mut self,
        id: Uuid,
        payee: &[u8; PUBLIC_KEY_BYTES],
        amount: Vibe,
        reason: TransactionReason,
        sign: impl FnOnce() -> VibeTransaction,
    ) -> Result<VibeTransaction, LedgerError> {
        self.write(|sql, own| {
            GroupWriter::new(sql, own).pay_signed(id, payee, amount, reason, sign)
        })
    }

    pub(super) fn queue_in(
        transaction: &rusqlite::Connection,
        signed: &VibeTransaction,
    ) -> Result<(), LedgerError> {
        let mut body = Vec::new();
        ciborium::into_writer(signed, &mut body)
            .map_err(|e| LedgerError::Encoding(e.to_string()))?;
        transaction.execute(
            "INSERT OR IGNORE INTO outbox(tx_id, payee, body, attempts, next_attempt_ms)
             VALUES (?1, ?2, ?3, 0, ?4)",
            params![
                signed.tx_id.to_string(),
                hex::encode(&signed.to),
                body,
                next_attempt_ms(now_ms(), 0)
            ],
        )?;
        Ok(())
    }

    /// Up to `limit` payments whose next delivery is due, each pushed back by its backoff.
    pub fn take_due_payments(&mut self, limit: usize) -> Result<Vec<PendingPayment>, LedgerError> {
        let now = now_ms();
        self.write(|transaction, _| {
            let rows: Vec<(String, Vec<u8>, u32)> = {
                let mut statement = transaction.prepare(
                    "SELECT tx_id, body, attempts FROM outbox WHERE next_attempt_ms <= ?1
                     ORDER BY next_attempt_ms LIMIT ?2",
                )?;
                statement
                    .query_map(params![now, limit as i64], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })?
                    .collect::<Result<_, _>>()?
            };
            let mut due = Vec::with_capacity(rows.len());
            for (tx_id, body, attempts) in rows {
                let attempts = attempts.saturating_add(1);
                transaction.execute(
                    "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3 WHERE tx_id = ?1",
                    params![tx_id, attempts, next_attempt_ms(now, attempts)],
                )?;
                let transaction: VibeTransaction = ciborium::from_reader(body.as_slice())
                    .map_err(|e| LedgerError::Encoding(format!("outbox row {tx_id}: {e}")))?;
                due.push(PendingPayment {
                    transaction,
                    attempts,
                });
            }
            Ok(due)
        })
    }

    /// The payee `payee_key` confirmed payment `tx_id`: it leaves the outbox. A receipt
    /// from anyone else changes nothing. Returns whether a payment was waiting.
    pub fn confirm_delivery(&mut self, tx_id: Uuid, payee_key: &[u8]) -> Result<bool, LedgerError> {
        let removed = self.connection.execute(
            "DELETE FROM outbox WHERE tx_id = ?1 AND payee = ?2",
            params![tx_id.to_string(), hex::encode(payee_key)],
        )?;
        self.count_commit(1);
        Ok(removed > 0)
    }

    /// Payments still waiting for a receipt.
    pub fn undelivered_payments(&self) -> Result<u64, LedgerError> {
        Ok(self
            .connection
            .query_row("SELECT COUNT(*) FROM outbox", [], |row| {
                row.get::<_, i64>(0)
            })
            .optional()?
            .unwrap_or(0)
            .max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_and_stops_at_thirty() {
        assert_eq!(next_attempt_ms(0, 0), 2_000);
        assert_eq!(next_attempt_ms(0, 1), 4_000);
        assert_eq!(next_attempt_ms(0, 3), 16_000);
        assert_eq!(next_attempt_ms(0, 4), 30_000);
        assert_eq!(next_attempt_ms(0, 200), 30_000);
        assert_eq!(next_attempt_ms(i64::MAX - 1, 5), i64::MAX);
    }
}
