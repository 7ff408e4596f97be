//! `ResourceAccounting`: what this node gives the mesh. Byte counts from the transport (per
//! peer, purpose and direction) and compute measured from finished runs; rolling upload and
//! download rates over the last minute, totals for today, and a short rate history for the
//! panel's chart. Rate arithmetic is in pure functions below.
//!
//! Contribution records (see `contributions` for the rules): when this node pays a peer a
//! bandwidth share it sends that peer a signed `BandwidthContribution` naming the payment;
//! when a peer's escrow payment for a run this node did is credited, it sends the
//! originator a `ComputeContribution` naming the escrow, and the panel's
//! `compute_contributed` entry shows the amount credited. A record received is checked
//! against this node's ledger (and journal) before it is believed; a verified bandwidth
//! record makes the panel's `bandwidth_contributed` entry, with the amount the ledger
//! credited. Records that fail are dropped and counted (`DropReason::BadContribution`);
//! no record ever credits anything. With settlement mode `jetstream` the payments live on
//! the network ledger, which this check does not read yet: there records are sent but only
//! logged on arrival (neither believed nor counted as bad).
//!
//! In: `BytesTransferred` (one per frame: cheap), `BillableBytes`, `ComputeUsed`,
//! `RunForPeer`, `PaymentCredited`, `GetResources`, `GetContributions`, `Inbound`
//! (contribution records from peers).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, NaiveDate, Utc};
use libp2p::PeerId;
use uuid::Uuid;

use crate::config::{EconomicsConfig, ResourcesConfig};
use crate::identity::{Identity, NodeId};
use crate::ledger::{HistoryQuery, LedgerError, TransferRecord, escrow_account, node_account};
use crate::messages::{
    APNMessage, BandwidthContribution, BandwidthPurpose, ComputeContribution, ComputeUsage,
    DropReason, TransactionReason, Vibe,
};
use crate::metrics::NetMetrics;
use crate::protocol::ledger::{GetHistory, LookupTask, PayPeer};
use crate::protocol::mesh::{Inbound, SendTo};
use crate::protocol::panel::{
    BandwidthDetails, ComputeDetails, PanelEvent, PanelSender, TransactionDetails,
    TransactionLogEntry, VibeSpentDetails,
};

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::accounting::{
    BillableBytes, BytesTransferred, ComputeUsed, Direction, GetContributions, GetResources,
    PaymentCredited, PeerBytes, RatePoint, ReceivedContribution, ResourceSnapshot, RunForPeer,
};

/// Seconds of per-second buckets kept for the rolling rates.
pub const RATE_WINDOW_S: usize = 60;
/// Points of rate history kept for the chart (one per 5 s: ten minutes).
pub const HISTORY_POINTS_MAX: usize = 120;
/// Seconds per history point.
pub const HISTORY_STEP_S: u64 = 5;
/// Peers tracked individually; the rest are summed under "other".
pub const PEERS_TRACKED_MAX: usize = 1024;
/// Runs for peers remembered until their escrow payment is credited (oldest forgotten).
pub const PEER_RUNS_MAX: usize = 1024;
/// Verified contribution records kept for `GetContributions`.
pub const RECEIVED_MAX: usize = 256;
/// Received records being checked at once; past it a record is dropped as rate limited.
pub const CHECKS_IN_FLIGHT_MAX: usize = 256;
/// Records from one peer being checked at once: a peer sending records nobody can verify
/// (each looked at for a few seconds) does not crowd out the others'.
pub const CHECKS_PER_PEER_MAX: usize = 16;
/// Times a record naming a payment not in the ledger yet is looked at again (it can
/// overtake its payment, which the courier credits on its own path).
pub const CHECK_RETRIES: u32 = 10;
/// Pause between those looks.
pub const CHECK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Megabits per second from bytes over seconds.
pub fn mbps(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        0.0
    } else {
        bytes as f64 * 8.0 / 1_000_000.0 / seconds
    }
}

pub use crate::messages::vibe::{bandwidth_value, compute_value};

pub mod contributions;

