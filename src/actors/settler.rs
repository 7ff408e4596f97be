//! `SettlementEngine`: the ledger as an actor. A `SyncArbiter` with one thread, because
//! rusqlite blocks and one writer serialises settlement. Every message is one ledger
//! operation committed whole (see `ledger`).
//!
//! In: `GetBalance`, `GetHistory`, `HoldEscrow`, `ReleaseEscrow` (returns the signed
//! `VibeTransaction` for the payee), `RefundEscrow`, `RecordOutcome`, `GetReputation`,
//! `RecordCounterparty` (the executor admitted a peer's task), `AcceptPayment` (a
//! `VibeTransaction` paid to this node: only from a counterparty, never overflowing), the
//! payment outbox
//! (`TakeDuePayments`, `ConfirmDelivery`, `UndeliveredPayments`) and the task journal
//! (`JournalTask`, `LookupTask`). On start it recovers what a killed run left: open tasks
//! fail with a reason and held escrows are refunded.

use std::path::Path;

use actix::prelude::*;
use uuid::Uuid;

use crate::identity::Identity;
use crate::ledger::{JournaledTask, Ledger, LedgerError, PendingPayment, Recovery, TransferRecord};
use crate::messages::{APNMessage, TransactionReason, Vibe, VibeTransaction};
use crate::protocol::panel::{PanelEvent, PanelSender, TransactionLogEntry, TransactionType};

pub use crate::ledger::Outcome;

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::ledger::{
    AcceptPayment, BalanceSummary, ConfirmDelivery, GetBalance, GetHistory, GetReputation,
    HoldEscrow, JournalTask, LookupTask, PayPeer, RecordCounterparty, RecordIncoming,
    RecordOutcome, RefundEscrow, ReleaseEscrow, SettleBatch, TakeDuePayments, UndeliveredPayments,
};

/// The settlement engine: one ledger, one writer.
pub struct SettlementEngine {
    ledger: Ledger,
    identity: Identity,
    panel: Option<PanelSender>,
}

impl Actor for SettlementEngine {
    type Context = SyncContext<Self>;
}

/// Why a task journaled as open at start-up failed.
pub const INTERRUPTED_REASON: &str =
    "the node restarted while the task was open; its escrow was refunded";

/// Open the ledger, mint the initial balance on first creation, start the engine. Must be
/// called inside a running actix System.
pub fn start_settlement_engine(
    db_path: &Path,
    identity: Identity,
    initial_balance: Vibe,
    panel: Option<PanelSender>,
) -> Result<Addr<SettlementEngine>, LedgerError> {
    if let Some(parent) = db_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            LedgerError::Invariant(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let mut ledger = Ledger::open(db_path, &identity.public_key())?;
    if initial_balance > Vibe::ZERO {
        // A fixed id per node: restarts never mint again.
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("initial-balance:{}", ledger.own_account()).as_bytes(),
        );
        let own = ledger.own_account().to_string();
        ledger.mint(id, &own, initial_balance)?;
    }
    let recovery = ledger.recover_after_restart(INTERRUPTED_REASON)?;
    if recovery != Recovery::default() {
        tracing::warn!(
            tasks = recovery.tasks_interrupted,
            escrows_refunded = recovery.escrows_refunded,
            "tasks left open by the previous run failed; their escrow is back"
        );
    }
    ledger.check_invariants()?;
    let path = db_path.to_path_buf();
    let opened = std::sync::Mutex::new(Some(ledger));
    Ok(SyncArbiter::start(1, move || {
        // The arbiter calls this once (one thread); a restart of the thread reopens.
        let taken = opened.lock().ok().and_then(|mut slot| slot.take());
        let ledger = match taken {
            Some(ledger) => ledger,
            None => match Ledger::open(&path, &identity.public_key()) {
                Ok(ledger) => ledger,
                Err(e) => panic!("ledger {} cannot be reopened: {e}", path.display()),
            },
        };
        SettlementEngine {
            ledger,
            identity: identity.clone(),
            panel: panel.clone(),
        }
    }))
}

impl Handler<GetBalance> for SettlementEngine {
    type Result = Result<BalanceSummary, LedgerError>;

    fn handle(&mut self, _request: GetBalance, _ctx: &mut Self::Context) -> Self::Result {
        Ok(BalanceSummary {
            balance: self.ledger.own_balance()?,
            escrowed: self.ledger.escrowed()?,
        })
    }
}

impl Handler<GetHistory> for SettlementEngine {
    type Result = Result<Vec<TransferRecord>, LedgerError>;

    fn handle(&mut self, request: GetHistory, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.history(&request.0)
    }
}

impl Handler<HoldEscrow> for SettlementEngine {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, request: HoldEscrow, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger
            .hold(request.task_id, Some(request.transfer_id), request.amount)
            .map(|_| ())
    }
}

impl Handler<ReleaseEscrow> for SettlementEngine {
    type Result = Result<VibeTransaction, LedgerError>;

