//! `gossip`: the median time for a broadcast to reach 99% of N nodes (`--nodes`, at least
//! 3) discovered through a chain of bootstraps, against a direct one-way send (half a
//! SendTo ping) from the same origin.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::node::{NodeHandle, start_node};
use apn::actors::peer_manager::{GetPeers, Inbound, Ping};
use apn::messages::APNMessage;

use crate::{bench_config, emit, median_p99_ms};

pub(crate) async fn run(quick: bool, nodes: usize) -> anyhow::Result<()> {
    let nodes = nodes.max(3);
    let rounds = if quick { 5 } else { 20 };
    let mut dirs = Vec::new();
    let mut handles: Vec<NodeHandle> = Vec::new();
    for index in 0..nodes {
        let dir = tempfile::tempdir()?;
        let mut config = bench_config(dir.path());
        config.node.announce_interval_s = 2;
        if index > 0 {
            // A chain of bootstraps: discovery has to spread through the mesh.
            let previous = &handles[(index - 1) / 2];
            config.node.bootstrap = vec![
                previous
                    .dial_address()
                    .context("listen address")?
                    .to_string(),
            ];
        }
        handles.push(start_node(config).await?);
        dirs.push(dir);
    }
    // Wait until every node knows every other.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut complete = true;
        for node in &handles {
            let known = node
                .peer_manager
                .send(GetPeers)
                .await?
                .iter()
                .filter(|p| p.announced)
                .count();
            if known < nodes - 1 {
                complete = false;
                break;
            }
        }
        if complete {
            break;
        }
        if Instant::now() > deadline {
            bail!("the {nodes} nodes did not all discover each other in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (inbound_sender, mut inbound) =
        tokio::sync::mpsc::unbounded_channel::<(usize, uuid::Uuid)>();
    for (index, node) in handles.iter().enumerate().skip(1) {
        let (tap, mut tapped) = tokio::sync::mpsc::unbounded_channel();
        node.peer_manager
            .send(apn::actors::peer_manager::Subscribe(tap_recipient(tap)))
            .await?;
        let sender = inbound_sender.clone();
        tokio::spawn(async move {
            while let Some(message) = tapped.recv().await {
                let inbound: Inbound = message;
                if let APNMessage::TaskDistributionRequest(request) = &inbound.envelope.message {
                    let _ = sender.send((index, request.task_id));
                }
            }
        });
    }
    let needed = ((nodes - 1) as f64 * 0.99).ceil() as usize;
    let mut spreads = Vec::new();
    for _ in 0..rounds {
        let task_id = uuid::Uuid::new_v4();
        let message = APNMessage::TaskDistributionRequest(apn::messages::TaskDistributionRequest {
            task_id,
            executor_profile: "BENCH".into(),
            requirements: Default::default(),
            reward: apn::messages::Vibe::from_whole(1),
            content_hash: String::new(),
            bid_deadline: chrono::Utc::now(),
        });
        let started = Instant::now();
        handles[0]
            .peer_manager
            .send(apn::actors::peer_manager::Broadcast {
                topic: apn::messages::Topic::Tasks,
                message,
            })
            .await??;
        let mut reached = std::collections::HashSet::new();
        while reached.len() < needed {
            let (index, id) = tokio::time::timeout(Duration::from_secs(30), inbound.recv())
                .await
                .context("broadcast did not spread in time")?
                .context("taps closed")?;
            if id == task_id {
                reached.insert(index);
            }
        }
        spreads.push(started.elapsed());
    }
    let (median, _) = median_p99_ms(&mut spreads);
    // Baseline: one direct one-way send (half a SendTo ping) from the same origin.
    let peer = handles[1].identity.peer_id();
    let mut pings = Vec::new();
    for _ in 0..rounds * 4 {
        pings.push(handles[0].peer_manager.send(Ping { peer }).await??);
    }
    let (ping_median, _) = median_p99_ms(&mut pings);
    emit(
        "gossip",
        &format!("broadcast_99pct_of_{nodes}_nodes_median"),
        median,
        "ms",
        "direct_one_way_send_median",
        ping_median / 2.0,
    );
    for node in handles {
        node.shutdown().await;
    }
    Ok(())
}

struct TapForwarder(tokio::sync::mpsc::UnboundedSender<Inbound>);

impl actix::Actor for TapForwarder {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Inbound> for TapForwarder {
    type Result = ();
    fn handle(&mut self, message: Inbound, _ctx: &mut Self::Context) {
        let _ = self.0.send(message);
    }
}

fn tap_recipient(sender: tokio::sync::mpsc::UnboundedSender<Inbound>) -> actix::Recipient<Inbound> {
    use actix::Actor;
    TapForwarder(sender).start().recipient()
}
