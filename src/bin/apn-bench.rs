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
//!   settlement through the actor.
//! - `ws`: deltas per second to 100 websocket clients, and memory with them connected.
//! - `sandbox`: a trivial run (`true`) through the agent runner in the sandbox, against the
//!   same run without it (samples interleaved).
//! - `all`: every scenario.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::node::{NodeHandle, start_node};
use apn::actors::peer_manager::{GetPeers, Inbound, Ping};
use apn::config::Config;
use apn::messages::APNMessage;
use clap::Parser;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, request_response};
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
            "actors" => actors(cli.quick).await,
            "rtt" => rtt(cli.quick).await,
            "gossip" => gossip(cli.quick, cli.nodes).await,
            "memory" => memory(cli.nodes).await,
            "market" => market(cli.quick).await,
            "ledger" => ledger(cli.quick).await,
            "ws" => ws(cli.quick).await,
            "sandbox" => sandbox(cli.quick).await,
                        // Each scenario in a fresh process, so memory and caches of one do not colour the
            // next.
            "all" => {
                for scenario in ["actors", "rtt", "gossip", "memory", "market", "ledger", "ws", "sandbox"] {
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
            other => bail!("unknown scenario {other:?}: actors | rtt | gossip | memory | market | ledger | ws | sandbox | all"),
        }
    })
}

/// One run of `true` through the agent runner; its wall time from spawn to reaped.
async fn trivial_run(
    dirs: &apn::actors::executor_run::RunDirs,
    sandbox: Option<apn::sandbox::SandboxPolicy>,
) -> anyhow::Result<Duration> {
    let spec = apn::agent_process::AgentSpec {
        argv: vec!["true".into()],
        workspace: dirs.workspace.clone(),
        pass_env: Vec::new(),
        extra_env: dirs.environment(),
        timeout: Duration::from_secs(30),
        output_bytes_max: 1024,
        sandbox,
    };
    let (events, mut receiver) = tokio::sync::mpsc::channel(16);
    let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    let started = Instant::now();
    let outcome =
        apn::agent_process::run_agent(spec, events, tokio_util::sync::CancellationToken::new())
            .await?;
    let elapsed = started.elapsed();
    drain.await?;
    if outcome.exit_code != Some(0) {
        bail!("the trivial run failed: {outcome:?}");
    }
    Ok(elapsed)
}

async fn sandbox(quick: bool) -> anyhow::Result<()> {
    let support = apn::sandbox::probe();
    if let Some(problem) = &support.problem {
        bail!("this kernel cannot sandbox: {problem}");
    }
    let samples = if quick { 30 } else { 300 };
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.node.data_dir = dir.path().join("data");
    std::fs::create_dir_all(&config.node.data_dir)?;
    let dirs = apn::actors::executor_run::RunDirs::beside(&dir.path().join("workspace"));
    std::fs::create_dir_all(&dirs.workspace)?;
    dirs.create()?;
    let profile = apn::config::ProfileConfig::new("true", &[]);
    let policy = apn::actors::executor_run::agent_sandbox_policy(&config, &profile, &dirs, 30);
    let (mut plain, mut boxed) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        plain.push(trivial_run(&dirs, None).await?);
        boxed.push(trivial_run(&dirs, Some(policy.clone())).await?);
    }
    let (plain_median, _) = median_p99_ms(&mut plain);
    let (boxed_median, boxed_p99) = median_p99_ms(&mut boxed);
    emit(
        "sandbox",
        "sandbox_run_median",
        boxed_median,
        "ms",
        "unsandboxed_run_median",
        plain_median,
    );
    emit(
        "sandbox",
        "sandbox_run_p99",
        boxed_p99,
        "ms",
        "unsandboxed_run_median",
        plain_median,
    );
    Ok(())
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

async fn sendto_rtts(
    from: &NodeHandle,
    to: &NodeHandle,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let peer = to.identity.peer_id();
    // Warm up connections and caches.
    for _ in 0..20 {
        from.peer_manager.send(Ping { peer }).await??;
    }
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples {
        rtts.push(from.peer_manager.send(Ping { peer }).await??);
    }
    Ok(rtts)
}