/// What checking received contribution records needs: this node's ledger and journal, and
/// the metrics a bad record is counted in.
#[derive(Clone)]
pub struct ContributionLinks {
    /// Transfers in this node's ledger (the payment or escrow a record names).
    pub history: Recipient<GetHistory>,
    /// This node's task journal (the task a compute record names).
    pub journal: Recipient<LookupTask>,
    /// Where a dropped record is counted.
    pub metrics: Arc<NetMetrics>,
}

/// A run this node does for a peer, until its escrow payment is credited.
#[derive(Debug, Clone)]
struct PeerRun {
    task_id: Uuid,
    title: String,
    origin: PeerId,
    usage: Option<ComputeUsage>,
    paid: Option<Vibe>,
    admitted: std::time::Instant,
}

/// The `ResourceAccounting` role.
pub struct ResourceAccounting {
    identity: Identity,
    economics: EconomicsConfig,
    resources: ResourcesConfig,
    /// (second, bytes in, bytes out), newest last.
    buckets: VecDeque<(i64, u64, u64)>,
    history: VecDeque<RatePoint>,
    day: NaiveDate,
    bytes_in_today: u64,
    bytes_out_today: u64,
    by_purpose: BTreeMap<String, u64>,
    peers: HashMap<PeerId, PeerBytes>,
    cpu_seconds_today: f64,
    memory_gb_seconds_today: f64,
    compute_for_peers_s: f64,
    /// Log-stream bytes received from each peer and not paid for yet.
    unsettled: HashMap<PeerId, u64>,
    /// When the first of those bytes was counted: the start of the contribution's period.
    unsettled_since: HashMap<PeerId, DateTime<Utc>>,
    last_settlement: std::time::Instant,
    /// Runs for peers by escrow id, waiting for their usage and their payment.
    peer_runs: HashMap<Uuid, PeerRun>,
    /// Verified records received, oldest first.
    received: VecDeque<ReceivedContribution>,
    /// Received records being checked now, by sender.
    checking: HashMap<PeerId, usize>,
    contributions: Option<ContributionLinks>,
    /// The settlement engine, which pays peers for bandwidth.
    pay: Option<Recipient<PayPeer>>,
    /// The peer manager, which delivers the payment.
    send: Option<Recipient<SendTo>>,
    panel: Option<PanelSender>,
}

/// How often settlement and contribution reports are considered.
const SETTLEMENT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether bandwidth owed to a peer should be paid now: enough bytes, or enough time since
/// the last settlement with something owed. Batching keeps payments (and fsyncs) rare.
pub fn settlement_due(
    unsettled_bytes: u64,
    since_last: std::time::Duration,
    threshold_bytes: u64,
    interval: std::time::Duration,
) -> bool {
    unsettled_bytes > 0 && (unsettled_bytes >= threshold_bytes || since_last >= interval)
}

impl ResourceAccounting {
    /// Accounting for this node.
    pub fn new(
        identity: Identity,
        economics: EconomicsConfig,
        resources: ResourcesConfig,
        pay: Option<Recipient<PayPeer>>,
        send: Option<Recipient<SendTo>>,
        panel: Option<PanelSender>,
    ) -> Self {
        ResourceAccounting {
            identity,
            unsettled: HashMap::new(),
            unsettled_since: HashMap::new(),
            last_settlement: std::time::Instant::now(),
            peer_runs: HashMap::new(),
            received: VecDeque::new(),
            checking: HashMap::new(),
            contributions: None,
            pay,
            send,
            panel,
            economics,
            resources,
            buckets: VecDeque::new(),
            history: VecDeque::new(),
            day: Utc::now().date_naive(),
            bytes_in_today: 0,
            bytes_out_today: 0,
            by_purpose: BTreeMap::new(),
            peers: HashMap::new(),
            cpu_seconds_today: 0.0,
            memory_gb_seconds_today: 0.0,
            compute_for_peers_s: 0.0,
        }
    }

    /// Check the contribution records peers send against this node's ledger and journal
    /// (without these links a received record is only logged: neither believed nor
    /// counted).
    pub fn with_contributions(mut self, links: ContributionLinks) -> Self {
        self.contributions = Some(links);
        self
    }

