//! Shared helpers for integration tests: node configs on ephemeral loopback ports, a real
//! `nats-server` child process, inbound taps, and waiting on conditions with timeouts.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use actix::prelude::*;
use apn::actors::node::{NodeHandle, start_node};
use apn::actors::peer_manager::{GetPeers, Inbound, PeerInfo, Subscribe};
use apn::config::Config;
pub use apn::harness::NatsServer;
use tokio::sync::mpsc;

pub mod agents;
pub mod attacker;
pub mod claude;
pub mod process;

/// Forwards a task's execution events to the test.
pub struct Forward(pub mpsc::UnboundedSender<apn::actors::relay::ExecutionEvent>);

impl Actor for Forward {
    type Context = Context<Self>;
}

impl Handler<apn::actors::relay::ExecutionEvent> for Forward {
    type Result = ();
    fn handle(&mut self, event: apn::actors::relay::ExecutionEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}

/// Default bound on waiting for something that should happen.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A config for a test node: loopback, ephemeral port, no mDNS, no HTTP, fast announcements.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::default();
    config.node.data_dir = data_dir.to_path_buf();
    config.node.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.node.mdns = false;
    config.node.announce_interval_s = 1;
    config.http.bind = "none".into();
    config
}

/// Start a node, panicking with the reason if it cannot start.
pub async fn node(config: Config) -> NodeHandle {
    match start_node(config).await {
        Ok(handle) => handle,
        Err(e) => panic!("node failed to start: {e}"),
    }
}

/// Poll `condition` until it holds or `timeout` passes. Returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The peer table of a node.
pub async fn peers(node: &NodeHandle) -> Vec<PeerInfo> {
    node.peer_manager.send(GetPeers).await.unwrap_or_default()
}

/// True when `node` knows every one of `others` from an announcement.
pub async fn knows_all(node: &NodeHandle, others: &[&NodeHandle]) -> bool {
    let table = peers(node).await;
    others.iter().all(|other| {
        table
            .iter()
            .any(|p| p.peer_id == other.identity.peer_id().to_string() && p.announced)
    })
}

/// Receives a copy of every verified inbound message of a node.
pub struct Tap {
    pub receiver: mpsc::UnboundedReceiver<Inbound>,
}

struct TapActor(mpsc::UnboundedSender<Inbound>);

impl Actor for TapActor {
    type Context = Context<Self>;
}

impl Handler<Inbound> for TapActor {
    type Result = ();
    fn handle(&mut self, inbound: Inbound, _ctx: &mut Self::Context) {
        let _ = self.0.send(inbound);
    }
}

impl Tap {
    /// Tap `node`'s inbound messages.
    pub async fn on(node: &NodeHandle) -> Tap {
        let (sender, receiver) = mpsc::unbounded_channel();
        let actor = TapActor(sender).start();
        node.peer_manager
            .send(Subscribe(actor.recipient()))
            .await
            .expect("peer manager alive");
        Tap { receiver }
    }

    /// The next inbound message of a kind, within `timeout`.
    pub async fn next_of(&mut self, kind: &str, timeout: Duration) -> Option<Inbound> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(inbound)) if inbound.envelope.message.kind() == kind => {
                    return Some(inbound);
                }
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Messages of `kind` that arrive within `quiet` (for "nothing more arrives" checks).
    pub async fn count_of_within(&mut self, kind: &str, quiet: Duration) -> usize {
        let mut count = 0;
        while self.next_of(kind, quiet).await.is_some() {
            count += 1;
        }
        count
    }
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> u16 {
    apn::harness::free_port().expect("a free port")
}

/// A real nats-server on a free port (panics with the reason when it cannot start).
pub fn nats() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("{e}"))
}

/// Run git in `dir` (test identity, no hooks from the user's config), asserting success.
pub fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=apn-test",
            "-c",
            "user.email=test@apn.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

/// A fresh git repository on branch `main` with `files` committed.
pub fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("a temp dir");
    git(repo.path(), &["init", "-q", "-b", "main"]);
    for (name, contents) in files {
        std::fs::write(repo.path().join(name), contents).expect("write a file");
    }
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "initial"]);
    repo
}

