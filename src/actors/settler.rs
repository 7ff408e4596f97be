//! `SettlementEngine`: the ledger as an actor, alone on its own arbiter (a thread),
//! because rusqlite blocks and one writer serialises settlement.
//!
//! Group commit: the durable writes (`HoldEscrow`, `ReleaseEscrow`, `PayPeer`,
//! `RefundEscrow`, `SettleBatch`, `JournalTask`, `RecordIncoming`, `AcceptPayment`) are not
//! committed one by one. Each is queued with its caller's reply channel, and the queue is
//! flushed as one SQLite transaction (one fsync) once the mailbox has no more messages
//! ready (a `Flush` the engine sends itself runs after the mailbox is drained) or the queue
//! holds [`GROUP_MAX`] writes. Inside the transaction every write has its own savepoint: a
//! refused one (an overdraft, a settled escrow) is rolled back alone and gets its own error,
//! the others stay (see `ledger::group`). A caller is answered only after the commit, so an
//! answered write is on disk exactly as before. Every other message (balances, history,
//! the outbox, reputation, the journal lookup) first flushes the queue, so it sees every
//! write sent before it, in order.
//!
//! In: `GetBalance`, `GetHistory`, `HoldEscrow`, `ReleaseEscrow` (returns the signed
//! `VibeTransaction` for the payee), `RefundEscrow`, `RecordOutcome`, `GetReputation`,
//! `RecordCounterparty` (the executor admitted a peer's task), `AcceptPayment` (a
//! `VibeTransaction` paid to this node: only from a counterparty, never overflowing), the
//! payment outbox
//! (`TakeDuePayments`, `ConfirmDelivery`, `UndeliveredPayments`), the task journal
//! (`JournalTask`, `LookupTask`) and `GetWriteStats` (commits against writes). On start it
//! recovers what a killed run left: open tasks fail with a reason and held escrows are
//! refunded.

use std::path::Path;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::identity::Identity;
use crate::ledger::{
    GroupWriter, JournaledTask, Ledger, LedgerError, LedgerOp, PendingPayment, Recovery,
    TransferRecord,
};
use crate::messages::{APNMessage, TransactionReason, Vibe, VibeTransaction};
use crate::protocol::mesh::Inbound;
use crate::protocol::panel::{
    PanelEvent, PanelSender, TransactionDetails, TransactionLogEntry, VibeEarnedDetails,
};

pub use crate::ledger::Outcome;

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::ledger::{
    AcceptPayment, BalanceSummary, ConfirmDelivery, GetBalance, GetHistory, GetReputation,
    GetWriteStats, HoldEscrow, JournalTask, LookupTask, PayPeer, RecordCounterparty,
    RecordIncoming, RecordOutcome, RefundEscrow, ReleaseEscrow, SettleBatch, TakeDuePayments,
    UndeliveredPayments,
};

/// Most writes committed in one group: the handler that fills the queue to this size
/// flushes it at once rather than waiting for the mailbox to drain.
pub const GROUP_MAX: usize = 256;

/// The settlement engine: one ledger, one writer.
pub struct SettlementEngine {
    ledger: Ledger,
    identity: Identity,
    panel: Option<PanelSender>,
    /// Writes waiting for the next group commit, in arrival order.
    queue: Vec<Queued>,
    /// A `Flush` is on its way to this actor.
    flush_scheduled: bool,
}

impl Actor for SettlementEngine {
    type Context = Context<Self>;

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        // Queued writes are committed and answered, not dropped.
        self.flush();
        Running::Stop
    }
}

/// Why a task journaled as open at start-up failed.
pub const INTERRUPTED_REASON: &str =
    "the node restarted while the task was open; its escrow was refunded";

/// Open the ledger, mint the initial balance on first creation, start the engine on an
/// arbiter of its own. Must be called inside a running actix System.
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
    let arbiter = Arbiter::new();
    Ok(SettlementEngine::start_in_arbiter(
        &arbiter.handle(),
        move |ctx| {
            // Room for every concurrent caller, so that their writes can meet in one group.
            ctx.set_mailbox_capacity(crate::actors::node::SETTLER_MAILBOX);
            SettlementEngine {
                ledger,
                identity,
                panel,
                queue: Vec::new(),
                flush_scheduled: false,
            }
        },
    ))
}