    fn roll_day(&mut self) {
        let today = Utc::now().date_naive();
        if today != self.day {
            self.day = today;
            self.bytes_in_today = 0;
            self.bytes_out_today = 0;
            self.by_purpose.clear();
            self.cpu_seconds_today = 0.0;
            self.memory_gb_seconds_today = 0.0;
            self.compute_for_peers_s = 0.0;
        }
    }

    /// Pay peers for the log streams they sent this node, in batches; each payment goes
    /// with a signed `BandwidthContribution` record naming it.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        let interval = std::time::Duration::from_secs(self.economics.bandwidth_settle_interval_s);
        let since = self.last_settlement.elapsed();
        let threshold = self.economics.bandwidth_settle_bytes;
        let rate = self.economics.bandwidth_rate_per_gb;
        let due: Vec<(PeerId, u64)> = self
            .unsettled
            .iter()
            .filter(|(_, bytes)| settlement_due(**bytes, since, threshold, interval))
            .map(|(peer, bytes)| (*peer, *bytes))
            .collect();
        if !due.is_empty() {
            self.last_settlement = std::time::Instant::now();
        }
        for (peer, bytes) in due {
            let amount = bandwidth_value(bytes, rate);
            let (Some(settler), Some(peer_manager), Some(payee)) = (
                self.pay.clone(),
                self.send.clone(),
                crate::identity::public_key_of(&peer),
            ) else {
                continue;
            };
            if amount == Vibe::ZERO {
                continue;
            }
            self.unsettled.remove(&peer);
            let period_start = self.unsettled_since.remove(&peer).unwrap_or_else(Utc::now);
            let beneficiary = self.identity.node_id().clone();
            let panel = self.panel.clone();
            let pay = PayPeer {
                transfer_id: Uuid::new_v4(),
                payee,
                amount,
                reason: crate::messages::TransactionReason::BandwidthShare,
            };
            ctx.spawn(
                async move {
                    match settler.send(pay).await {
                        Ok(Ok(transaction)) => {
                            if let Some(panel) = panel {
                                let node =
                                    crate::identity::NodeId::from_public_key(&payee).to_string();
                                let details = VibeSpentDetails {
                                    vibe_spent: amount,
                                    peer_node: Some(node.clone()),
                                    task_id: None,
                                    purpose: Some("bandwidth".into()),
                                };
                                let entry = TransactionLogEntry::new(
                                    TransactionDetails::VibeSpent(details),
                                    format!("bandwidth: {bytes} bytes of logs from {node}"),
                                );
                                panel.publish(PanelEvent::Transaction(entry));
                            }
                            let record = BandwidthContribution {
                                contributor: NodeId::from_public_key(&payee),
                                beneficiary,
                                purpose: BandwidthPurpose::LogStream,
                                bytes,
                                period_start,
                                period_end: Utc::now(),
                                amount: transaction.amount,
                                payment_id: Some(transaction.tx_id),
                            };
                            // The payment first: the payee checks the record against it.
                            let message = APNMessage::VibeTransaction(transaction);
                            let _ = peer_manager.send(SendTo { peer, message }).await;
                            let message = APNMessage::BandwidthContribution(record);
                            let _ = peer_manager.send(SendTo { peer, message }).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "bandwidth settlement refused")
                        }
                        Err(e) => tracing::debug!(error = %e, "settler gone"),
                    }
                }
                .into_actor(self),
            );
        }
    }

    fn rates(&self) -> (f64, f64) {
        let now = Utc::now().timestamp();
        let (mut bytes_in, mut bytes_out) = (0, 0);
        for (second, incoming, outgoing) in &self.buckets {
            if now - second < RATE_WINDOW_S as i64 {
                bytes_in += incoming;
                bytes_out += outgoing;
            }
        }
        (
            mbps(bytes_out, RATE_WINDOW_S as f64),
            mbps(bytes_in, RATE_WINDOW_S as f64),
        )
    }

    fn snapshot(&self) -> ResourceSnapshot {
        let (upload_mbps, download_mbps) = self.rates();
        let relayed: u64 = self.peers.values().map(|p| p.bytes_out).sum();
        ResourceSnapshot {
            upload_mbps,
            download_mbps,
            bandwidth_limit_mbps: self.resources.max_bandwidth_mbps,
            bytes_in_today: self.bytes_in_today,
            bytes_out_today: self.bytes_out_today,
            bytes_by_purpose: self.by_purpose.clone(),
            cpu_seconds_today: self.cpu_seconds_today,
            memory_gb_seconds_today: self.memory_gb_seconds_today,
            compute_value_today: compute_value(
                self.compute_for_peers_s,
                self.economics.compute_rate_per_cpu_hour,
            ),
            bandwidth_value_today: bandwidth_value(relayed, self.economics.bandwidth_rate_per_gb),
            peers: self
                .peers
                .iter()
                .map(|(peer, bytes)| (peer.to_string(), *bytes))
                .collect(),
            history: self.history.iter().copied().collect(),
        }
    }
}

