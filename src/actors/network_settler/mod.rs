//! `NetworkSettler`: this node's window on the network ledger (settlement mode `jetstream`).
//!
//! It follows the ledger stream into the node's SQLite projection (on its own arbiter: the
//! projection's writes block on fsync), and answers the money messages the local settlement
//! engine answers in `local` mode, by appending this node's signed entries to the stream and
//! waiting until its own projection has judged them: a hold, release or payment returns only
//! once every node applying the same rules will see it applied. Escrows this node is party to
//! are settled by the clock too: a committed escrow is claimed, and an uncommitted one of its
//! own refunded, once the stream's time passes its deadline. With `settlement.faucet` it
//! asks the treasury's faucet for this identity's one grant at start.
//!
//! In: `GetBalance`, `HoldEscrow`, `ReleaseEscrow`, `RefundEscrow`, `PayPeer`, `CheckHold`,
//! `CommitResult`, `GetLedgerReport`; the courier's `AcceptPayment`, `TakeDuePayments`, `ConfirmDelivery`,
//! `UndeliveredPayments` (the stream delivers payments, so there is nothing to queue).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::config::Config;
use crate::identity::Identity;
use crate::identity::NodeId;
use crate::ledger::{LedgerError, PendingPayment};
use crate::messages::{TransactionReason, Vibe, VibeTransaction};
use crate::network_ledger::entry::{AccountKey, EntryBody};
use crate::network_ledger::faucet;
use crate::network_ledger::projection::ProjectionReport;
use crate::network_ledger::projection::{Credit, PROJECTION_FILE, Projection, ProjectionError};
use crate::network_ledger::rules::{HoldRefusal, HoldState, check_hold};
use crate::network_ledger::stream::{LedgerStream, StreamError, StreamSettings};
use crate::protocol::ledger::{
    AcceptPayment, BalanceSummary, ConfirmDelivery, GetBalance, HoldEscrow, PayPeer, RefundEscrow,
    ReleaseEscrow, TakeDuePayments, UndeliveredPayments,
};
use crate::protocol::network_ledger::{CheckHold, CommitResult, GetLedgerReport};

mod follow;
use crate::protocol::panel::{
    PanelEvent, PanelSender, TransactionDetails, TransactionLogEntry, VibeEarnedDetails,
};

/// Messages applied to the projection in one transaction at most.
const PROJECT_BATCH: usize = 256;
/// How long an append waits for its own entry to come back through the stream.
const JUDGED_TIMEOUT: Duration = Duration::from_secs(30);
/// How often escrows past their deadline are looked for.
const DEADLINE_POLL: Duration = Duration::from_secs(1);
/// Pause before following the stream again after the subscription ended.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// Claims and refunds in flight at once.
const DEADLINE_JOBS_MAX: usize = 32;
/// How often the follower's progress is compared with the stream's end.
const FOLLOW_CHECK: Duration = Duration::from_secs(3);
/// Most messages read directly when the follower is behind.
const DIRECT_READ_MAX: usize = 4096;

