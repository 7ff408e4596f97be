//! `repo`: what shipping a task's repository costs.
//!
//! - `repo_transfer_mb_per_s`: a repository whose base commit holds 100 files of 1 MB of
//!   incompressible data (24 with `--quick`) goes from an originator to an executor (SHELL
//!   `true`, direct connection) as the first task on it; the rate is the bundle bytes sent
//!   (`repo_bytes_sent` of the task view) over the transfer's time (`repo_transfer_ms`:
//!   first chunk sent to last chunk acknowledged). Baseline: the same number of bytes one
//!   way over one stream between two bare libp2p swarms with the node's transport (TCP,
//!   noise, yamux) on loopback, in the same run (`libp2p-stream`, writes of one chunk each, timed
//!   from the first write to the receiver having read the last byte).
//! - `repo_second_task_bytes_ratio`: on the same two nodes, a second task at a new commit
//!   that changes one small file; its repository bytes sent over the first task's (the
//!   baseline line carries the first task's bytes). An executor that keeps the repository
//!   of an earlier task needs only the new commit: this is then far below 1.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::distributor::{CreateTaskAttempt, GetTask, Prefer, TaskStatus, TaskView};
use apn::actors::node::{NodeHandle, start_node};
use apn::config::Config;
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol};

use crate::{bench_config, emit, wait_for_peer};

/// Bytes of one data file in the repository.
const FILE_BYTES: usize = 1_000_000;
/// One write on the bare stream: the node's repository chunk size.
const WRITE_BYTES: usize = apn::market::REPO_CHUNK_BYTES;
/// How long one task may take from create to settled.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Protocol of the bare stream.
const BULK_PROTOCOL: StreamProtocol = StreamProtocol::new("/apn-bench/bulk/1");

/// Fill `buf` from a seeded xorshift64* generator: incompressible, cheap, repeatable.
fn fill_random(seed: u64, buf: &mut [u8]) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<()> {
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
        bail!("git {args:?} failed: {status}");
    }
    Ok(())
}

/// A repository whose one commit holds `files` files of [`FILE_BYTES`] random bytes and a
/// small README.
fn data_repo(dir: &std::path::Path, files: usize) -> anyhow::Result<()> {
    git(dir, &["init", "-q"])?;
    let data = dir.join("data");
    std::fs::create_dir(&data)?;
    let mut buf = vec![0u8; FILE_BYTES];
    for index in 0..files {
        fill_random(index as u64 + 1, &mut buf);
        std::fs::write(data.join(format!("{index:03}.bin")), &buf)?;
    }
    std::fs::write(dir.join("README"), "bench\n")?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "data"])
}

/// A one-file repository, for the warm-up task.
fn small_repo(dir: &std::path::Path) -> anyhow::Result<()> {
    git(dir, &["init", "-q"])?;
    std::fs::write(dir.join("README"), "warm-up\n")?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "one file"])
}

fn node_config(dir: &std::path::Path, executor: bool) -> Config {
    let mut config = bench_config(dir);
    config.market.bid_window_ms = 100;
    config.economics.initial_balance = apn::messages::Vibe::from_whole(1_000_000);
    let shell = apn::config::ProfileConfig::shell(executor);
    config.executor.profiles.insert("SHELL".into(), shell);
    config
}

