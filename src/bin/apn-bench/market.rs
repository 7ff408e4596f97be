//! `market`: a trivial task (SHELL `true`, one-file repository) from create to settled,
//! direct and via the relay (median and p99, against spawning the same process directly),
//! from create to running (`ExecutionStarted` at the originator, as its task view records
//! it) direct, against a bare libp2p request/response round trip measured in the same run
//! (what the market costs: the live offer's request and answer, escrow, the sealed
//! assignment), the same with offers off (a bid round closing early on the one bid),
//! tasks settled per second with one originator and 4 executors (against processes
//! spawned per second), and how many of 4 equal executors a burst of 40 tasks from one
//! originator uses.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::node::{NodeHandle, start_node};
use apn::config::Config;
use futures::StreamExt;

use crate::{bench_config, emit, median_p99_ms, wait_for_peer};

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

/// Create a task and wait until it is settled (completed and paid); its final view.
async fn settle_view(
    origin: &NodeHandle,
    repo: &std::path::Path,
) -> anyhow::Result<apn::actors::distributor::TaskView> {
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
            return Ok(view);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("bench task stuck");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Creation to `ExecutionStarted` at the originator, as the task's view records them.
fn create_to_running(view: &apn::actors::distributor::TaskView) -> anyhow::Result<Duration> {
    let started = view
        .started_at
        .context("a settled mesh task records its start")?;
    Ok((started - view.created_at).to_std().unwrap_or_default())
}

/// Create a task and wait until it is settled (completed and paid).
async fn settle_one(origin: &NodeHandle, repo: &std::path::Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    settle_view(origin, repo).await?;
    Ok(started.elapsed())
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
    offers: bool,
) -> anyhow::Result<(Vec<NodeHandle>, Vec<tempfile::TempDir>)> {
    let dirs = vec![tempfile::tempdir()?, tempfile::tempdir()?];
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (index, dir) in dirs.iter().enumerate() {
        let mut config = market_config(dir.path(), index == 1);
        if !offers {
            config.market.offer_ttl_ms = 0;
        }
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

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
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

    let (nodes, _dirs) = market_pair(None, true).await?;
    warm_up(&nodes[0], repo.path()).await?;
    let mut latencies = Vec::new();
    let mut to_running = Vec::new();
    let mut via_offer = 0;
    for _ in 0..samples {
        let started = Instant::now();
        let view = settle_view(&nodes[0], repo.path()).await?;
        latencies.push(started.elapsed());
        to_running.push(create_to_running(&view)?);
        via_offer += usize::from(view.via_offer);
    }
    eprintln!("direct: {via_offer}/{samples} tasks assigned through a live offer");
    let (median, p99) = median_p99_ms(&mut latencies);
    let (running_median, _) = median_p99_ms(&mut to_running);
    let mut bare = crate::rtt::bare_libp2p_rtts(samples.max(100)).await?;
    let (bare_median, _) = median_p99_ms(&mut bare);
    emit(
        "market",
        "task_create_to_running_direct_median",
        running_median,
        "ms",
        "libp2p_request_response_median",
        bare_median,
    );
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
    // The same with the fast path off: a bid round (closing early on the one executor's
    // bid), to show what the offer saves in this run.
    let (nodes, _dirs) = market_pair(None, false).await?;
    warm_up(&nodes[0], repo.path()).await?;
    let mut to_running = Vec::new();
    for _ in 0..samples {
        let view = settle_view(&nodes[0], repo.path()).await?;
        to_running.push(create_to_running(&view)?);
    }
    let (bid_round_median, _) = median_p99_ms(&mut to_running);
    emit(
        "market",
        "task_create_to_running_direct_bid_round_median",
        bid_round_median,
        "ms",
        "libp2p_request_response_median",
        bare_median,
    );
    for node in nodes {
        node.shutdown().await;
    }

    if let Ok(nats) = apn::harness::NatsServer::start() {
        let (nodes, _dirs) = market_pair(Some(&nats.url()), true).await?;
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

    burst(repo.path()).await
}

/// Executors in the burst figure.
const BURST_EXECUTORS: usize = 4;
/// Tasks in the burst, submitted at once from one originator.
const BURST_TASKS: usize = 40;

/// A burst of [`BURST_TASKS`] tasks at once from one originator to [`BURST_EXECUTORS`]
/// equal executors, each with a slot (and a reservation allowance) for every task, so
/// nothing but the originator's choice spreads them: how many executors ran them. No
/// warm-up task, so the executors stay equal (one that had run a task would have a better
/// reputation than the others, which is not a tie).
async fn burst(repo: &std::path::Path) -> anyhow::Result<()> {
    let dirs: Vec<tempfile::TempDir> = (0..=BURST_EXECUTORS)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (index, dir) in dirs.iter().enumerate() {
        let mut config = market_config(dir.path(), index > 0);
        config.resources.max_concurrent_tasks = BURST_TASKS as u32;
        config.market.reservations_per_peer = BURST_TASKS as u32;
        if let Some(first) = nodes.first() {
            config.node.bootstrap = vec![first.dial_address().context("address")?.to_string()];
        }
        nodes.push(start_node(config).await?);
    }
    for executor in &nodes[1..] {
        wait_for_peer(&nodes[0], executor.identity.peer_id(), false).await?;
    }
    let results =
        futures::future::join_all((0..BURST_TASKS).map(|_| settle_view(&nodes[0], repo))).await;
    let mut per_executor: std::collections::BTreeMap<String, usize> = Default::default();
    for view in results.iter().filter_map(|r| r.as_ref().ok()) {
        if let Some(executor) = &view.assigned_node {
            *per_executor.entry(executor.clone()).or_default() += 1;
        }
    }
    for failure in results.iter().filter_map(|r| r.as_ref().err()).take(3) {
        eprintln!("burst task failed: {failure:#}");
    }
    eprintln!("burst: tasks per executor {:?}", per_executor.values());
    emit(
        "market",
        "executors_used_in_burst",
        per_executor.len() as f64,
        "executors",
        "executors_available",
        BURST_EXECUTORS as f64,
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
