//! Writing the ledger: every movement is one transfer applied inside one SQLite
//! transaction (`apply`, `write`), and the operations built on it: batches, direct
//! payments, grants from the mint, escrow hold, release and refund, and payments from peers.

use chrono::Utc;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    EscrowState, GroupWriter, Ledger, LedgerError, LedgerOp, MINT, NewTransfer, escrow_account,
    node_account, reason_name, rules,
};
use crate::messages::{TransactionReason, Vibe, VibeTransaction};

impl Ledger {
    /// Apply one transfer inside `transaction`. Returns false when the same transfer was
    /// already applied (idempotent retry).
    pub(super) fn apply(
        transaction: &rusqlite::Connection,
        own: &str,
        new: &NewTransfer<'_>,
    ) -> Result<bool, LedgerError> {
        if new.amount == Vibe::ZERO {
            return Err(LedgerError::ZeroAmount);
        }
        let existing: Option<(String, String, i64, String)> = transaction
            .query_row(
                "SELECT from_account, to_account, amount, kind FROM transfers WHERE id = ?1",
                [new.id.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .optional()?;
        if let Some(existing) = existing {
            let same = rules::same_transfer(
                (&existing.0, &existing.1, existing.2, &existing.3),
                (new.from, new.to, new.amount.micros() as i64, new.kind),
            );
            return if same {
                Ok(false)
            } else {
                Err(LedgerError::TransferConflict(new.id))
            };
        }
        let available = Ledger::balance_in(transaction, new.from)?;
        let may_go_negative = rules::may_go_negative(new.from, own);
        rules::check_debit(available, new.amount, may_go_negative).map_err(|_| {
            LedgerError::Overdraft {
                account: new.from.to_string(),
                needed: new.amount,
                available: Vibe::from_micros(available.max(0) as u64),
            }
        })?;
        let overflow = || LedgerError::Overflow {
            account: new.to.to_string(),
            amount: new.amount,
        };
        rules::check_credit(Ledger::balance_in(transaction, new.to)?, new.amount)
            .map_err(|_| overflow())?;
        let amount = i64::try_from(new.amount.micros()).map_err(|_| overflow())?;
        transaction.execute(
            "INSERT INTO accounts(name, balance) VALUES (?1, -?2)
             ON CONFLICT(name) DO UPDATE SET balance = balance - ?2",
            params![new.from, amount],
        )?;
        transaction.execute(
            "INSERT INTO accounts(name, balance) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET balance = balance + ?2",
            params![new.to, amount],
        )?;
        let seq: i64 = transaction.query_row(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM transfers",
            [],
            |row| row.get(0),
        )?;
        transaction.execute(
            "INSERT INTO transfers(id, from_account, to_account, amount, kind, task_id, reason, created_at, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.id.to_string(),
                new.from,
                new.to,
                amount,
                new.kind,
                new.task_id.map(|t| t.to_string()),
                new.reason,
                Utc::now().to_rfc3339(),
                seq
            ],
        )?;
        Ok(true)
    }

    pub(super) fn write<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction<'_>, &str) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let result = work(&transaction, &self.own)?;
        transaction.commit()?;
        self.count_commit(1);
        if cfg!(debug_assertions) {
            self.check_invariants()?;
        }
        Ok(result)
    }

    /// Apply several operations in one SQLite transaction: all of them or none. Far fewer
    /// fsyncs than one transaction each (see the `ledger` benchmark).
    pub fn apply_batch(&mut self, operations: &[LedgerOp]) -> Result<(), LedgerError> {
        self.write(|transaction, own| GroupWriter::new(transaction, own).apply_batch(operations))
    }

    pub(super) fn apply_op(
        transaction: &rusqlite::Connection,
        own: &str,
        operation: &LedgerOp,
    ) -> Result<(), LedgerError> {
        match operation {
            LedgerOp::Mint { id, amount } => {
                Ledger::apply(
                    transaction,
                    own,
                    &NewTransfer {
                        id: *id,
                        from: MINT,
                        to: own,
                        amount: *amount,
                        kind: "mint",
                        task_id: None,
                        reason: None,
                    },
                )?;
            }
            LedgerOp::Hold { escrow, amount } => {
                Ledger::hold_in(transaction, own, *escrow, None, *amount).map(|_| ())?
            }
            LedgerOp::Release { escrow, payee } => Ledger::settle_in(
                transaction,
                own,
                *escrow,
                EscrowState::Released,
                Some(&node_account(payee)),
            )
            .map(|_| ())?,
            LedgerOp::Refund { escrow } => {
                Ledger::settle_in(transaction, own, *escrow, EscrowState::Refunded, None)
                    .map(|_| ())?
            }
        }
        Ok(())
    }

    /// Pay `amount` from this node to `payee` directly (bandwidth and relay settlements).
    pub fn pay(
        &mut self,
        id: Uuid,
        payee: &[u8],
        amount: Vibe,
        reason: TransactionReason,
    ) -> Result<bool, LedgerError> {
        let to = node_account(payee);
        self.write(|transaction, own| Ledger::pay_in(transaction, own, id, &to, amount, reason))
    }

