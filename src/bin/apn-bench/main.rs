//! Benchmark harness: `apn-bench <scenario> [--quick]`. Prints one JSON line per figure:
//! `{"bench", "metric", "value", "unit", "baseline", "baseline_value", "ratio"}`, where the
//! baseline is measured in the same run on the same machine.
//!
//! Scenarios:
//! - `actors`: envelopes verified and routed to their actor per second, against plain actix
//!   messages per second.
//! - `rtt`: SendTo round trip direct and via the relay, against bare libp2p request-response
//!   and bare NATS request/reply.
//! - `gossip`: time for a broadcast to reach 99% of N nodes (`--nodes`, default 20), against
//!   a direct one-way send.
//! - `memory`: resident memory of one idle node, and per node with N nodes in one process.
//! - `market`: a trivial task (SHELL `true`, one-file repository) from create to settled,
//!   direct and via the relay, and tasks per second with 4 executors, against spawning the
//!   same process directly.
//! - `ledger`: durable settlements (hold + release) per second, one SQLite transaction each
//!   and batched, against bare SQLite inserts with the same durability; p99 of one
//!   settlement through the actor; settlements per second with 64 concurrent callers
//!   through the actor (group commit); settlements (hold + release judged by a projection)
//!   per second through the network ledger on JetStream, one server (R1) and a three-server
//!   cluster (R3), against bare JetStream publishes awaited for their ack on the same servers.
//! - `ws`: deltas per second to 100 websocket clients, and memory with them connected.
//! - `sandbox`: a trivial run (`true`) through the agent runner in the sandbox, against the
//!   same run without it (samples interleaved).
//! - `repo`: a task's repository (100 MB of incompressible files) from originator to
//!   executor in MB/s, against one bare libp2p stream with the same transport; and the
//!   bytes a second task at a small new commit sends, over the first task's.
//! - `all`: every scenario.
//!
//! Layout: this file parses the arguments, runs the scenario and holds what several
//! scenarios share (`emit`, `median_p99_ms`, `bench_config`, `wait_for_peer`,
//! `resident_bytes`); each scenario is in its own file.

mod actors;
mod gossip;
mod ledger;
mod ledger_concurrent;
mod ledger_jetstream;
mod market;
mod memory;
mod repo;
mod rtt;
mod sandbox;
mod ws;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::node::NodeHandle;
use apn::actors::peer_manager::GetPeers;
use apn::config::Config;
use clap::Parser;
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "apn-bench",
    about = "Measure an APN node against the raw transports it runs on"
)]
struct Cli {
    /// rtt | all
    scenario: String,
    /// Fewer samples: finishes in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Nodes for the gossip and memory scenarios.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
}

/// One figure.
#[derive(Serialize)]
struct Figure {
    bench: &'static str,
    metric: String,
    value: f64,
    unit: &'static str,
    baseline: String,
    baseline_value: f64,
    ratio: f64,
}

fn emit(
    bench: &'static str,
    metric: &str,
    value: f64,
    unit: &'static str,
    baseline: &str,
    baseline_value: f64,
) {
    let figure = Figure {
        bench,
        metric: metric.to_string(),
        value,
        unit,
        baseline: baseline.to_string(),
        baseline_value,
        ratio: if baseline_value > 0.0 {
            value / baseline_value
        } else {
            0.0
        },
    };
    match serde_json::to_string(&figure) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("cannot encode figure: {e}"),
    }
}

/// Median and 99th percentile of samples, in milliseconds.
fn median_p99_ms(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[index].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let system = actix_rt::System::new();
    system.block_on(async move {
        match cli.scenario.as_str() {
            "actors" => actors::run(cli.quick).await,
            "rtt" => rtt::run(cli.quick).await,
            "gossip" => gossip::run(cli.quick, cli.nodes).await,
            "memory" => memory::run(cli.nodes).await,
            "market" => market::run(cli.quick).await,
            "ledger" => ledger::run(cli.quick).await,
            "ws" => ws::run(cli.quick).await,
            "sandbox" => sandbox::run(cli.quick).await,
            "repo" => repo::run(cli.quick).await,
            // Each scenario in a fresh process, so memory and caches of one do not colour the
            // next.
            "all" => {
                for scenario in ["actors", "rtt", "gossip", "memory", "market", "ledger", "ws", "sandbox", "repo"] {
                    let mut command = std::process::Command::new(std::env::current_exe()?);
                    command.arg(scenario).args(["--nodes", &cli.nodes.to_string()]);
                    if cli.quick {
                        command.arg("--quick");
                    }
                    let status = command.status()?;
                    if !status.success() {
                        bail!("scenario {scenario} failed: {status}");
                    }
                }
                Ok(())
            }
            other => bail!("unknown scenario {other:?}: actors | rtt | gossip | memory | market | ledger | ws | sandbox | repo | all"),
        }
    })
}

fn bench_config(dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.node.data_dir = dir.to_path_buf();
    config.node.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.node.mdns = false;
    config.http.bind = "none".into();
    config
}

async fn wait_for_peer(node: &NodeHandle, peer: libp2p::PeerId, relay: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = node.peer_manager.send(GetPeers).await?;
        if peers
            .iter()
            .any(|p| p.peer_id == peer.to_string() && p.announced && (relay || p.connected))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("peer {peer} not seen in time");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resident memory of this process, in bytes (Linux).
fn resident_bytes() -> anyhow::Result<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm format")?
        .parse()?;
    Ok(pages * 4096.0)
}