impl Actor for ResourceAccounting {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SETTLEMENT_CHECK_INTERVAL, |actor, ctx| actor.settle(ctx));
        ctx.run_interval(
            std::time::Duration::from_secs(HISTORY_STEP_S),
            |actor, _| {
                let (upload_mbps, download_mbps) = actor.rates();
                if actor.history.len() >= HISTORY_POINTS_MAX {
                    actor.history.pop_front();
                }
                actor.history.push_back(RatePoint {
                    at_s: Utc::now().timestamp(),
                    upload_mbps,
                    download_mbps,
                });
            },
        );
    }
}

impl Handler<BillableBytes> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, billable: BillableBytes, _ctx: &mut Self::Context) {
        if self.unsettled.len() < PEERS_TRACKED_MAX || self.unsettled.contains_key(&billable.peer) {
            let unsettled = self.unsettled.entry(billable.peer).or_default();
            *unsettled = unsettled.saturating_add(billable.bytes);
            self.unsettled_since
                .entry(billable.peer)
                .or_insert_with(Utc::now);
        }
    }
}

impl Handler<BytesTransferred> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, transfer: BytesTransferred, _ctx: &mut Self::Context) {
        self.roll_day();
        let now = Utc::now().timestamp();
        if self
            .buckets
            .back()
            .is_none_or(|(second, _, _)| *second != now)
        {
            self.buckets.push_back((now, 0, 0));
            while self.buckets.len() > RATE_WINDOW_S {
                self.buckets.pop_front();
            }
        }
        if let Some(bucket) = self.buckets.back_mut() {
            match transfer.direction {
                Direction::In => bucket.1 += transfer.bytes,
                Direction::Out => bucket.2 += transfer.bytes,
            }
        }
        match transfer.direction {
            Direction::In => self.bytes_in_today += transfer.bytes,
            Direction::Out => self.bytes_out_today += transfer.bytes,
        }
        let purpose = format!("{:?}", transfer.purpose).to_lowercase();
        *self.by_purpose.entry(purpose).or_default() += transfer.bytes;
        if self.peers.len() < PEERS_TRACKED_MAX || self.peers.contains_key(&transfer.peer) {
            let peer = self.peers.entry(transfer.peer).or_default();
            match transfer.direction {
                Direction::In => peer.bytes_in += transfer.bytes,
                Direction::Out => peer.bytes_out += transfer.bytes,
            }
        }
    }
}

impl Handler<ComputeUsed> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, used: ComputeUsed, _ctx: &mut Self::Context) {
        self.roll_day();
        self.cpu_seconds_today += used.usage.cpu_seconds;
        self.memory_gb_seconds_today += used.usage.memory_gb_seconds;
        if let Some(origin) = used.peer {
            self.compute_for_peers_s += used.usage.cpu_seconds;
            let escrow = self
                .peer_runs
                .iter()
                .find(|(_, run)| run.task_id == used.task_id && run.origin == origin)
                .map(|(escrow, _)| *escrow);
            if let Some(escrow) = escrow {
                if let Some(run) = self.peer_runs.get_mut(&escrow) {
                    run.usage = Some(used.usage);
                }
                self.contribute_compute(escrow);
            }
        }
        tracing::debug!(task_id = %used.task_id, cpu_s = used.usage.cpu_seconds, "compute metered");
    }
}

