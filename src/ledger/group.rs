//! Group commit: many writes in one SQLite transaction, so one fsync (WAL,
//! `synchronous=FULL`) carries them all. Each write runs inside its own savepoint: a write
//! that is refused (an overdraft, a settled escrow) is rolled back to its savepoint alone
//! and the others of the group stay; every write sees the ones before it in the group, so
//! the rules are checked against exactly the state its commit produces. If the transaction
//! itself fails (begin, commit, or SQLite rolling it back on a full disk), nothing of the
//! group is written and every write gets a copy of that error.
//!
//! [`GroupWriter`] holds the single writes (hold, release, refund, payment, batch, journal
//! entry, incoming payment); the `Ledger` methods of the same names are each one
//! `GroupWriter` call in a transaction of its own.

use rusqlite::{Connection, TransactionBehavior, params};
use uuid::Uuid;

use super::{EscrowState, Ledger, LedgerError, LedgerOp, NewTransfer, node_account};
use super::{reason_name, rules};
use crate::identity::PUBLIC_KEY_BYTES;
use crate::messages::{TransactionReason, Vibe, VibeTransaction};

/// How many transactions this ledger committed and how many writes they carried: with
/// group commit, far fewer commits (and so fsyncs) than writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// SQLite transactions committed by writes since the ledger was opened (each is one
    /// fsync of the WAL).
    pub commits: u64,
    /// Writes those transactions carried; in a group, a refused write counts too (it
    /// shared the commit and was answered after it).
    pub writes: u64,
}

/// The writes of a group, each applied to the group's open transaction. Obtained from
/// [`Ledger::write_group`].
pub struct GroupWriter<'a> {
    sql: &'a Connection,
    own: &'a str,
}

impl<'a> GroupWriter<'a> {
    pub(super) fn new(sql: &'a Connection, own: &'a str) -> GroupWriter<'a> {
        GroupWriter { sql, own }
    }

    /// Move `amount` from this node's account into escrow `escrow_id` (see
    /// [`Ledger::hold`]).
    pub fn hold(
        &self,
        escrow_id: Uuid,
        task_id: Option<Uuid>,
        amount: Vibe,
    ) -> Result<bool, LedgerError> {
        Ledger::hold_in(self.sql, self.own, escrow_id, task_id, amount)
    }

    /// Return escrow `escrow_id` to this node (see [`Ledger::refund`]).
    pub fn refund(&self, escrow_id: Uuid) -> Result<Vibe, LedgerError> {
        Ledger::settle_in(self.sql, self.own, escrow_id, EscrowState::Refunded, None)
    }

    /// Pay escrow `escrow_id` to `payee` and queue the payment `sign` makes for the amount
    /// held (see [`Ledger::release_signed`]).
    pub fn release_signed(
        &self,
        escrow_id: Uuid,
        payee: &[u8; PUBLIC_KEY_BYTES],
        sign: impl FnOnce(Vibe) -> VibeTransaction,
    ) -> Result<VibeTransaction, LedgerError> {
        let payee_account = node_account(payee);
        let amount = Ledger::settle_in(
            self.sql,
            self.own,
            escrow_id,
            EscrowState::Released,
            Some(&payee_account),
        )?;
        let signed = sign(amount);
        Ledger::queue_in(self.sql, &signed)?;
        Ok(signed)
    }

    /// Pay `amount` to `payee` directly and queue the signed payment (see
    /// [`Ledger::pay_signed`]).
    pub fn pay_signed(
        &self,
        id: Uuid,
        payee: &[u8; PUBLIC_KEY_BYTES],
        amount: Vibe,
        reason: TransactionReason,
        sign: impl FnOnce() -> VibeTransaction,
    ) -> Result<VibeTransaction, LedgerError> {
        let to = node_account(payee);
        Ledger::pay_in(self.sql, self.own, id, &to, amount, reason)?;
        let signed = sign();
        Ledger::queue_in(self.sql, &signed)?;
        Ok(signed)
    }

    /// Apply several operations, all or none (see [`Ledger::apply_batch`]).
    pub fn apply_batch(&self, operations: &[LedgerOp]) -> Result<(), LedgerError> {
        for operation in operations {
            Ledger::apply_op(self.sql, self.own, operation)?;
        }
        Ok(())
    }

    /// Record task `id` in the journal (see [`Ledger::journal_task`]).
    pub fn journal_task(&self, id: Uuid, open: bool, view: &str) -> Result<(), LedgerError> {
        self.sql.execute(
            "INSERT INTO tasks(id, open, view, interrupted, updated_at) VALUES (?1, ?2, ?3, NULL, ?4)
             ON CONFLICT(id) DO UPDATE SET open = ?2, view = ?3, interrupted = NULL, updated_at = ?4",
            params![id.to_string(), open, view, chrono::Utc::now().to_rfc3339()],
        )?;
        Ok(())
    }

    /// Credit this node for a payment another node signed (see [`Ledger::record_incoming`]).
    pub fn record_incoming(
        &self,
        transaction: &VibeTransaction,
        own_key: &[u8],
    ) -> Result<bool, LedgerError> {
        if !transaction.verify() {
            return Err(LedgerError::Forged);
        }
        if transaction.to.as_slice() != own_key {
            return Err(LedgerError::NotPayee);
        }
        if !Ledger::is_counterparty_in(self.sql, &transaction.from)? {
            return Err(LedgerError::Unsolicited);
        }
        let payer = node_account(&transaction.from);
        let id = rules::incoming_transfer_id(&transaction.from, &transaction.tx_id);
        Ledger::apply(
            self.sql,
            self.own,
            &NewTransfer {
                id,
                from: &payer,
                to: self.own,
                amount: transaction.amount,
                kind: "incoming",
                task_id: transaction.task_id,
                reason: Some(reason_name(transaction.reason)),
            },
        )
    }
}

