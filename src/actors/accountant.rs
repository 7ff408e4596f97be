//! `ResourceAccounting`: what this node gives the mesh. Byte counts from the transport (per
//! peer, purpose and direction) and compute measured from finished runs; rolling upload and
//! download rates over the last minute, totals for today, and a short rate history for the
//! panel's chart. Rate arithmetic is in pure functions below.
//!
//! In: `BytesTransferred` (one per frame: cheap), `ComputeUsed`, `GetResources`, `Inbound`
//! (contribution records from peers, logged).

use std::collections::{BTreeMap, HashMap, VecDeque};

use actix::prelude::*;
use chrono::{NaiveDate, Utc};
use libp2p::PeerId;
use uuid::Uuid;

use crate::config::{EconomicsConfig, ResourcesConfig};
use crate::identity::Identity;
use crate::messages::Vibe;
use crate::protocol::ledger::PayPeer;
use crate::protocol::mesh::{Inbound, SendTo};
use crate::protocol::panel::{PanelEvent, PanelSender, TransactionLogEntry, TransactionType};

// The messages this role answers, defined with the rest of the roles' protocol.
pub use crate::protocol::accounting::{
    BillableBytes, BytesTransferred, ComputeUsed, Direction, GetResources, PeerBytes, RatePoint,
    ResourceSnapshot,
};

/// Seconds of per-second buckets kept for the rolling rates.
pub const RATE_WINDOW_S: usize = 60;
/// Points of rate history kept for the chart (one per 5 s: ten minutes).
pub const HISTORY_POINTS_MAX: usize = 120;
/// Seconds per history point.
pub const HISTORY_STEP_S: u64 = 5;
/// Peers tracked individually; the rest are summed under "other".
pub const PEERS_TRACKED_MAX: usize = 1024;

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

/// The `ResourceAccounting` role.
pub struct ResourceAccounting {
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
    last_settlement: std::time::Instant,
    reported_out: u64,
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
        _identity: Identity,
        economics: EconomicsConfig,
        resources: ResourcesConfig,
        pay: Option<Recipient<PayPeer>>,
        send: Option<Recipient<SendTo>>,
        panel: Option<PanelSender>,
    ) -> Self {
        ResourceAccounting {
            unsettled: HashMap::new(),
            last_settlement: std::time::Instant::now(),
            reported_out: 0,
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

    /// Pay peers for the log streams they sent this node, in batches, and report this node's
    /// own upload as a bandwidth contribution.
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
                                let entry = TransactionLogEntry::new(
                                    TransactionType::VibeSpent,
                                    None,
                                    Some(node.clone()),
                                    Some(amount),
                                    format!("bandwidth: {bytes} bytes of logs from {node}"),
                                );
                                panel.publish(PanelEvent::Transaction(entry));
                            }
                            let message = crate::messages::APNMessage::VibeTransaction(transaction);
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
        let out = self.peers.values().map(|p| p.bytes_out).sum::<u64>();
        if out > self.reported_out && since >= interval {
            let bytes = out - self.reported_out;
            self.reported_out = out;
            if let Some(panel) = &self.panel {
                let entry = TransactionLogEntry::new(
                    TransactionType::BandwidthContributed,
                    None,
                    None,
                    Some(bandwidth_value(bytes, rate)),
                    format!("{bytes} bytes sent to peers"),
                );
                panel.publish(PanelEvent::Transaction(entry));
            }
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
        if used.peer.is_some() {
            self.compute_for_peers_s += used.usage.cpu_seconds;
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

impl Handler<Inbound> for ResourceAccounting {
    type Result = ();

    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        tracing::debug!(kind = inbound.envelope.message.kind(), from = %inbound.envelope.from_node, "contribution record");
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