async fn rtt(quick: bool) -> anyhow::Result<()> {
    let samples = if quick { 200 } else { 1000 };
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    // Direct.
    let a = start_node(bench_config(dirs[0].path())).await?;
    let mut config = bench_config(dirs[1].path());
    config.node.bootstrap = vec![a.dial_address().context("listen address")?.to_string()];
    let b = start_node(config).await?;
    wait_for_peer(&b, a.identity.peer_id(), false).await?;
    let mut direct = sendto_rtts(&b, &a, samples).await?;
    let mut bare = bare_libp2p_rtts(samples).await?;
    let (median, p99) = median_p99_ms(&mut direct);
    let (bare_median, bare_p99) = median_p99_ms(&mut bare);
    emit(
        "rtt",
        "sendto_direct_median",
        median,
        "ms",
        "libp2p_request_response_median",
        bare_median,
    );
    emit(
        "rtt",
        "sendto_direct_p99",
        p99,
        "ms",
        "libp2p_request_response_p99",
        bare_p99,
    );
    a.shutdown().await;
    b.shutdown().await;

    // Via the relay.
    let nats = match apn::harness::NatsServer::start() {
        Ok(nats) => nats,
        Err(e) => {
            eprintln!("relay figures skipped: {e}");
            return Ok(());
        }
    };
    let relay_dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut nodes = Vec::new();
    for dir in &relay_dirs {
        let mut config = bench_config(dir.path());
        config.node.relay_only = true;
        config.relay.url = nats.url();
        nodes.push(start_node(config).await?);
    }
    wait_for_peer(&nodes[0], nodes[1].identity.peer_id(), true).await?;
    wait_for_peer(&nodes[1], nodes[0].identity.peer_id(), true).await?;
    let mut relayed = sendto_rtts(&nodes[0], &nodes[1], samples).await?;
    let mut bare = bare_nats_rtts(&nats.url(), samples).await?;
    let (median, p99) = median_p99_ms(&mut relayed);
    let (bare_median, bare_p99) = median_p99_ms(&mut bare);
    emit(
        "rtt",
        "sendto_relay_median",
        median,
        "ms",
        "nats_request_reply_median",
        bare_median,
    );
    emit(
        "rtt",
        "sendto_relay_p99",
        p99,
        "ms",
        "nats_request_reply_p99",
        bare_p99,
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

/// Bare libp2p: two swarms with only request-response (the same frame codec), echoing a
/// small request. The APN ping is two acknowledged one-way sends; this is one request and
/// its response, the least a round trip over libp2p costs.
async fn bare_libp2p_rtts(samples: usize) -> anyhow::Result<Vec<Duration>> {
    type Behaviour = request_response::Behaviour<apn::mesh::swarm::FrameCodec>;
    let protocol = StreamProtocol::new("/bench/echo/1");
    let make = || -> anyhow::Result<libp2p::Swarm<Behaviour>> {
        let protocol = protocol.clone();
        Ok(libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(move |_| {
                request_response::Behaviour::with_codec(
                    apn::mesh::swarm::FrameCodec,
                    [(protocol, request_response::ProtocolSupport::Full)],
                    request_response::Config::default(),
                )
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build())
    };
    let mut server = make()?;
    let mut client = make()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let address: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_peer = *server.local_peer_id();
    client.dial(address.with(libp2p::multiaddr::Protocol::P2p(server_peer)))?;
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) = server.select_next_some().await
            {
                // Echo within the 64-byte response limit of the codec.
                let mut response = request;
                response.truncate(32);
                let _ = server.behaviour_mut().send_response(channel, response);
            }
        }
    });
    let mut rtts = Vec::with_capacity(samples);
    for round in 0..samples + 20 {
        let started = Instant::now();
        client
            .behaviour_mut()
            .send_request(&server_peer, vec![7u8; 32]);
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { .. },
                    ..
                }) => break,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    bail!("bare libp2p request failed: {error}")
                }
                _ => {}
            }
        }
        if round >= 20 {
            rtts.push(started.elapsed());
        }
    }
    Ok(rtts)
}