/// Create a task (SHELL `true`) on the repository at HEAD and wait until it is settled
/// (completed and paid); its final view.
async fn settle_view(origin: &NodeHandle, repo: &std::path::Path) -> anyhow::Result<TaskView> {
    let started = Instant::now();
    let id = origin
        .distributor
        .send(CreateTaskAttempt {
            title: "bench".into(),
            prompt: "true".into(),
            executor_profile: "SHELL".into(),
            repo_path: repo.display().to_string(),
            base: "HEAD".into(),
            requirements: Default::default(),
            reward: apn::messages::Vibe::from_whole(5),
            prefer: Prefer::Mesh,
            verify_command: None,
        })
        .await??;
    loop {
        let view = origin
            .distributor
            .send(GetTask(id))
            .await?
            .context("task")?;
        if view.status.is_final() {
            if view.status != TaskStatus::Completed {
                bail!("bench task failed: {:?}", view.error);
            }
            return Ok(view);
        }
        if started.elapsed() > SETTLE_TIMEOUT {
            bail!("bench task not settled in {SETTLE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
    let files = if quick { 24 } else { 100 };
    let repo = tempfile::tempdir()?;
    let started = Instant::now();
    data_repo(repo.path(), files)?;
    eprintln!(
        "repo: {files} files of {FILE_BYTES} bytes committed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let warm = tempfile::tempdir()?;
    small_repo(warm.path())?;

    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let origin = start_node(node_config(dirs[0].path(), false)).await?;
    let mut config = node_config(dirs[1].path(), true);
    config.node.bootstrap = vec![origin.dial_address().context("address")?.to_string()];
    let executor = start_node(config).await?;
    wait_for_peer(&origin, executor.identity.peer_id(), false).await?;
    // The first broadcast can race the gossip mesh forming: settle a one-file task on
    // another repository first, so the measured task finds the executor at once and the
    // executor has seen nothing of the measured repository.
    let mut warmed = false;
    for _ in 0..10 {
        if settle_view(&origin, warm.path()).await.is_ok() {
            warmed = true;
            break;
        }
    }
    if !warmed {
        bail!("no warm-up task settled");
    }

    let started = Instant::now();
    let first = settle_view(&origin, repo.path()).await?;
    let first_settled = started.elapsed();
    let first_bytes = first.repo_bytes_sent;
    // The bytes add up every attempt's transfer and the time is the last one's: a rate
    // from a retried task would mix them.
    if first.attempts != 1 {
        bail!(
            "the first task took {} attempts: no transfer rate to read from it",
            first.attempts
        );
    }
    let Some(transfer_ms) = first.repo_transfer_ms.filter(|ms| *ms > 0.0) else {
        bail!("the first task's view records no repository transfer time");
    };
    if first_bytes == 0 {
        bail!("the first task's view records no repository bytes sent");
    }
    let rate = first_bytes as f64 / 1e6 / (transfer_ms / 1000.0);
    eprintln!(
        "repo: first task: bundle {first_bytes} bytes sent in {transfer_ms:.0} ms \
         ({rate:.1} MB/s), create to settled {:.2} s",
        first_settled.as_secs_f64()
    );

    // A small second commit: one small file changed.
    std::fs::write(repo.path().join("README"), "bench, second commit\n")?;
    git(repo.path(), &["commit", "-q", "-a", "-m", "small change"])?;
    let started = Instant::now();
    let second = settle_view(&origin, repo.path()).await?;
    let second_bytes = second.repo_bytes_sent;
    eprintln!(
        "repo: second task: {second_bytes} bytes sent ({} attempts, last transfer {:?} ms), \
         create to settled {:.2} s",
        second.attempts,
        second.repo_transfer_ms,
        started.elapsed().as_secs_f64()
    );
    origin.shutdown().await;
    executor.shutdown().await;

    let bare = bare_libp2p_stream_mb_per_s(first_bytes).await?;
    eprintln!("repo: bare libp2p stream: {first_bytes} bytes at {bare:.1} MB/s");
    emit(
        "repo",
        "repo_transfer_mb_per_s",
        rate,
        "MB/s",
        "bare_libp2p_stream_mb_per_s",
        bare,
    );
    emit(
        "repo",
        "repo_second_task_bytes_ratio",
        second_bytes as f64 / first_bytes as f64,
        "ratio",
        "repo_first_task_bytes",
        first_bytes as f64,
    );
    Ok(())
}

/// Bare libp2p: two swarms with the node's transport (TCP with nodelay, noise, yamux) and
/// only `libp2p-stream`; `bytes` sent one way over one stream in [`WRITE_BYTES`] writes as
/// fast as it goes. MB/s from the first write to the receiver having read the last byte.
async fn bare_libp2p_stream_mb_per_s(bytes: u64) -> anyhow::Result<f64> {
    let make = || -> anyhow::Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
        Ok(libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build())
    };
    let mut receiver = make()?;
    let mut sender = make()?;
    let mut incoming = receiver.behaviour().new_control().accept(BULK_PROTOCOL)?;
    let mut control = sender.behaviour().new_control();
    receiver.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let address: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = receiver.select_next_some().await {
            break address;
        }
    };
    let receiver_peer = *receiver.local_peer_id();
    sender.dial(address.with(libp2p::multiaddr::Protocol::P2p(receiver_peer)))?;
    let receiver_loop = tokio::spawn(async move {
        loop {
            receiver.select_next_some().await;
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, sender.select_next_some()).await {
            Ok(SwarmEvent::ConnectionEstablished { .. }) => break,
            Ok(SwarmEvent::OutgoingConnectionError { error, .. }) => {
                bail!("bare libp2p dial failed: {error}")
            }
            Ok(_) => {}
            Err(_) => bail!("bare libp2p connection not established in time"),
        }
    }
    let sender_loop = tokio::spawn(async move {
        loop {
            sender.select_next_some().await;
        }
    });

    let reading = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.context("no inbound stream")?;
        let mut buf = vec![0u8; WRITE_BYTES];
        let mut read = 0u64;
        let mut last_byte = None;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            read += n as u64;
            if read >= bytes && last_byte.is_none() {
                last_byte = Some(Instant::now());
            }
        }
        anyhow::Ok((read, last_byte))
    });
    let mut stream = control
        .open_stream(receiver_peer, BULK_PROTOCOL)
        .await
        .map_err(|e| anyhow::anyhow!("bare libp2p stream: {e}"))?;
    let mut chunk = vec![0u8; WRITE_BYTES];
    fill_random(0xB0B, &mut chunk);
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE_BYTES as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.close().await?;
    let (read, last_byte) = reading.await??;
    receiver_loop.abort();
    sender_loop.abort();
    let Some(last_byte) = last_byte.filter(|_| read == bytes) else {
        bail!("bare libp2p stream: {read} bytes read of {bytes}");
    };
    Ok(bytes as f64 / 1e6 / (last_byte - started).as_secs_f64())
}