/// Why the network settler could not start.
#[derive(Debug, thiserror::Error)]
pub enum NetworkSettlerError {
    /// The config's treasury keys or url are unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The stream could not be opened or created.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The projection file could not be opened.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// The network settler of one node.
pub struct NetworkSettler {
    identity: Identity,
    me: AccountKey,
    stream: LedgerStream,
    projection: Projection,
    hold_wait: Duration,
    /// Appenders waiting for the projection to pass a sequence.
    sequence_waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
    /// Executors waiting for an escrow to appear.
    hold_waiters: HashMap<Uuid, Vec<oneshot::Sender<()>>>,
    /// Escrows with a claim or refund in flight.
    deadline_jobs: HashSet<Uuid>,
    /// Where money arriving in this node's account is shown (the panel's transaction log).
    panel: Option<PanelSender>,
    /// The ledger server's connection, to ask the faucet (`settlement.faucet`) at start.
    faucet_client: Option<async_nats::Client>,
    /// The follower's subscription, to replace it when it stalls.
    following: Option<SpawnHandle>,
    /// The projection's position at the last follower check.
    position_at_check: u64,
}

impl NetworkSettler {
    /// Connect to the ledger's server, open (or create) the stream and the projection in
    /// `data_dir`.
    pub async fn connect(
        identity: Identity,
        config: &Config,
        data_dir: &Path,
    ) -> Result<Self, NetworkSettlerError> {
        let settlement = &config.settlement;
        let treasury = settlement.treasury_keys()?;
        let url = settlement.url_or(&config.relay.url).to_string();
        let client = if settlement.identity_nkey {
            crate::network_ledger::stream::connect_as(&url, &identity).await?
        } else {
            crate::network_ledger::stream::connect(&url).await?
        };
        let faucet_client = settlement.faucet.then(|| client.clone());
        let stream = LedgerStream::open(
            client,
            &StreamSettings {
                name: settlement.stream.clone(),
                replicas: settlement.replicas,
            },
        )
        .await?;
        let projection = Projection::open(&data_dir.join(PROJECTION_FILE), &treasury)?;
        Ok(NetworkSettler {
            me: identity.public_key(),
            identity,
            stream,
            projection,
            hold_wait: Duration::from_millis(settlement.hold_wait_ms),
            sequence_waiters: BTreeMap::new(),
            hold_waiters: HashMap::new(),
            deadline_jobs: HashSet::new(),
            panel: None,
            faucet_client,
            following: None,
            position_at_check: 0,
        })
    }