impl Ledger {
    /// Commits and writes since this ledger was opened.
    pub fn write_stats(&self) -> WriteStats {
        self.stats
    }

    pub(super) fn count_commit(&mut self, writes: u64) {
        self.stats.commits += 1;
        self.stats.writes += writes;
    }

    /// Run `count` writes in one SQLite transaction and commit it once: `work(index,
    /// writer)` is write number `index`, in its own savepoint. Returns each write's result
    /// in order, all of them known to be on disk: a refused write was rolled back alone, and
    /// if the transaction could not be committed every write gets that error and nothing
    /// was written.
    pub fn write_group<T>(
        &mut self,
        count: usize,
        mut work: impl FnMut(usize, &GroupWriter<'_>) -> Result<T, LedgerError>,
    ) -> Vec<Result<T, LedgerError>> {
        if count == 0 {
            return Vec::new();
        }
        let failed = |error: LedgerError| (0..count).map(|_| Err(error.duplicate())).collect();
        let results = match self.try_group(count, &mut work) {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(writes = count, %error, "group commit failed; nothing written");
                return failed(error);
            }
        };
        self.count_commit(count as u64);
        if cfg!(debug_assertions)
            && let Err(error) = self.check_invariants()
        {
            return failed(error);
        }
        results
    }

    fn try_group<T>(
        &mut self,
        count: usize,
        work: &mut impl FnMut(usize, &GroupWriter<'_>) -> Result<T, LedgerError>,
    ) -> Result<Vec<Result<T, LedgerError>>, LedgerError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(count);
        {
            let writer = GroupWriter::new(&transaction, &self.own);
            for index in 0..count {
                transaction.execute_batch("SAVEPOINT group_write")?;
                let result = work(index, &writer);
                if transaction.is_autocommit() {
                    // SQLite rolled the whole transaction back (a full disk, an I/O error):
                    // the writes before this one are gone too.
                    return Err(match result {
                        Err(error) => error,
                        Ok(_) => LedgerError::Invariant(
                            "the group's transaction ended before its commit".into(),
                        ),
                    });
                }
                transaction.execute_batch(if result.is_ok() {
                    "RELEASE group_write"
                } else {
                    "ROLLBACK TO group_write; RELEASE group_write"
                })?;
                results.push(result);
            }
        }
        transaction.commit()?;
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_refused_write_leaves_the_rest_of_its_group_and_one_commit_carries_them() {
        let mut ledger = Ledger::open_in_memory(&[1; 32]).unwrap();
        let own = ledger.own_account().to_string();
        ledger
            .mint(Uuid::new_v4(), &own, Vibe::from_whole(10))
            .unwrap();
        let before = ledger.write_stats();
        let escrows: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        // 4 + 7 overdraws the 10 left after the first; 3 and 3 fit.
        let amounts = [4, 7, 3, 3].map(Vibe::from_whole);
        let results = ledger.write_group(4, |n, writer| writer.hold(escrows[n], None, amounts[n]));
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1],
            Err(LedgerError::Overdraft { available, .. }) if available == Vibe::from_whole(6)
        ));
        assert!(results[2].is_ok());
        assert!(results[3].is_ok());
        assert_eq!(ledger.own_balance().unwrap(), Vibe::ZERO);
        assert_eq!(ledger.escrow_state(escrows[1]).unwrap(), None);
        let after = ledger.write_stats();
        assert_eq!(after.commits - before.commits, 1);
        assert_eq!(after.writes - before.writes, 4);
        ledger.check_invariants().unwrap();
    }

    #[test]
    fn a_failed_batch_in_a_group_is_undone_whole() {
        let mut ledger = Ledger::open_in_memory(&[1; 32]).unwrap();
        let own = ledger.own_account().to_string();
        ledger
            .mint(Uuid::new_v4(), &own, Vibe::from_whole(10))
            .unwrap();
        let escrow = Uuid::new_v4();
        let results = ledger.write_group(2, |n, writer| match n {
            // The batch's hold fits, its second hold does not: neither stays.
            0 => writer.apply_batch(&[
                LedgerOp::Hold {
                    escrow,
                    amount: Vibe::from_whole(6),
                },
                LedgerOp::Hold {
                    escrow: Uuid::new_v4(),
                    amount: Vibe::from_whole(6),
                },
            ]),
            _ => writer.journal_task(escrow, true, "{}"),
        });
        assert!(matches!(results[0], Err(LedgerError::Overdraft { .. })));
        assert!(results[1].is_ok());
        assert_eq!(ledger.own_balance().unwrap(), Vibe::from_whole(10));
        assert_eq!(ledger.escrow_state(escrow).unwrap(), None);
        assert!(ledger.journaled_task(escrow).unwrap().is_some());
    }
}