impl Handler<GetResources> for ResourceAccounting {
    type Result = MessageResult<GetResources>;

    fn handle(&mut self, _request: GetResources, _ctx: &mut Self::Context) -> Self::Result {
        self.roll_day();
        MessageResult(self.snapshot())
    }
}

impl ResourceAccounting {
    /// Once a run for a peer has both its usage and its payment: tell the originator, and
    /// show the compute on the panel at the amount credited.
    fn contribute_compute(&mut self, escrow_id: Uuid) {
        let Some(PeerRun {
            task_id,
            origin,
            usage: Some(usage),
            paid: Some(paid),
            title,
            ..
        }) = self.peer_runs.get(&escrow_id).cloned()
        else {
            return;
        };
        self.peer_runs.remove(&escrow_id);
        let origin_node = crate::identity::public_key_of(&origin)
            .map(|key| NodeId::from_public_key(&key).to_string());
        if let Some(panel) = &self.panel {
            let details = ComputeDetails {
                task_id,
                task_title: title.clone(),
                peer_node: origin_node,
                vibe_earned: paid,
                cpu_seconds: usage.cpu_seconds,
                memory_gb_seconds: usage.memory_gb_seconds,
            };
            let entry = TransactionLogEntry::new(
                TransactionDetails::ComputeContributed(details),
                format!(
                    "{title}: {:.2} cpu s, {:.3} GB·s, paid from escrow {escrow_id}",
                    usage.cpu_seconds, usage.memory_gb_seconds
                ),
            );
            panel.publish(PanelEvent::Transaction(entry));
        }
        if let Some(send) = &self.send {
            let record = ComputeContribution {
                task_id,
                contributor: self.identity.node_id().clone(),
                usage,
                amount: paid,
                escrow_id: Some(escrow_id),
            };
            send.do_send(SendTo {
                peer: origin,
                message: APNMessage::ComputeContribution(record),
            });
        }
    }

    /// Check a received record against the ledger (looking again while it may only have
    /// overtaken its payment), then keep it or drop it.
    fn check_record(&mut self, inbound: Inbound, attempt: u32, ctx: &mut Context<Self>) {
        let Some(links) = self.contributions.clone() else {
            tracing::debug!(
                kind = inbound.envelope.message.kind(),
                "contribution record not checked: no ledger"
            );
            self.done_checking(&inbound.envelope.from_peer);
            return;
        };
        let own_key = self.identity.public_key();
        let work = async move {
            let result = verify_record(&inbound, &own_key, &links).await;
            (inbound, result)
        };
        ctx.spawn(
            work.into_actor(self)
                .map(move |(inbound, result), actor, ctx| match result {
                    Err(RecordCheckError::Refused(refusal))
                        if refusal.may_be_early() && attempt < CHECK_RETRIES =>
                    {
                        ctx.run_later(CHECK_RETRY_PAUSE, move |actor, ctx| {
                            actor.check_record(inbound, attempt + 1, ctx)
                        });
                    }
                    result => {
                        actor.done_checking(&inbound.envelope.from_peer);
                        actor.checked(&inbound, result);
                    }
                }),
        );
    }