    pub(super) fn pay_in(
        transaction: &rusqlite::Connection,
        own: &str,
        id: Uuid,
        to: &str,
        amount: Vibe,
        reason: TransactionReason,
    ) -> Result<bool, LedgerError> {
        Ledger::apply(
            transaction,
            own,
            &NewTransfer {
                id,
                from: own,
                to,
                amount,
                kind: "payment",
                task_id: None,
                reason: Some(reason_name(reason)),
            },
        )
    }

    /// Grant `amount` from the mint to `to` (explicit grants only).
    pub fn mint(&mut self, id: Uuid, to: &str, amount: Vibe) -> Result<bool, LedgerError> {
        self.write(|transaction, own| {
            Ledger::apply(
                transaction,
                own,
                &NewTransfer {
                    id,
                    from: MINT,
                    to,
                    amount,
                    kind: "mint",
                    task_id: None,
                    reason: None,
                },
            )
        })
    }

    /// Move `amount` from this node's account into escrow `escrow_id`.
    pub fn hold(
        &mut self,
        escrow_id: Uuid,
        task_id: Option<Uuid>,
        amount: Vibe,
    ) -> Result<bool, LedgerError> {
        self.write(|transaction, own| Ledger::hold_in(transaction, own, escrow_id, task_id, amount))
    }

    pub(super) fn hold_in(
        transaction: &rusqlite::Connection,
        own: &str,
        escrow_id: Uuid,
        task_id: Option<Uuid>,
        amount: Vibe,
    ) -> Result<bool, LedgerError> {
        let escrow = escrow_account(&escrow_id);
        let applied = Ledger::apply(
            transaction,
            own,
            &NewTransfer {
                id: escrow_id,
                from: own,
                to: &escrow,
                amount,
                kind: "hold",
                task_id,
                reason: Some("TaskExecution"),
            },
        )?;
        if applied {
            transaction.execute(
                "INSERT INTO escrows(id, payer, amount, state) VALUES (?1, ?2, ?3, 'held')",
                params![escrow_id.to_string(), own, amount.micros() as i64],
            )?;
        }
        Ok(applied)
    }

    fn settle_escrow(
        &mut self,
        escrow_id: Uuid,
        to_state: EscrowState,
        payee: Option<&str>,
    ) -> Result<Vibe, LedgerError> {
        self.write(|transaction, own| {
            Ledger::settle_in(transaction, own, escrow_id, to_state, payee)
        })
    }

    pub(super) fn settle_in(
        transaction: &rusqlite::Connection,
        own: &str,
        escrow_id: Uuid,
        to_state: EscrowState,
        payee: Option<&str>,
    ) -> Result<Vibe, LedgerError> {
        let row: Option<(String, i64, String)> = transaction
            .query_row(
                "SELECT payer, amount, state FROM escrows WHERE id = ?1",
                [escrow_id.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        let (payer, amount, state) = row.ok_or(LedgerError::NoEscrow(escrow_id))?;
        let state = EscrowState::from_name(&state);
        rules::escrow_transition(state, to_state).map_err(|state| LedgerError::EscrowSettled {
            id: escrow_id,
            state,
        })?;
        let amount = Vibe::from_micros(amount as u64);
        let escrow = escrow_account(&escrow_id);
        let (to, kind) = match to_state {
            EscrowState::Released => (payee.unwrap_or(own).to_string(), "release"),
            _ => (payer, "refund"),
        };
        // Settlement ids derive from the escrow: a retried release is the same transfer.
        let id = rules::settlement_id(&escrow_id, kind);
        Ledger::apply(
            transaction,
            own,
            &NewTransfer {
                id,
                from: &escrow,
                to: &to,
                amount,
                kind,
                task_id: None,
                reason: Some("TaskExecution"),
            },
        )?;
        transaction.execute(
            "UPDATE escrows SET state = ?2 WHERE id = ?1",
            params![escrow_id.to_string(), to_state.name()],
        )?;
        Ok(amount)
    }

    /// Pay escrow `escrow_id` to `payee_key`. Exactly once.
    pub fn release(&mut self, escrow_id: Uuid, payee_key: &[u8]) -> Result<Vibe, LedgerError> {
        let payee = node_account(payee_key);
        self.settle_escrow(escrow_id, EscrowState::Released, Some(&payee))
    }

    /// Return escrow `escrow_id` to this node. Exactly once.
    pub fn refund(&mut self, escrow_id: Uuid) -> Result<Vibe, LedgerError> {
        self.settle_escrow(escrow_id, EscrowState::Refunded, None)
    }

    /// Credit this node for a payment another node signed, stored under
    /// `rules::incoming_transfer_id(payer, tx_id)`. Refused (nothing written) when the
    /// signature does not verify, the payee is another node, the payer is not a
    /// counterparty ([`Ledger::record_counterparty`]) or the credit would overflow; a replay
    /// is a no-op.
    pub fn record_incoming(
        &mut self,
        transaction: &VibeTransaction,
        own_key: &[u8],
    ) -> Result<bool, LedgerError> {
        self.write(|sql, own| GroupWriter::new(sql, own).record_incoming(transaction, own_key))
    }
}