/// Start `first`, then `second` bootstrapped from it, and wait until each knows the other
/// from its announcement.
pub async fn connected_pair(first: Config, mut second: Config) -> (NodeHandle, NodeHandle) {
    let a = node(first).await;
    second.node.bootstrap = vec![
        a.dial_address()
            .expect("the first node listens")
            .to_string(),
    ];
    let b = node(second).await;
    let (only_a, only_b) = ([&a], [&b]);
    assert!(
        wait_until(EVENT_TIMEOUT, || knows_all(&a, &only_b)).await,
        "first never saw second"
    );
    assert!(
        wait_until(EVENT_TIMEOUT, || knows_all(&b, &only_a)).await,
        "second never saw first"
    );
    (a, b)
}

/// The SHELL profile (`sh -c <prompt>`), which only tests and the demo enable.
pub fn shell_profile() -> apn::config::ProfileConfig {
    apn::config::ProfileConfig::shell(true)
}

/// A SHELL task on `repo`'s `main` that must run on another node.
pub fn mesh_shell_task(
    repo: &Path,
    title: &str,
    prompt: &str,
    reward: u64,
) -> apn::actors::distributor::CreateTaskAttempt {
    apn::actors::distributor::CreateTaskAttempt {
        title: title.into(),
        prompt: prompt.into(),
        executor_profile: "SHELL".into(),
        repo_path: repo.display().to_string(),
        base: "main".into(),
        requirements: Default::default(),
        reward: apn::messages::Vibe::from_whole(reward),
        prefer: apn::actors::distributor::Prefer::Mesh,
        verify_command: None,
    }
}

/// The view of a task of `node` (None when the node does not know it).
pub async fn task_view(
    node: &NodeHandle,
    id: uuid::Uuid,
) -> Option<apn::actors::distributor::TaskView> {
    node.distributor
        .send(apn::actors::distributor::GetTask(id))
        .await
        .ok()
        .flatten()
}

/// True once a task of `node` has `status`, within `timeout`.
pub async fn task_reaches(
    node: &NodeHandle,
    id: uuid::Uuid,
    status: apn::actors::distributor::TaskStatus,
    timeout: Duration,
) -> bool {
    wait_until(timeout, || async {
        task_view(node, id)
            .await
            .is_some_and(|v| v.status == status)
    })
    .await
}

/// Forwards a task's execution events to the test.
struct EventWatcher(mpsc::UnboundedSender<apn::actors::relay::ExecutionEvent>);

impl Actor for EventWatcher {
    type Context = Context<Self>;
}

impl Handler<apn::actors::relay::ExecutionEvent> for EventWatcher {
    type Result = ();
    fn handle(&mut self, event: apn::actors::relay::ExecutionEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}

/// Wait until a task of `node` is final, on the task's own `Finished` event in its
/// execution stream (panics with its view after `timeout`). A task journaled as final before
/// a restart has no stream; its view says so at once.
pub async fn task_final(
    node: &NodeHandle,
    id: uuid::Uuid,
    timeout: Duration,
) -> apn::actors::distributor::TaskView {
    use apn::actors::relay::{ExecutionEvent, SubscribeExecution};
    let is_finished = |event: &ExecutionEvent| matches!(event, ExecutionEvent::Finished { .. });
    let (sender, mut events) = mpsc::unbounded_channel();
    let watcher = EventWatcher(sender).start();
    let history = node
        .relay
        .send(SubscribeExecution {
            task_id: id,
            subscriber: watcher.recipient(),
        })
        .await
        .expect("the relay is running");
    let already_final = history.iter().any(is_finished)
        || task_view(node, id)
            .await
            .is_some_and(|view| view.status.is_final());
    if !already_final {
        let finished = tokio::time::timeout(timeout, async {
            while let Some(event) = events.recv().await {
                if is_finished(&event) {
                    return;
                }
            }
        })
        .await;
        if finished.is_err() {
            panic!("task did not finish: {:?}", task_view(node, id).await);
        }
    }
    // The distributor sets the final view before it publishes `Finished`.
    let view = task_view(node, id).await.expect("task exists");
    assert!(view.status.is_final(), "finished but not final: {view:?}");
    view
}

/// True when `node`'s peer table holds `peer_id` and `state` holds of it (e.g. connected,
/// announced).
pub async fn has_peer(node: &NodeHandle, peer_id: &str, state: impl Fn(&PeerInfo) -> bool) -> bool {
    peers(node)
        .await
        .iter()
        .any(|p| p.peer_id == peer_id && state(p))
}

/// A test config whose node runs SHELL tasks, its own and peers'.
pub fn shell_config(data_dir: &Path) -> Config {
    let mut config = test_config(data_dir);
    config
        .executor
        .profiles
        .insert("SHELL".into(), shell_profile());
    config
}