    /// Ask the faucet for this identity's grant (`settlement.faucet`); the answer is logged.
    /// The faucet grants each identity once, so asking at every start costs nothing.
    fn ask_faucet(&mut self, ctx: &mut Context<Self>) {
        let Some(client) = self.faucet_client.take() else {
            return;
        };
        let identity = self.identity.clone();
        ctx.spawn(
            async move { faucet::request_grant(&client, &identity).await }
                .into_actor(self)
                .map(|answer, _actor, _ctx| match answer {
                    Ok(faucet::FaucetAnswer::Granted { sequence, amount }) => {
                        tracing::info!(%amount, sequence, "the faucet granted this node's VIBE");
                    }
                    Ok(faucet::FaucetAnswer::Refused { reason }) => {
                        tracing::info!(reason = reason.label(), "the faucet refused: {reason}");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot ask the faucet"),
                }),
        );
    }

    /// Show money arriving in this node's account on `panel`.
    pub fn with_panel(mut self, panel: PanelSender) -> Self {
        self.panel = Some(panel);
        self
    }

    /// Tell the panel about money this node earned in a batch.
    fn show_credits(&self, credits: &[Credit]) {
        let Some(panel) = &self.panel else {
            return;
        };
        for credit in credits.iter().filter(|c| c.to == self.me) {
            let from = NodeId::from_public_key(&credit.from);
            let amount = Vibe::from_micros(credit.amount);
            let details = VibeEarnedDetails {
                vibe_earned: amount,
                peer_node: Some(from.to_string()),
                task_id: credit.task,
                purpose: Some(credit.kind.to_string()),
            };
            let entry = TransactionLogEntry::new(
                TransactionDetails::VibeEarned(details),
                format!("earned from {from} on the network ledger ({})", credit.kind),
            );
            panel.publish(PanelEvent::Transaction(entry));
            tracing::info!(%amount, %from, kind = credit.kind, "payment received on the network ledger");
        }
    }

    /// Start on an arbiter of its own: the projection's writes block on fsync.
    pub fn start_own_arbiter(self) -> Addr<Self> {
        let arbiter = Arbiter::new();
        NetworkSettler::start_in_arbiter(&arbiter.handle(), |_| self)
    }

    /// Wake whoever waits for what the projection has reached.
    fn wake(&mut self, holds: &[Uuid]) {
        let position = self.projection.position();
        let still_waiting = self.sequence_waiters.split_off(&(position + 1));
        for (_, waiters) in std::mem::replace(&mut self.sequence_waiters, still_waiting) {
            for waiter in waiters {
                let _ = waiter.send(());
            }
        }
        for hold in holds {
            for waiter in self.hold_waiters.remove(hold).unwrap_or_default() {
                let _ = waiter.send(());
            }
        }
    }

    /// Append `body` as entry `id` and answer once this node's projection has judged it:
    /// `Ok(sequence)` when applied, the skip reason otherwise.
    fn append_judged(
        &mut self,
        id: Uuid,
        body: EntryBody,
    ) -> ResponseActFuture<Self, Result<u64, LedgerError>> {
        let (stream, identity) = (self.stream.clone(), self.identity.clone());
        let known_prev = Some(self.projection.state().last_sequence(&self.me));
        let kind = body.kind();
        Box::pin(
            async move { stream.append(&identity, id, body, known_prev).await }
                .into_actor(self)
                .then(move |appended, actor, _ctx| {
                    let waiter = appended.map(|appended| {
                        let (sender, receiver) = oneshot::channel();
                        actor
                            .sequence_waiters
                            .entry(appended.sequence)
                            .or_default()
                            .push(sender);
                        actor.wake(&[]);
                        (appended.sequence, receiver)
                    });
                    async move {
                        let (sequence, receiver) =
                            waiter.map_err(|e| LedgerError::Network(e.to_string()))?;
                        tokio::time::timeout(JUDGED_TIMEOUT, receiver)
                            .await
                            .map_err(|_| {
                                LedgerError::Network(format!(
                                    "{kind} {id} stored at {sequence} but not projected within {JUDGED_TIMEOUT:?}"
                                ))
                            })?
                            .map_err(|_| LedgerError::Network("settler stopped".into()))?;
                        Ok::<u64, LedgerError>(sequence)
                    }
                    .into_actor(actor)
                })
                .map(move |judged, actor, _ctx| {
                    let sequence = judged?;
                    match actor.projection.verdict(sequence) {
                        Ok(None) => Ok(sequence),
                        Ok(Some(reason)) => Err(LedgerError::Network(format!(
                            "{kind} {id} skipped by the ledger rules: {reason}"
                        ))),
                        Err(e) => Err(LedgerError::Network(e.to_string())),
                    }
                }),
        )
    }

    /// Claim committed escrows paying this node, and refund uncommitted ones it paid, once
    /// their deadline has passed.
    fn settle_deadlines(&mut self, ctx: &mut Context<Self>) {
        let now_ms = Utc::now().timestamp_millis();
        let due: Vec<(Uuid, EntryBody)> = self
            .projection
            .state()
            .holds()
            .iter()
            .filter(|(id, h)| {
                h.state == HoldState::Held
                    && h.deadline_ms <= now_ms
                    && !self.deadline_jobs.contains(id)
            })
            .filter_map(|(id, h)| {
                if h.payee == self.me && h.commit.is_some() {
                    Some((*id, EntryBody::Claim { hold: *id }))
                } else if h.payer == self.me && h.commit.is_none() {
                    Some((*id, EntryBody::Refund { hold: *id }))
                } else {
                    None
                }
            })
            .take(DEADLINE_JOBS_MAX.saturating_sub(self.deadline_jobs.len()))
            .collect();
        for (hold, body) in due {
            self.deadline_jobs.insert(hold);
            let kind = body.kind();
            let job = self.append_judged(Uuid::new_v4(), body);
            ctx.spawn(job.map(move |done, actor, _ctx| {
                actor.deadline_jobs.remove(&hold);
                match done {
                    Ok(_) => tracing::info!(%hold, kind, "escrow settled after its deadline"),
                    Err(e) => tracing::warn!(%hold, kind, error = %e, "escrow past its deadline not settled yet"),
                }
            }));
        }
    }
}

impl Actor for NetworkSettler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(crate::actors::node::SETTLER_MAILBOX);
        self.follow(ctx);
        self.ask_faucet(ctx);
        ctx.run_interval(DEADLINE_POLL, |actor, ctx| actor.settle_deadlines(ctx));
        ctx.run_interval(FOLLOW_CHECK, |actor, ctx| actor.check_follower(ctx));
    }
}