/// A durable write waiting for its group.
enum Write {
    Hold(HoldEscrow),
    Release(ReleaseEscrow),
    Pay(PayPeer),
    Refund(RefundEscrow),
    Batch(Vec<LedgerOp>),
    Journal(JournalTask),
    Incoming(VibeTransaction),
    /// A delivered payment, its envelope already checked: the panel hears of it once
    /// committed.
    Accept(Inbound),
}

/// What a committed write answers; each handler takes the kind its message returns.
enum Answer {
    Done,
    Signed(VibeTransaction),
    Credited(bool),
}

struct Queued {
    write: Write,
    /// None for fire-and-forget writes (`JournalTask`).
    reply: Option<oneshot::Sender<Result<Answer, LedgerError>>>,
}

/// The engine sends itself this after queueing a write: it arrives once the mailbox has
/// no more messages ready, and commits the queue.
struct Flush;

impl Message for Flush {
    type Result = ();
}

/// The payment in an envelope, checked: a `VibeTransaction` signed by its payer.
fn delivered_payment(inbound: &Inbound) -> Result<&VibeTransaction, LedgerError> {
    let envelope = &inbound.envelope;
    let APNMessage::VibeTransaction(transaction) = &envelope.message else {
        return Err(LedgerError::Encoding("not a VibeTransaction".into()));
    };
    // The envelope's signer must be the payer: a relayed copy of someone else's payment
    // is not this sender's to deliver.
    if transaction.from.as_slice() != envelope.from_key {
        return Err(LedgerError::Forged);
    }
    Ok(transaction)
}