/// Bare NATS request/reply through the same server.
async fn bare_nats_rtts(url: &str, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let responder = async_nats::connect(url).await?;
    let requester = async_nats::connect(url).await?;
    let mut subscription = responder.subscribe("bench.echo").await?;
    let replier = responder.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some(reply) = message.reply {
                let _ = replier.publish(reply, message.payload).await;
            }
        }
    });
    responder.flush().await?;
    let mut rtts = Vec::with_capacity(samples);
    for round in 0..samples + 20 {
        let started = Instant::now();
        requester
            .request("bench.echo", vec![7u8; 32].into())
            .await?;
        if round >= 20 {
            rtts.push(started.elapsed());
        }
    }
    Ok(rtts)
}

/// Counts messages and says when a target is reached.
struct Counter {
    count: usize,
    target: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl actix::Actor for Counter {
    type Context = actix::Context<Self>;
}

impl Counter {
    fn bump(&mut self) {
        self.count += 1;
        if self.count == self.target
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

impl actix::Handler<Inbound> for Counter {
    type Result = ();
    fn handle(&mut self, _message: Inbound, _ctx: &mut Self::Context) {
        self.bump();
    }
}

/// The plain actix baseline: a message of the same shape, no verification.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Plain(#[allow(dead_code)] Vec<u8>);

impl actix::Handler<Plain> for Counter {
    type Result = ();
    fn handle(&mut self, _message: Plain, _ctx: &mut Self::Context) {
        self.bump();
    }
}

fn counter(target: usize) -> (actix::Addr<Counter>, tokio::sync::oneshot::Receiver<()>) {
    use actix::Actor;
    let (done, finished) = tokio::sync::oneshot::channel();
    (
        Counter {
            count: 0,
            target,
            done: Some(done),
        }
        .start(),
        finished,
    )
}

async fn actors(quick: bool) -> anyhow::Result<()> {
    use actix::Actor;
    let messages = if quick { 20_000 } else { 200_000 };
    // Several senders: the replay cache holds at most REPLAY_ENTRIES_PER_SENDER_MAX ids of
    // one sender, so one key alone could not get this many envelopes through.
    let senders: Vec<apn::identity::Identity> = (0..16)
        .map(|_| apn::identity::Identity::ephemeral())
        .collect();
    let identity = apn::identity::Identity::ephemeral();
    let audience = apn::messages::Audience::peer(&identity.peer_id());
    let now = chrono::Utc::now().timestamp_millis();
    let mut frames = Vec::with_capacity(messages);
    for nonce in 0..messages {
        let sender = &senders[nonce % senders.len()];
        let bid = APNMessage::TaskBid(apn::messages::TaskBid {
            task_id: uuid::Uuid::new_v4(),
            bidder: sender.node_id().clone(),
            price: apn::messages::Vibe::from_whole(1),
            estimated_duration_s: nonce as u64,
            capabilities: vec!["rust".into()],
            valid_until: chrono::Utc::now(),
        });
        frames.push(apn::messages::Envelope::seal(sender, &audience, &bid, now)?);
    }
    let frame_bytes = frames[0].len();

    // APN: frames through the peer manager's checks to the distributor's recipient.
    let (distributor, finished) = counter(messages);
    let (sink, _) = counter(usize::MAX);
    let (inject, injected) = tokio::sync::mpsc::channel(apn::mesh::MESH_EVENTS_MAX);
    let dir = tempfile::tempdir()?;
    let mut config = bench_config(dir.path());
    config.node.announce_interval_s = 3600;
    let hub = apn::actors::panel_hub::PanelHub::default().start();
    let routes = apn::actors::peer_manager::Routes {
        distributor: distributor.recipient(),
        executor: sink.clone().recipient(),
        payments: sink.clone().recipient(),
        accountant: sink.recipient(),
        panel: hub.recipient(),
        bytes: apn::actors::accountant::ResourceAccounting::new(
            apn::identity::Identity::ephemeral(),
            Default::default(),
            Default::default(),
            None,
            None,
            None,
        )
        .start()
        .recipient(),
    };
    let mut transports = apn::actors::peer_manager::Transports::none();
    transports.injected = Some(injected);
    let _peer_manager = apn::actors::peer_manager::PeerManager::new(
        identity,
        std::sync::Arc::new(config),
        std::sync::Arc::new(apn::metrics::NetMetrics::default()),
        transports,
        routes,
    )
    .start();
    let started = Instant::now();
    for frame in frames {
        inject
            .send(apn::mesh::MeshEvent::Frame {
                frame,
                via: apn::mesh::FrameVia::Direct,
                transport_peer: None,
                gossip: None,
            })
            .await
            .map_err(|_| anyhow::anyhow!("peer manager stopped"))?;
    }
    tokio::time::timeout(Duration::from_secs(300), finished).await??;
    let apn_rate = messages as f64 / started.elapsed().as_secs_f64();

    // Baseline: plain actix messages of the same size to a counting actor.
    let (plain, finished) = counter(messages);
    let started = Instant::now();
    for _ in 0..messages {
        plain.do_send(Plain(vec![0u8; frame_bytes]));
    }
    tokio::time::timeout(Duration::from_secs(300), finished).await??;
    let plain_rate = messages as f64 / started.elapsed().as_secs_f64();
    emit(
        "actors",
        "envelopes_verified_routed_per_s",
        apn_rate,
        "msg/s",
        "actix_plain_messages_per_s",
        plain_rate,
    );
    Ok(())
}

async fn gossip(quick: bool, nodes: usize) -> anyhow::Result<()> {
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

async fn memory(nodes: usize) -> anyhow::Result<()> {
    let before = resident_bytes()?;
    let dir = tempfile::tempdir()?;
    let one = start_node(bench_config(dir.path())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_one = resident_bytes()?;
    let mut dirs = Vec::new();
    let mut handles = Vec::new();
    for _ in 1..nodes {
        let dir = tempfile::tempdir()?;
        let mut config = bench_config(dir.path());
        config.node.bootstrap = vec![one.dial_address().context("listen address")?.to_string()];
        handles.push(start_node(config).await?);
        dirs.push(dir);
    }
    // Let connections, announcements and gossip settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let with_all = resident_bytes()?;
    let mib = 1024.0 * 1024.0;
    emit(
        "memory",
        "idle_node_rss",
        (with_one - before) / mib,
        "MiB",
        "process_rss_before_nodes",
        before / mib,
    );
    emit(
        "memory",
        &format!("rss_per_node_with_{nodes}_nodes"),
        (with_all - before) / nodes as f64 / mib,
        "MiB",
        "idle_node_rss",
        (with_one - before) / mib,
    );
    one.shutdown().await;
    for node in handles {
        node.shutdown().await;
    }
    Ok(())
}

fn one_file_repo(dir: &std::path::Path) -> anyhow::Result<()> {
    for args in [
        &["init", "-q"][..],
        &["add", "-A"][..],
        &["commit", "-q", "-m", "one file"][..],
    ] {
        if args[0] == "add" {
            std::fs::write(dir.join("README"), "bench\n")?;
        }
        let status = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@apn.invalid",
            ])
            .args(args)
            .current_dir(dir)
            .status()?;
        if !status.success() {
            bail!("git {args:?} failed");
        }
    }
    Ok(())
}

fn market_config(dir: &std::path::Path, executor: bool) -> Config {
    let mut config = bench_config(dir);
    config.market.bid_window_ms = 100;
    // One originator sends hundreds of requests a minute here; the default per-peer limit
    // (120/min) is for a real mesh.
    config.market.requests_per_peer_per_minute = 100_000;
    config.resources.max_concurrent_tasks = 8;
    config.economics.initial_balance = apn::messages::Vibe::from_whole(1_000_000);
    let shell = apn::config::ProfileConfig::shell(executor);
    config.executor.profiles.insert("SHELL".into(), shell);
    config
}

fn trivial_task(repo: &std::path::Path) -> apn::actors::distributor::CreateTaskAttempt {
    apn::actors::distributor::CreateTaskAttempt {
        title: "bench".into(),
        prompt: "true".into(),
        executor_profile: "SHELL".into(),
        repo_path: repo.display().to_string(),
        base: "HEAD".into(),
        requirements: Default::default(),
        reward: apn::messages::Vibe::from_whole(5),
        prefer: apn::actors::distributor::Prefer::Mesh,
        verify_command: None,
    }
}

/// Create a task and wait until it is settled (completed and paid), via the relay's
/// `Finished` event.
async fn settle_one(origin: &NodeHandle, repo: &std::path::Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let id = origin.distributor.send(trivial_task(repo)).await??;
    loop {
        let view = origin
            .distributor
            .send(apn::actors::distributor::GetTask(id))
            .await?
            .context("task")?;
        if view.status.is_final() {
            if view.status != apn::actors::distributor::TaskStatus::Completed {
                bail!("bench task failed: {:?}", view.error);
            }
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("bench task stuck");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Run tasks until one settles: the first broadcast can race the gossip mesh forming.
async fn warm_up(origin: &NodeHandle, repo: &std::path::Path) -> anyhow::Result<()> {
    for _ in 0..10 {
        if settle_one(origin, repo).await.is_ok() {
            return Ok(());
        }
    }
    bail!("no warm-up task settled")
}

async fn market_pair(
    relay: Option<&str>,
) -> anyhow::Result<(Vec<NodeHandle>, Vec<tempfile::TempDir>)> {
    let dirs = vec![tempfile::tempdir()?, tempfile::tempdir()?];
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (index, dir) in dirs.iter().enumerate() {
        let mut config = market_config(dir.path(), index == 1);
        match relay {
            Some(url) => {
                config.node.relay_only = true;
                config.relay.url = url.to_string();
            }
            None => {
                if let Some(first) = nodes.first() {
                    config.node.bootstrap =
                        vec![first.dial_address().context("address")?.to_string()];
                }
            }
        }
        nodes.push(start_node(config).await?);
    }
    wait_for_peer(&nodes[0], nodes[1].identity.peer_id(), relay.is_some()).await?;
    Ok((nodes, dirs))
}

async fn market(quick: bool) -> anyhow::Result<()> {
    let samples = if quick { 20 } else { 200 };
    let repo = tempfile::tempdir()?;
    one_file_repo(repo.path())?;
    // Baseline: the same trivial process, spawned directly.
    let mut spawned = Vec::new();
    for _ in 0..samples {
        let started = Instant::now();
        tokio::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .await?;
        spawned.push(started.elapsed());
    }
    let (spawn_median, spawn_p99) = median_p99_ms(&mut spawned);

    let (nodes, _dirs) = market_pair(None).await?;
    warm_up(&nodes[0], repo.path()).await?;
    let mut latencies = Vec::new();
    for _ in 0..samples {
        latencies.push(settle_one(&nodes[0], repo.path()).await?);
    }
    let (median, p99) = median_p99_ms(&mut latencies);
    emit(
        "market",
        "task_create_to_settled_direct_median",
        median,
        "ms",
        "spawn_process_median",
        spawn_median,
    );
    emit(
        "market",
        "task_create_to_settled_direct_p99",
        p99,
        "ms",
        "spawn_process_p99",
        spawn_p99,
    );
    for node in nodes {
        node.shutdown().await;
    }

    if let Ok(nats) = apn::harness::NatsServer::start() {
        let (nodes, _dirs) = market_pair(Some(&nats.url())).await?;
        warm_up(&nodes[0], repo.path()).await?;
        let mut latencies = Vec::new();
        for _ in 0..samples {
            latencies.push(settle_one(&nodes[0], repo.path()).await?);
        }
        let (median, p99) = median_p99_ms(&mut latencies);
        emit(
            "market",
            "task_create_to_settled_relay_median",
            median,
            "ms",
            "spawn_process_median",
            spawn_median,
        );
        emit(
            "market",
            "task_create_to_settled_relay_p99",
            p99,
            "ms",
            "spawn_process_p99",
            spawn_p99,
        );
        for node in nodes {
            node.shutdown().await;
        }
    }

    // Throughput: one originator, four executors, many small tasks at once.
    let tasks = if quick { 16 } else { 100 };
    let dirs: Vec<tempfile::TempDir> = (0..5)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (index, dir) in dirs.iter().enumerate() {
        let mut config = market_config(dir.path(), index > 0);
        config.resources.max_concurrent_tasks = 4;
        if let Some(first) = nodes.first() {
            config.node.bootstrap = vec![first.dial_address().context("address")?.to_string()];
        }
        nodes.push(start_node(config).await?);
    }
    for executor in &nodes[1..] {
        wait_for_peer(&nodes[0], executor.identity.peer_id(), false).await?;
    }
    warm_up(&nodes[0], repo.path()).await?;
    // One task in flight per executor: a burst beyond the free slots gets no bids (each bid
    // reserves a slot), which measures refusals, not throughput.
    let started = Instant::now();
    let results: Vec<anyhow::Result<Duration>> =
        futures::stream::iter((0..tasks).map(|_| settle_one(&nodes[0], repo.path())))
            .buffer_unordered(4)
            .collect()
            .await;
    let elapsed = started.elapsed().as_secs_f64();
    let completed = results.iter().filter(|r| r.is_ok()).count();
    for failure in results.iter().filter_map(|r| r.as_ref().err()).take(3) {
        eprintln!("throughput task failed: {failure:#}");
    }
    eprintln!("throughput: {completed}/{tasks} tasks settled in {elapsed:.1} s");
    let started = Instant::now();
    let spawns = futures::future::join_all((0..tasks).map(|_| {
        tokio::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
    }))
    .await;
    let spawn_rate = spawns.len() as f64 / started.elapsed().as_secs_f64();
    emit(
        "market",
        "tasks_per_s_4_executors",
        completed as f64 / elapsed,
        "tasks/s",
        "spawn_process_per_s",
        spawn_rate,
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

async fn ledger(quick: bool) -> anyhow::Result<()> {
    use apn::ledger::{Ledger, LedgerOp};
    let rounds = if quick { 300 } else { 2000 };
    let dir = tempfile::tempdir()?;
    let own = apn::identity::Identity::ephemeral();
    let payee = apn::identity::Identity::ephemeral().public_key();
    let mut ledger = Ledger::open(&dir.path().join("single.sqlite3"), &own.public_key())?;
    let account = ledger.own_account().to_string();
    ledger.mint(
        uuid::Uuid::new_v4(),
        &account,
        apn::messages::Vibe::from_whole(1_000_000),
    )?;
    let amount = apn::messages::Vibe::from_micros(10);
    let started = Instant::now();
    for _ in 0..rounds {
        let escrow = uuid::Uuid::new_v4();
        ledger.hold(escrow, None, amount)?;
        ledger.release(escrow, &payee)?;
    }
    let single_rate = rounds as f64 / started.elapsed().as_secs_f64();

    let mut batched = Ledger::open(&dir.path().join("batched.sqlite3"), &own.public_key())?;
    let account = batched.own_account().to_string();
    batched.mint(
        uuid::Uuid::new_v4(),
        &account,
        apn::messages::Vibe::from_whole(1_000_000),
    )?;
    const BATCH: usize = 32;
    let started = Instant::now();
    for _ in 0..rounds / BATCH {
        let mut operations = Vec::with_capacity(BATCH * 2);
        for _ in 0..BATCH {
            let escrow = uuid::Uuid::new_v4();
            operations.push(LedgerOp::Hold { escrow, amount });
            operations.push(LedgerOp::Release { escrow, payee });
        }
        batched.apply_batch(&operations)?;
    }
    let batched_rate = (rounds / BATCH * BATCH) as f64 / started.elapsed().as_secs_f64();

    // Baseline: bare SQLite, one row per transaction, same WAL + synchronous=FULL.
    let bare = rusqlite::Connection::open(dir.path().join("bare.sqlite3"))?;
    bare.pragma_update(None, "journal_mode", "WAL")?;
    bare.pragma_update(None, "synchronous", "FULL")?;
    bare.execute_batch("CREATE TABLE rows (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")?;
    let started = Instant::now();
    for _ in 0..rounds {
        bare.execute(
            "INSERT INTO rows (id, amount) VALUES (?1, 10)",
            [uuid::Uuid::new_v4().to_string()],
        )?;
    }
    let bare_rate = rounds as f64 / started.elapsed().as_secs_f64();
    emit(
        "ledger",
        "settlements_per_s_one_transaction_each",
        single_rate,
        "settlements/s",
        "sqlite_single_row_inserts_per_s",
        bare_rate,
    );
    emit(
        "ledger",
        &format!("settlements_per_s_batched_{BATCH}"),
        batched_rate,
        "settlements/s",
        "sqlite_single_row_inserts_per_s",
        bare_rate,
    );

    // Through the actor: one hold + release request pair, p99.
    let engine = apn::actors::settler::start_settlement_engine(
        &dir.path().join("actor.sqlite3"),
        own.clone(),
        apn::messages::Vibe::from_whole(1_000_000),
        None,
    )?;
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let escrow = uuid::Uuid::new_v4();
        let started = Instant::now();
        engine
            .send(apn::actors::settler::HoldEscrow {
                transfer_id: escrow,
                task_id: escrow,
                amount,
            })
            .await??;
        engine
            .send(apn::actors::settler::ReleaseEscrow {
                task_id: escrow,
                payee,
                amount,
            })
            .await??;
        latencies.push(started.elapsed());
    }
    let (median, p99) = median_p99_ms(&mut latencies);
    emit(
        "ledger",
        "settlement_through_actor_p99",
        p99,
        "ms",
        "settlement_through_actor_median",
        median,
    );
    Ok(())
}

async fn ws(quick: bool) -> anyhow::Result<()> {
    use apn::actors::panel_hub::{GetHubStats, PanelEvent, TransactionLogEntry, TransactionType};
    let clients = 100;
    let deltas = if quick { 200 } else { 2000 };
    let dir = tempfile::tempdir()?;
    let mut config = bench_config(dir.path());
    config.http.bind = "127.0.0.1:0".into();
    let node = start_node(config).await?;
    let address = node.http_addr.context("http address")?;
    // The panel websocket needs the node's token, loopback included.
    let token = node.api_token().context("the node's API token")?;
    let before = resident_bytes()?;
    let (ready_sender, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..clients {
        let (ready_sender, done_sender) = (ready_sender.clone(), done_sender.clone());
        let token = token.clone();
        std::thread::spawn(move || {
            use tungstenite::client::IntoClientRequest;
            let Ok(mut request) = format!("ws://{address}/ws").into_client_request() else {
                let _ = ready_sender.send(false);
                return;
            };
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.headers_mut().insert("authorization", value);
            }
            let Ok((mut socket, _)) = tungstenite::connect(request) else {
                let _ = ready_sender.send(false);
                return;
            };
            let mut received = 0usize;
            let mut announced = false;
            while received < deltas {
                match socket.read() {
                    Ok(tungstenite::Message::Text(text)) => {
                        if text.starts_with("{\"type\":\"snapshot\"")
                            || text.contains("\"type\":\"snapshot\"")
                        {
                            if !announced {
                                announced = true;
                                let _ = ready_sender.send(true);
                            }
                        } else if text.contains("\"type\":\"transaction\"") {
                            received += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = done_sender.send(received);
        });
    }
    for _ in 0..clients {
        if !ready.recv().await.unwrap_or(false) {
            bail!("a websocket client could not connect");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_clients = resident_bytes()?;
    let started = Instant::now();
    for n in 0..deltas {
        let entry = TransactionLogEntry::new(
            TransactionType::BandwidthContributed,
            None,
            None,
            None,
            format!("bench delta {n}"),
        );
        node.panel_hub.send(PanelEvent::Transaction(entry)).await?;
    }
    let mut delivered = 0usize;
    for _ in 0..clients {
        delivered += tokio::time::timeout(Duration::from_secs(120), done.recv())
            .await?
            .unwrap_or(0);
    }
    let rate = delivered as f64 / started.elapsed().as_secs_f64();
    let stats = node.panel_hub.send(GetHubStats).await?;
    emit(
        "ws",
        "deltas_per_s_to_100_clients",
        rate,
        "deltas/s",
        "deltas_queued_per_client",
        (stats.deltas_sent / clients as u64) as f64,
    );
    emit(
        "ws",
        "rss_with_100_clients",
        (with_clients - before) / (1024.0 * 1024.0),
        "MiB",
        "process_rss_before_clients",
        before / (1024.0 * 1024.0),
    );
    node.shutdown().await;
    Ok(())
}