impl Handler<GetBalance> for NetworkSettler {
    type Result = Result<BalanceSummary, LedgerError>;

    fn handle(&mut self, _request: GetBalance, _ctx: &mut Self::Context) -> Self::Result {
        let state = self.projection.state();
        Ok(BalanceSummary {
            balance: Vibe::from_micros(state.balance(&self.me)),
            escrowed: Vibe::from_micros(state.escrowed_by(&self.me)),
        })
    }
}

impl Handler<HoldEscrow> for NetworkSettler {
    type Result = ResponseActFuture<Self, Result<(), LedgerError>>;

    fn handle(&mut self, request: HoldEscrow, _ctx: &mut Self::Context) -> Self::Result {
        let available = self.projection.state().balance(&self.me);
        if available < request.amount.micros() {
            return Box::pin(fut::ready(Err(LedgerError::Overdraft {
                account: crate::ledger::node_account(&self.me),
                needed: request.amount,
                available: Vibe::from_micros(available),
            })));
        }
        let Some(payee) = request.payee else {
            return Box::pin(fut::ready(Err(LedgerError::Network(
                "an escrow on the network ledger needs its payee".into(),
            ))));
        };
        let body = EntryBody::Hold {
            hold: request.task_id,
            payee,
            amount: request.amount,
            task: request.task_id,
            deadline_ms: request.deadline.timestamp_millis(),
        };
        Box::pin(
            self.append_judged(request.transfer_id, body)
                .map(|held, _, _| held.map(|_| ())),
        )
    }
}

impl Handler<ReleaseEscrow> for NetworkSettler {
    type Result = ResponseActFuture<Self, Result<VibeTransaction, LedgerError>>;

    fn handle(&mut self, request: ReleaseEscrow, _ctx: &mut Self::Context) -> Self::Result {
        let entry_id = Uuid::new_v4();
        let release = self.append_judged(
            entry_id,
            EntryBody::Release {
                hold: request.task_id,
            },
        );
        Box::pin(release.map(move |released, actor, _| {
            released?;
            // A record for the payee: the money already moved on the stream.
            Ok(VibeTransaction::signed_with_id(
                &actor.identity,
                entry_id,
                request.payee,
                request.amount,
                TransactionReason::TaskExecution,
                Some(request.task_id),
                Utc::now(),
            ))
        }))
    }
}

impl Handler<RefundEscrow> for NetworkSettler {
    type Result = ResponseActFuture<Self, Result<(), LedgerError>>;

    fn handle(&mut self, request: RefundEscrow, _ctx: &mut Self::Context) -> Self::Result {
        let hold = request.task_id;
        let body = match self.projection.state().hold(&hold) {
            Some(h) if h.payer == self.me && h.state == HoldState::Held => {
                if Utc::now().timestamp_millis() < h.deadline_ms {
                    // Before the deadline only a dispute returns the money; the reason is
                    // public, for the payee's reputation.
                    EntryBody::Dispute {
                        hold,
                        reason: "reassigned: the executor refused, failed or went silent".into(),
                    }
                } else {
                    EntryBody::Refund { hold }
                }
            }
            // Never held, not ours, or already settled: nothing to give back.
            _ => return Box::pin(fut::ready(Ok(()))),
        };
        Box::pin(
            self.append_judged(Uuid::new_v4(), body)
                .map(|refunded, _, _| refunded.map(|_| ())),
        )
    }
}

impl Handler<PayPeer> for NetworkSettler {
    type Result = ResponseActFuture<Self, Result<VibeTransaction, LedgerError>>;

    fn handle(&mut self, request: PayPeer, _ctx: &mut Self::Context) -> Self::Result {
        let memo = format!("{:?}", request.reason);
        let body = EntryBody::Transfer {
            to: request.payee,
            amount: request.amount,
            memo,
        };
        Box::pin(
            self.append_judged(request.transfer_id, body)
                .map(move |paid, actor, _| {
                    paid?;
                    Ok(VibeTransaction::signed_with_id(
                        &actor.identity,
                        request.transfer_id,
                        request.payee,
                        request.amount,
                        request.reason,
                        None,
                        Utc::now(),
                    ))
                }),
        )
    }
}