impl Write {
    fn apply(
        &self,
        writer: &GroupWriter<'_>,
        identity: &Identity,
        own_key: &[u8],
    ) -> Result<Answer, LedgerError> {
        match self {
            Write::Hold(request) => writer
                .hold(request.task_id, Some(request.transfer_id), request.amount)
                .map(|_| Answer::Done),
            // The payment's id is the escrow's: the payee's ledger dedupes retries by it. It
            // is queued in the outbox with the release, so it is delivered even if we die.
            Write::Release(request) => writer
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
                .map(Answer::Signed),
            Write::Pay(request) => writer
                .pay_signed(
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
                .map(Answer::Signed),
            Write::Refund(request) => writer.refund(request.task_id).map(|_| Answer::Done),
            Write::Batch(operations) => writer.apply_batch(operations).map(|_| Answer::Done),
            Write::Journal(request) => writer
                .journal_task(request.id, request.open, &request.view)
                .map(|_| Answer::Done),
            Write::Incoming(transaction) => writer
                .record_incoming(transaction, own_key)
                .map(Answer::Credited),
            Write::Accept(inbound) => writer
                .record_incoming(delivered_payment(inbound)?, own_key)
                .map(Answer::Credited),
        }
    }

    /// Logs and panel events for a write whose group was committed.
    fn committed(&self, result: &Result<Answer, LedgerError>, panel: Option<&PanelSender>) {
        match (self, result) {
            (Write::Refund(request), Err(e)) => {
                tracing::warn!(escrow = %request.task_id, error = %e, "refund refused");
            }
            (Write::Journal(request), Err(e)) => {
                tracing::warn!(task_id = %request.id, error = %e, "task not journaled");
            }
            (Write::Accept(inbound), Ok(Answer::Credited(credited))) => {
                let envelope = &inbound.envelope;
                let APNMessage::VibeTransaction(transaction) = &envelope.message else {
                    return;
                };
                if *credited {
                    if let Some(panel) = panel {
                        let details = VibeEarnedDetails {
                            vibe_earned: transaction.amount,
                            peer_node: Some(envelope.from_node.to_string()),
                            task_id: transaction.task_id,
                            purpose: Some(payment_purpose(transaction.reason).into()),
                        };
                        let entry = TransactionLogEntry::new(
                            TransactionDetails::VibeEarned(details),
                            format!("earned from {}", envelope.from_node),
                        );
                        panel.publish(PanelEvent::Transaction(entry));
                    }
                    tracing::info!(amount = %transaction.amount, from = %envelope.from_node, "payment received");
                } else {
                    tracing::debug!(tx = %transaction.tx_id, "payment already recorded");
                }
            }
            _ => {}
        }
    }
}

/// The caller's side of a queued write: its answer once the group is committed.
fn reply<T: 'static>(
    answer: oneshot::Receiver<Result<Answer, LedgerError>>,
    pick: fn(Answer) -> Option<T>,
) -> ResponseFuture<Result<T, LedgerError>> {
    Box::pin(async move {
        match answer.await {
            Ok(Ok(answer)) => pick(answer).ok_or_else(|| {
                LedgerError::Invariant(
                    "the settlement engine answered another kind of write".into(),
                )
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LedgerError::Stopped),
        }
    })
}

fn done(answer: Answer) -> Option<()> {
    matches!(answer, Answer::Done).then_some(())
}

fn signed(answer: Answer) -> Option<VibeTransaction> {
    match answer {
        Answer::Signed(transaction) => Some(transaction),
        _ => None,
    }
}

fn credited(answer: Answer) -> Option<bool> {
    match answer {
        Answer::Credited(credited) => Some(credited),
        _ => None,
    }
}

impl SettlementEngine {
    /// Queue `write` for the next group commit; the receiver gets its answer after it.
    fn enqueue(
        &mut self,
        write: Write,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<Answer, LedgerError>> {
        let (reply, answer) = oneshot::channel();
        self.push(write, Some(reply), ctx);
        answer
    }

    fn push(
        &mut self,
        write: Write,
        reply: Option<oneshot::Sender<Result<Answer, LedgerError>>>,
        ctx: &mut Context<Self>,
    ) {
        self.queue.push(Queued { write, reply });
        if self.queue.len() >= GROUP_MAX {
            self.flush();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.notify(Flush);
        }
    }

    /// Commit every queued write in one transaction, then answer each caller.
    fn flush(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.queue);
        let identity = &self.identity;
        let own_key = identity.public_key();
        let results = self.ledger.write_group(queue.len(), |n, writer| {
            queue[n].write.apply(writer, identity, &own_key)
        });
        tracing::trace!(writes = queue.len(), "group committed");
        for (queued, result) in queue.into_iter().zip(results) {
            queued.write.committed(&result, self.panel.as_ref());
            if let Some(reply) = queued.reply {
                // A caller that gave up waiting has nobody to tell; the write stands.
                let _ = reply.send(result);
            }
        }
    }
}

impl Handler<Flush> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, _request: Flush, _ctx: &mut Self::Context) {
        self.flush_scheduled = false;
        self.flush();
    }
}

impl Handler<GetWriteStats> for SettlementEngine {
    type Result = MessageResult<GetWriteStats>;

    fn handle(&mut self, _request: GetWriteStats, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        MessageResult(self.ledger.write_stats())
    }
}

impl Handler<GetBalance> for SettlementEngine {
    type Result = Result<BalanceSummary, LedgerError>;

    fn handle(&mut self, _request: GetBalance, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        Ok(BalanceSummary {
            balance: self.ledger.own_balance()?,
            escrowed: self.ledger.escrowed()?,
        })
    }
}

impl Handler<GetHistory> for SettlementEngine {
    type Result = Result<Vec<TransferRecord>, LedgerError>;

    fn handle(&mut self, request: GetHistory, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        self.ledger.history(&request.0)
    }
}

impl Handler<HoldEscrow> for SettlementEngine {
    type Result = ResponseFuture<Result<(), LedgerError>>;

    fn handle(&mut self, request: HoldEscrow, ctx: &mut Self::Context) -> Self::Result {
        reply(self.enqueue(Write::Hold(request), ctx), done)
    }
}

impl Handler<ReleaseEscrow> for SettlementEngine {
    type Result = ResponseFuture<Result<VibeTransaction, LedgerError>>;

    fn handle(&mut self, request: ReleaseEscrow, ctx: &mut Self::Context) -> Self::Result {
        reply(self.enqueue(Write::Release(request), ctx), signed)
    }
}

impl Handler<PayPeer> for SettlementEngine {
    type Result = ResponseFuture<Result<VibeTransaction, LedgerError>>;