    fn checked(&mut self, inbound: &Inbound, result: Result<Vibe, RecordCheckError>) {
        let from = &inbound.envelope.from_node;
        // Two copies of one record may have been checked side by side: one counts.
        let result = match result {
            Ok(_) if self.already_received(&inbound.envelope.message) => {
                Err(RecordCheckError::Duplicate)
            }
            result => result,
        };
        let received = match (&inbound.envelope.message, result) {
            (_, Err(e)) => {
                if let Some(links) = &self.contributions {
                    links.metrics.count_drop(DropReason::BadContribution);
                }
                tracing::warn!(%from, kind = inbound.envelope.message.kind(), error = %e, "contribution record dropped");
                return;
            }
            (APNMessage::BandwidthContribution(record), Ok(amount)) => {
                if let Some(panel) = &self.panel {
                    let details = BandwidthDetails {
                        bytes: record.bytes,
                        purpose: format!("{:?}", record.purpose).to_lowercase(),
                        peer_node: Some(from.to_string()),
                        vibe_earned: Some(amount),
                    };
                    let entry = TransactionLogEntry::new(
                        TransactionDetails::BandwidthContributed(details),
                        format!(
                            "{} bytes of {:?} carried for {from}",
                            record.bytes, record.purpose
                        )
                        .to_lowercase(),
                    );
                    panel.publish(PanelEvent::Transaction(entry));
                }
                ReceivedContribution::Bandwidth(record.clone())
            }
            (APNMessage::ComputeContribution(record), Ok(_)) => {
                ReceivedContribution::Compute(record.clone())
            }
            _ => return,
        };
        tracing::info!(%from, kind = inbound.envelope.message.kind(), "contribution record verified");
        if self.received.len() >= RECEIVED_MAX {
            self.received.pop_front();
        }
        self.received.push_back(received);
    }

    fn done_checking(&mut self, peer: &PeerId) {
        if let Some(count) = self.checking.get_mut(peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.checking.remove(peer);
            }
        }
    }

    /// True when a verified record already named this payment or escrow.
    fn already_received(&self, message: &APNMessage) -> bool {
        self.received.iter().any(|seen| match (seen, message) {
            (ReceivedContribution::Bandwidth(a), APNMessage::BandwidthContribution(b)) => {
                a.payment_id.is_some() && a.payment_id == b.payment_id
            }
            (ReceivedContribution::Compute(a), APNMessage::ComputeContribution(b)) => {
                a.escrow_id.is_some() && a.escrow_id == b.escrow_id
            }
            _ => false,
        })
    }
}

/// Why a received record was not believed.
#[derive(Debug, thiserror::Error)]
enum RecordCheckError {
    #[error(transparent)]
    Refused(#[from] contributions::ContributionRefusal),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("the settlement engine is gone")]
    LedgerGone,
    #[error("a second record for the same payment")]
    Duplicate,
    #[error("not a contribution record")]
    NotARecord,
}

/// Transfers from the ledger, for one query.
async fn history(
    links: &ContributionLinks,
    query: HistoryQuery,
) -> Result<Vec<TransferRecord>, RecordCheckError> {
    links
        .history
        .send(GetHistory(query))
        .await
        .map_err(|_| RecordCheckError::LedgerGone)?
        .map_err(RecordCheckError::from)
}

/// The I/O half of checking a record: the ledger's and journal's facts, then the rules.
async fn verify_record(
    inbound: &Inbound,
    own_key: &[u8; crate::identity::PUBLIC_KEY_BYTES],
    links: &ContributionLinks,
) -> Result<Vibe, RecordCheckError> {
    let sender_key = &inbound.envelope.from_key;
    match &inbound.envelope.message {
        APNMessage::BandwidthContribution(record) => {
            let payments = history(
                links,
                HistoryQuery {
                    account: Some(node_account(sender_key)),
                    reason: Some(contributions::BANDWIDTH_REASON.into()),
                    limit: crate::ledger::HISTORY_LIMIT_MAX,
                    ..Default::default()
                },
            )
            .await?;
            Ok(contributions::check_bandwidth(
                record,
                sender_key,
                own_key,
                Utc::now(),
                &payments,
            )?)
        }
        APNMessage::ComputeContribution(record) => {
            let transfers = match record.escrow_id {
                Some(escrow) => {
                    history(
                        links,
                        HistoryQuery {
                            account: Some(escrow_account(&escrow)),
                            limit: 16,
                            ..Default::default()
                        },
                    )
                    .await?
                }
                None => Vec::new(),
            };
            let journaled = links
                .journal
                .send(LookupTask(record.task_id))
                .await
                .map_err(|_| RecordCheckError::LedgerGone)??;
            let assigned = journaled.and_then(|task| {
                serde_json::from_str::<serde_json::Value>(&task.view)
                    .ok()?
                    .get("assigned_node")?
                    .as_str()
                    .map(str::to_string)
            });
            Ok(contributions::check_compute(
                record,
                sender_key,
                &transfers,
                assigned.as_deref(),
            )?)
        }
        _ => Err(RecordCheckError::NotARecord),
    }
}

impl Handler<RunForPeer> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, run: RunForPeer, _ctx: &mut Self::Context) {
        if self.peer_runs.len() >= PEER_RUNS_MAX && !self.peer_runs.contains_key(&run.escrow_id) {
            let oldest = self
                .peer_runs
                .iter()
                .min_by_key(|(_, run)| run.admitted)
                .map(|(escrow, _)| *escrow);
            if let Some(oldest) = oldest {
                self.peer_runs.remove(&oldest);
            }
        }
        self.peer_runs.insert(
            run.escrow_id,
            PeerRun {
                task_id: run.task_id,
                title: run.title,
                origin: run.origin,
                usage: None,
                paid: None,
                admitted: std::time::Instant::now(),
            },
        );
    }
}