impl Handler<CheckHold> for NetworkSettler {
    type Result = ResponseActFuture<Self, Result<(), HoldRefusal>>;

    fn handle(&mut self, request: CheckHold, _ctx: &mut Self::Context) -> Self::Result {
        let check = move |actor: &NetworkSettler| {
            check_hold(
                request.hold,
                actor.projection.state().hold(&request.hold),
                &actor.me,
                request.price.micros(),
                request.run_ends_ms,
            )
        };
        if self.projection.state().hold(&request.hold).is_some() {
            return Box::pin(fut::ready(check(self)));
        }
        // The originator appended it moments ago: wait for it to reach this projection.
        let (sender, receiver) = oneshot::channel();
        self.hold_waiters
            .entry(request.hold)
            .or_default()
            .push(sender);
        let wait = self.hold_wait;
        Box::pin(
            async move {
                let _ = tokio::time::timeout(wait, receiver).await;
            }
            .into_actor(self)
            .then(move |(), actor, _| {
                actor.hold_waiters.remove(&request.hold);
                // Not there yet: before refusing, read the stream directly, in case this
                // node's follower is the one behind.
                let missing = actor.projection.state().hold(&request.hold).is_none();
                let read = missing.then(|| (actor.stream.clone(), actor.projection.position() + 1));
                async move {
                    match read {
                        Some((stream, start)) => {
                            Some(stream.read_range(start, DIRECT_READ_MAX).await)
                        }
                        None => None,
                    }
                }
                .into_actor(actor)
            })
            .map(move |read, actor, _| {
                match read {
                    Some(Ok(messages)) => actor.project(messages),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cannot read the ledger stream directly")
                    }
                    None => {}
                }
                check(actor)
            }),
        )
    }
}

impl Handler<CommitResult> for NetworkSettler {
    type Result = ResponseActFuture<Self, Result<(), LedgerError>>;

    fn handle(&mut self, request: CommitResult, _ctx: &mut Self::Context) -> Self::Result {
        let body = EntryBody::Commit {
            hold: request.hold,
            result_hash: request.result_hash,
        };
        Box::pin(
            self.append_judged(Uuid::new_v4(), body)
                .map(|committed, _, _| committed.map(|_| ())),
        )
    }
}

impl Handler<AcceptPayment> for NetworkSettler {
    type Result = Result<bool, LedgerError>;

    /// A payer's record of a payment: the money moved on the stream, nothing to credit here.
    fn handle(&mut self, _request: AcceptPayment, _ctx: &mut Self::Context) -> Self::Result {
        Ok(false)
    }
}

impl Handler<TakeDuePayments> for NetworkSettler {
    type Result = Result<Vec<PendingPayment>, LedgerError>;

    fn handle(&mut self, _request: TakeDuePayments, _ctx: &mut Self::Context) -> Self::Result {
        Ok(Vec::new())
    }
}

impl Handler<ConfirmDelivery> for NetworkSettler {
    type Result = Result<bool, LedgerError>;

    fn handle(&mut self, _request: ConfirmDelivery, _ctx: &mut Self::Context) -> Self::Result {
        Ok(false)
    }
}

impl Handler<UndeliveredPayments> for NetworkSettler {
    type Result = Result<u64, LedgerError>;

    fn handle(&mut self, _request: UndeliveredPayments, _ctx: &mut Self::Context) -> Self::Result {
        Ok(0)
    }
}

impl Handler<GetLedgerReport> for NetworkSettler {
    type Result = Result<ProjectionReport, ProjectionError>;

    fn handle(&mut self, request: GetLedgerReport, _ctx: &mut Self::Context) -> Self::Result {
        self.projection
            .report(&self.me, request.before, request.limit)
    }
}