    fn handle(&mut self, request: PayPeer, ctx: &mut Self::Context) -> Self::Result {
        reply(self.enqueue(Write::Pay(request), ctx), signed)
    }
}

impl Handler<SettleBatch> for SettlementEngine {
    type Result = ResponseFuture<Result<(), LedgerError>>;

    fn handle(&mut self, request: SettleBatch, ctx: &mut Self::Context) -> Self::Result {
        reply(self.enqueue(Write::Batch(request.0), ctx), done)
    }
}

impl Handler<RefundEscrow> for SettlementEngine {
    type Result = ResponseFuture<Result<(), LedgerError>>;

    fn handle(&mut self, request: RefundEscrow, ctx: &mut Self::Context) -> Self::Result {
        reply(self.enqueue(Write::Refund(request), ctx), done)
    }
}

impl Handler<RecordOutcome> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: RecordOutcome, _ctx: &mut Self::Context) {
        self.flush();
        if let Err(e) = self.ledger.record_outcome(&request.peer, request.outcome) {
            tracing::warn!(error = %e, "reputation not recorded");
        }
    }
}

impl Handler<GetReputation> for SettlementEngine {
    type Result = Result<f64, LedgerError>;

    fn handle(&mut self, request: GetReputation, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        self.ledger.reputation(&request.peer)
    }
}

impl Handler<RecordCounterparty> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: RecordCounterparty, _ctx: &mut Self::Context) {
        self.flush();
        if let Err(e) = self.ledger.record_counterparty(&request.peer) {
            tracing::warn!(error = %e, "counterparty not recorded; its payments will be refused");
        }
    }
}

impl Handler<RecordIncoming> for SettlementEngine {
    type Result = ResponseFuture<Result<bool, LedgerError>>;

    fn handle(&mut self, request: RecordIncoming, ctx: &mut Self::Context) -> Self::Result {
        reply(self.enqueue(Write::Incoming(request.0), ctx), credited)
    }
}

impl Handler<AcceptPayment> for SettlementEngine {
    type Result = ResponseFuture<Result<bool, LedgerError>>;

    fn handle(&mut self, request: AcceptPayment, ctx: &mut Self::Context) -> Self::Result {
        // The envelope is checked now: a refused one never waits for a group.
        if let Err(e) = delivered_payment(&request.0) {
            return Box::pin(async move { Err(e) });
        }
        reply(self.enqueue(Write::Accept(request.0), ctx), credited)
    }
}

impl Handler<TakeDuePayments> for SettlementEngine {
    type Result = Result<Vec<PendingPayment>, LedgerError>;

    fn handle(&mut self, request: TakeDuePayments, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        self.ledger.take_due_payments(request.limit)
    }
}

impl Handler<ConfirmDelivery> for SettlementEngine {
    type Result = Result<bool, LedgerError>;

    fn handle(&mut self, request: ConfirmDelivery, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        self.ledger.confirm_delivery(request.tx_id, &request.payee)
    }
}

impl Handler<UndeliveredPayments> for SettlementEngine {
    type Result = Result<u64, LedgerError>;

    fn handle(&mut self, _request: UndeliveredPayments, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        self.ledger.undelivered_payments()
    }
}

impl Handler<JournalTask> for SettlementEngine {
    type Result = ();

    fn handle(&mut self, request: JournalTask, ctx: &mut Self::Context) {
        // Nobody waits for the answer; a failure is logged once the group is committed.
        self.push(Write::Journal(request), None, ctx);
    }
}

impl Handler<LookupTask> for SettlementEngine {
    type Result = Result<Option<JournaledTask>, LedgerError>;

    fn handle(&mut self, request: LookupTask, _ctx: &mut Self::Context) -> Self::Result {
        self.flush();
        self.ledger.journaled_task(request.0)
    }
}

/// The transaction log's `purpose` of a payment.
fn payment_purpose(reason: crate::messages::TransactionReason) -> &'static str {
    match reason {
        crate::messages::TransactionReason::TaskExecution => "task",
        crate::messages::TransactionReason::BandwidthShare => "bandwidth",
        crate::messages::TransactionReason::Relay => "relay",
    }
}