    fn handle(&mut self, request: ReleaseEscrow, _ctx: &mut Self::Context) -> Self::Result {
        // The payment's id is the escrow's: the payee's ledger dedupes retries by it. It is
        // queued in the outbox with the release, so it is delivered even if we die now.
        let identity = &self.identity;
        self.ledger
            .release_signed(request.task_id, &request.payee, |amount| {
                VibeTransaction::signed_with_id(
                    identity,
                    request.task_id,
                    request.payee,
                    amount,
                    TransactionReason::TaskExecution,
                    Some(request.task_id),
                    chrono::Utc::now(),
                )
            })
    }
}

impl Handler<PayPeer> for SettlementEngine {
    type Result = Result<VibeTransaction, LedgerError>;

    fn handle(&mut self, request: PayPeer, _ctx: &mut Self::Context) -> Self::Result {
        let identity = &self.identity;
        self.ledger.pay_signed(
            request.transfer_id,
            &request.payee,
            request.amount,
            request.reason,
            || {
                VibeTransaction::signed_with_id(
                    identity,
                    request.transfer_id,
                    request.payee,
                    request.amount,
                    request.reason,
                    None,
                    chrono::Utc::now(),
                )
            },
        )
    }
}

impl Handler<SettleBatch> for SettlementEngine {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, request: SettleBatch, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.apply_batch(&request.0)
    }
}

impl Handler<RefundEscrow> for SettlementEngine {
    type Result = Result<(), LedgerError>;

    fn handle(&mut self, request: RefundEscrow, _ctx: &mut Self::Context) -> Self::Result {
        let result = self.ledger.refund(request.task_id).map(|_| ());
        if let Err(e) = &result {
            tracing::warn!(escrow = %request.task_id, error = %e, "refund refused");
        }
        result
    }
}

impl Handler<RecordOutcome> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: RecordOutcome, _ctx: &mut Self::Context) {
        if let Err(e) = self.ledger.record_outcome(&request.peer, request.outcome) {
            tracing::warn!(error = %e, "reputation not recorded");
        }
    }
}

impl Handler<GetReputation> for SettlementEngine {
    type Result = Result<f64, LedgerError>;

    fn handle(&mut self, request: GetReputation, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.reputation(&request.peer)
    }
}

impl Handler<RecordCounterparty> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: RecordCounterparty, _ctx: &mut Self::Context) {
        if let Err(e) = self.ledger.record_counterparty(&request.peer) {
            tracing::warn!(error = %e, "counterparty not recorded; its payments will be refused");
        }
    }
}

impl Handler<RecordIncoming> for SettlementEngine {
    type Result = Result<bool, LedgerError>;

    fn handle(&mut self, request: RecordIncoming, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger
            .record_incoming(&request.0, &self.identity.public_key())
    }
}

impl Handler<AcceptPayment> for SettlementEngine {
    type Result = Result<bool, LedgerError>;

    fn handle(&mut self, request: AcceptPayment, _ctx: &mut Self::Context) -> Self::Result {
        let envelope = &request.0.envelope;
        let APNMessage::VibeTransaction(transaction) = &envelope.message else {
            return Err(LedgerError::Encoding("not a VibeTransaction".into()));
        };
        // The envelope's signer must be the payer: a relayed copy of someone else's payment
        // is not this sender's to deliver.
        if transaction.from.as_slice() != envelope.from_key {
            return Err(LedgerError::Forged);
        }
        let credited = self
            .ledger
            .record_incoming(transaction, &self.identity.public_key())?;
        if credited {
            if let Some(panel) = &self.panel {
                let entry = TransactionLogEntry::new(
                    TransactionType::VibeEarned,
                    transaction.task_id,
                    Some(envelope.from_node.to_string()),
                    Some(transaction.amount),
                    format!("earned from {}", envelope.from_node),
                );
                panel.publish(PanelEvent::Transaction(entry));
            }
            tracing::info!(amount = %transaction.amount, from = %envelope.from_node, "payment received");
        } else {
            tracing::debug!(tx = %transaction.tx_id, "payment already recorded");
        }
        Ok(credited)
    }
}

impl Handler<TakeDuePayments> for SettlementEngine {
    type Result = Result<Vec<PendingPayment>, LedgerError>;

    fn handle(&mut self, request: TakeDuePayments, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.take_due_payments(request.limit)
    }
}

impl Handler<ConfirmDelivery> for SettlementEngine {
    type Result = Result<bool, LedgerError>;

    fn handle(&mut self, request: ConfirmDelivery, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.confirm_delivery(request.tx_id, &request.payee)
    }
}

impl Handler<UndeliveredPayments> for SettlementEngine {
    type Result = Result<u64, LedgerError>;

    fn handle(&mut self, _request: UndeliveredPayments, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.undelivered_payments()
    }
}

impl Handler<JournalTask> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: JournalTask, _ctx: &mut Self::Context) {
        if let Err(e) = self
            .ledger
            .journal_task(request.id, request.open, &request.view)
        {
            tracing::warn!(task_id = %request.id, error = %e, "task not journaled");
        }
    }
}

impl Handler<LookupTask> for SettlementEngine {
    type Result = Result<Option<JournaledTask>, LedgerError>;

    fn handle(&mut self, request: LookupTask, _ctx: &mut Self::Context) -> Self::Result {
        self.ledger.journaled_task(request.0)
    }
}