impl Handler<PaymentCredited> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, credited: PaymentCredited, _ctx: &mut Self::Context) {
        let transaction = &credited.transaction;
        if transaction.reason != TransactionReason::TaskExecution {
            return;
        }
        // An escrow release names the escrow as its task (and is paid under its id).
        let Some(escrow) = transaction.task_id else {
            return;
        };
        match self.peer_runs.get_mut(&escrow) {
            Some(run) if run.origin == credited.payer => run.paid = Some(transaction.amount),
            _ => return,
        }
        self.contribute_compute(escrow);
    }
}

impl Handler<GetContributions> for ResourceAccounting {
    type Result = MessageResult<GetContributions>;

    fn handle(&mut self, _request: GetContributions, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.received.iter().cloned().collect())
    }
}

impl Handler<Inbound> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, ctx: &mut Self::Context) {
        let message = &inbound.envelope.message;
        if !matches!(
            message,
            APNMessage::BandwidthContribution(_) | APNMessage::ComputeContribution(_)
        ) {
            tracing::debug!(kind = message.kind(), from = %inbound.envelope.from_node, "message for no role");
            return;
        }
        if self.already_received(message) {
            self.checked(&inbound, Err(RecordCheckError::Duplicate));
            return;
        }
        let peer = inbound.envelope.from_peer;
        let from_peer = self.checking.get(&peer).copied().unwrap_or(0);
        let in_flight: usize = self.checking.values().sum();
        if from_peer >= CHECKS_PER_PEER_MAX || in_flight >= CHECKS_IN_FLIGHT_MAX {
            if let Some(links) = &self.contributions {
                links.metrics.count_drop(DropReason::RateLimited);
            }
            tracing::debug!(%peer, "contribution record dropped: too many being checked");
            return;
        }
        *self.checking.entry(peer).or_default() += 1;
        self.check_record(inbound, 0, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlement_is_batched_by_bytes_or_time() {
        use std::time::Duration;
        let (threshold, interval) = (1_000, Duration::from_secs(300));
        assert!(!settlement_due(
            0,
            Duration::from_secs(999),
            threshold,
            interval
        ));
        assert!(!settlement_due(
            999,
            Duration::from_secs(10),
            threshold,
            interval
        ));
        assert!(settlement_due(
            1_000,
            Duration::from_secs(10),
            threshold,
            interval
        ));
        assert!(settlement_due(
            1,
            Duration::from_secs(300),
            threshold,
            interval
        ));
    }

    #[test]
    fn rates_and_prices() {
        assert_eq!(mbps(1_000_000, 8.0), 1.0);
        assert_eq!(mbps(5, 0.0), 0.0);
        assert_eq!(
            bandwidth_value(2_000_000_000, Vibe::from_whole(1)),
            Vibe::from_whole(2)
        );
        assert_eq!(
            compute_value(1800.0, Vibe::from_whole(10)),
            Vibe::from_whole(5)
        );
    }
}
