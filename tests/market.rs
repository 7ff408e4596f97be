//! Task market and remote execution with real nodes, real git repositories and real
//! processes: request, bid, assign, run remotely, stream back, verify, pay.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use apn::actors::distributor::{CreateTaskAttempt, Prefer, TaskStatus};
use apn::actors::node::NodeHandle;
use apn::actors::relay::{ExecutionEvent, SubscribeExecution};
use apn::actors::settler::{GetBalance, GetReputation};
use apn::config::{Config, ProfileConfig};
use apn::messages::{APNMessage, Envelope, ExecutionStage, Vibe};
use common::*;

const TASK_TIMEOUT: Duration = Duration::from_secs(60);
const INITIAL: u64 = 1000;

/// A small real repository: a.txt, b.txt, one commit.
fn sample_repo() -> tempfile::TempDir {
    git_repo(&[("a.txt", "alpha\n"), ("b.txt", "old value\n")])
}

/// Edits two files and adds one, reporting progress and some logs.
const EDIT_SCRIPT: &str = "echo starting; echo 'APN_PROGRESS coding 40 editing files'; \
    printf 'beta\\n' >> a.txt; sed -i 's/old/new/' b.txt; echo 'fresh file' > c.txt; \
    for i in 1 2 3 4 5; do echo line $i; done; echo 'APN_PROGRESS testing 80 checking'; echo finished";

fn shell_profile(args_before: &[&str]) -> ProfileConfig {
    let mut args: Vec<String> = args_before.iter().map(|a| a.to_string()).collect();
    args.push("{prompt}".into());
    ProfileConfig {
        args,
        ..ProfileConfig::shell(true)
    }
}

fn market_config(dir: &Path, rate: u64, shell: bool) -> Config {
    let mut config = test_config(dir);
    config.economics.compute_rate_per_cpu_hour = Vibe::from_whole(rate);
    config.economics.initial_balance = Vibe::from_whole(INITIAL);
    config.market.bid_window_ms = 400;
    config.market.heartbeat_timeout_s = 3;
    if shell {
        config
            .executor
            .profiles
            .insert("SHELL".into(), shell_profile(&["-c"]));
    } else {
        config.executor.profiles.get_mut("SHELL").unwrap().enabled = false;
    }
    config
}

fn task(repo: &Path, prompt: &str, reward: u64) -> CreateTaskAttempt {
    CreateTaskAttempt {
        title: "edit files".into(),
        prompt: prompt.into(),
        executor_profile: "SHELL".into(),
        repo_path: repo.display().to_string(),
        base: "main".into(),
        requirements: Default::default(),
        reward: Vibe::from_whole(reward),
        prefer: Prefer::Mesh,
        verify_command: None,
    }
}

async fn balance(node: &NodeHandle) -> (Vibe, Vibe) {
    let summary = node.settler.send(GetBalance).await.unwrap().unwrap();
    (summary.balance, summary.escrowed)
}

async fn mesh(configs: Vec<Config>) -> Vec<NodeHandle> {
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for mut config in configs {
        if let Some(first) = nodes.first()
            && !config.node.relay_only
        {
            config.node.bootstrap = vec![first.dial_address().unwrap().to_string()];
        }
        nodes.push(node(config).await);
    }
    for (index, node) in nodes.iter().enumerate() {
        let others: Vec<&NodeHandle> = nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, n)| n)
            .collect();
        assert!(
            wait_until(EVENT_TIMEOUT, || knows_all(node, &others)).await,
            "discovery incomplete"
        );
    }
    nodes
}

fn applies_cleanly(repo: &Path, diff: &str) {
    let mut child = Command::new("git")
        .args(["apply", "--check", "-"])
        .current_dir(repo)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(diff.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "diff does not apply:\n{diff}"
    );
}

#[actix_rt::test]
async fn best_bid_runs_the_task_streams_it_back_and_is_paid() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    // A bid round, not the fast path: both executors bid and the ranking picks.
    let mut origin_config = market_config(dirs[0].path(), 10, false);
    origin_config.market.offer_ttl_ms = 0;
    let nodes = mesh(vec![
        origin_config,
        market_config(dirs[1].path(), 6, true), // cheaper: 1 VIBE for 10 minutes
        market_config(dirs[2].path(), 30, true), // dearer: 5 VIBE
    ])
    .await;
    let (origin, cheap, dear) = (&nodes[0], &nodes[1], &nodes[2]);
    // The originator checks the result with its own command on a scratch checkout.
    let mut checked = task(repo.path(), EDIT_SCRIPT, 10);
    checked.verify_command = Some("grep -q 'new value' b.txt && test -f c.txt".into());
    let id = origin.distributor.send(checked).await.unwrap().unwrap();
    let (events_sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    let _history = origin
        .relay
        .send(SubscribeExecution {
            task_id: id,
            subscriber: event_recipient(events_sender),
        })
        .await
        .unwrap();
    let view = task_final(origin, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(view.bids_received, 2, "both executors bid");
    assert_eq!(
        view.assigned_node.as_deref(),
        Some(cheap.identity.node_id().as_str())
    );
    let diff = view.diff.clone().expect("a diff");
    let mut files = view.files_modified.clone();
    files.sort();
    assert_eq!(files, vec!["a.txt", "b.txt", "c.txt"]);
    applies_cleanly(repo.path(), &diff);
    assert!(
        diff.contains("+fresh file") && diff.contains("+new value"),
        "{diff}"
    );

    // Progress and logs arrived, logs in order.
    let mut lines = Vec::new();
    let mut stages = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            ExecutionEvent::Log { line, .. } if line.stream == "stdout" => lines.push(line.line),
            ExecutionEvent::Progress { percent, .. } => stages.push(percent),
            _ => {}
        }
    }
    let expected: Vec<String> = std::iter::once("starting".to_string())
        .chain((1..=5).map(|i| format!("line {i}")))
        .chain(std::iter::once("finished".to_string()))
        .collect();
    let got: Vec<String> = lines
        .into_iter()
        .filter(|l| !l.starts_with("APN_PROGRESS"))
        .collect();
    assert_eq!(got, expected);
    assert!(
        stages.contains(&40) && stages.contains(&80) && stages.contains(&100),
        "{stages:?}"
    );

    // Escrow went to the winner; balances add up.
    let price = view.paid.expect("paid");
    assert_eq!(price, Vibe::from_whole(1));
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            balance(cheap).await.0 == Vibe::from_whole(INITIAL + 1)
        })
        .await,
        "winner not credited: {:?}",
        balance(cheap).await
    );
    assert_eq!(
        balance(origin).await,
        (Vibe::from_whole(INITIAL - 1), Vibe::ZERO)
    );
    assert_eq!(balance(dear).await.0, Vibe::from_whole(INITIAL));
    for node in nodes {
        node.shutdown().await;
    }
}

struct EventForwarder(tokio::sync::mpsc::UnboundedSender<ExecutionEvent>);
impl actix::Actor for EventForwarder {
    type Context = actix::Context<Self>;
}
impl actix::Handler<ExecutionEvent> for EventForwarder {
    type Result = ();
    fn handle(&mut self, event: ExecutionEvent, _ctx: &mut Self::Context) {
        let _ = self.0.send(event);
    }
}
fn event_recipient(
    sender: tokio::sync::mpsc::UnboundedSender<ExecutionEvent>,
) -> actix::Recipient<ExecutionEvent> {
    use actix::Actor;
    EventForwarder(sender).start().recipient()
}

/// Everything the relay carries from now on.
async fn watch_relay(nats: &NatsServer) -> async_nats::Subscriber {
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    watcher.subscribe(">").await.unwrap()
}

#[actix_rt::test]
async fn through_the_relay_nothing_private_is_seen_in_plaintext() {
    let nats = nats();
    let mut everything = watch_relay(&nats).await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    let secret_file = "TOP-SECRET-CONTENT-41";
    std::fs::write(repo.path().join("secret.txt"), format!("{secret_file}\n")).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "secret"]);
    let prompt = "echo PROMPT-MARKER-97 > /dev/null; echo 'DIFF-MARKER-53' >> secret.txt";
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let mut config = market_config(dir.path(), 6, index == 1);
            config.node.relay_only = true;
            config.relay.url = nats.url();
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let id = nodes[0]
        .distributor
        .send(task(repo.path(), prompt, 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&nodes[0], id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert!(
        view.diff
            .as_deref()
            .unwrap_or("")
            .contains("DIFF-MARKER-53")
    );
    // Everything the relay carried during the task.
    let mut payloads = 0;
    while let Ok(Some(message)) = tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut everything),
    )
    .await
    {
        payloads += 1;
        let bytes = &message.payload;
        for secret in ["PROMPT-MARKER-97", "DIFF-MARKER-53", secret_file] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} seen in plaintext on {}",
                message.subject
            );
        }
    }
    assert!(
        payloads > 5,
        "the watcher saw the task's traffic ({payloads} messages)"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[actix_rt::test]
async fn a_runs_failure_crosses_the_relay_sealed() {
    let nats = nats();
    let mut everything = watch_relay(&nats).await;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let mut config = market_config(dir.path(), 6, index == 1);
            config.node.relay_only = true;
            config.relay.url = nats.url();
            config.market.reassignments_max = 0;
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let id = nodes[0]
        .distributor
        .send(task(repo.path(), "exit 3", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&nodes[0], id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    // The originator read the real stage and error out of the sealed detail.
    let error = view.error.unwrap_or_default();
    assert!(
        error.contains("Coding") && error.contains("exit status 3"),
        "{error}"
    );
    // On the relay, the failure carried no clear error or stage, only the sealed detail.
    let mut failures = 0;
    while let Ok(Some(message)) = tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut everything),
    )
    .await
    {
        let Ok(envelope) = apn::messages::codec::decode::<Envelope>(&message.payload, usize::MAX)
        else {
            continue;
        };
        if let Ok(APNMessage::ExecutionFailed(failed)) =
            apn::messages::decode_message(&envelope.body)
        {
            failures += 1;
            assert!(
                failed.error.is_empty(),
                "clear error on the relay: {failed:?}"
            );
            assert_eq!(
                failed.stage,
                ExecutionStage::Setup,
                "clear stage: {failed:?}"
            );
            assert!(failed.detail.is_some(), "{failed:?}");
        }
    }
    assert!(failures >= 1, "the watcher saw no ExecutionFailed");
    for node in nodes {
        node.shutdown().await;
    }
}

#[actix_rt::test]
async fn heartbeats_cannot_hold_escrow_past_the_run_deadline() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    let mut origin_config = market_config(dirs[0].path(), 6, false);
    origin_config.market.run_deadline_s = 2;
    origin_config.market.reassignments_max = 0;
    origin_config.market.bid_rounds_max = 1;
    let nodes = mesh(vec![origin_config, market_config(dirs[1].path(), 6, true)]).await;
    // The executor keeps reporting progress (every second) on a run that would take 30 s.
    let id = nodes[0]
        .distributor
        .send(task(repo.path(), "sleep 30", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&nodes[0], id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    let error = view.error.unwrap_or_default();
    assert!(error.contains("deadline"), "{error}");
    // Nothing is held and nothing was paid.
    let (balance, escrowed) = balance(&nodes[0]).await;
    assert_eq!(escrowed, Vibe::ZERO);
    assert_eq!(balance, Vibe::from_whole(INITIAL));
    for node in nodes {
        node.shutdown().await;
    }
}

#[actix_rt::test]
async fn a_dead_executor_is_not_paid_and_the_task_moves_to_the_next_bidder() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    let mut slow = market_config(dirs[1].path(), 6, true);
    // The cheaper node is slow: its SHELL profile sleeps before running the prompt.
    slow.executor.profiles.insert(
        "SHELL".into(),
        shell_profile(&["-c", "echo slow; sleep 30; sh -c \"$0\""]),
    );
    let nodes = mesh(vec![
        market_config(dirs[0].path(), 10, false),
        slow,
        market_config(dirs[2].path(), 30, true),
    ])
    .await;
    let mut nodes = nodes.into_iter();
    let (origin, winner, second) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    let id = origin
        .distributor
        .send(task(repo.path(), EDIT_SCRIPT, 10))
        .await
        .unwrap()
        .unwrap();
    // Wait until the cheap node runs it, then stop that node.
    assert!(task_reaches(&origin, id, TaskStatus::Running, TASK_TIMEOUT).await);
    let winner_node = winner.identity.node_id().to_string();
    let winner_key = winner.identity.public_key();
    winner.shutdown().await;
    let view = task_final(&origin, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(
        view.assigned_node.as_deref(),
        Some(second.identity.node_id().as_str())
    );
    assert_eq!(view.attempts, 2);
    assert_eq!(view.paid, Some(Vibe::from_whole(5)));
    assert_eq!(
        balance(&origin).await,
        (Vibe::from_whole(INITIAL - 5), Vibe::ZERO),
        "only the second executor was paid"
    );
    let reputation = origin
        .settler
        .send(GetReputation { peer: winner_key })
        .await
        .unwrap()
        .unwrap();
    assert!(
        reputation < 0.5,
        "{winner_node}'s reputation did not fall: {reputation}"
    );
    origin.shutdown().await;
    second.shutdown().await;
}

#[actix_rt::test]
async fn a_task_nobody_can_run_fails_with_a_reason_and_holds_nothing() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    let nodes = mesh(vec![
        market_config(dirs[0].path(), 10, false),
        market_config(dirs[1].path(), 600, true),
    ])
    .await;
    let mut unknown = task(repo.path(), "true", 10);
    unknown.executor_profile = "NO_SUCH_AGENT".into();
    let id = nodes[0].distributor.send(unknown).await.unwrap().unwrap();
    let view = task_final(&nodes[0], id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed);
    assert!(
        view.error
            .as_deref()
            .unwrap_or("")
            .contains("NO_SUCH_AGENT"),
        "{view:?}"
    );
    // Reward below every node's minimum price (600 VIBE/hour = 100 VIBE for 10 minutes).
    let id = nodes[0]
        .distributor
        .send(task(repo.path(), "true", 3))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&nodes[0], id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed);
    assert!(
        view.error.as_deref().unwrap_or("").contains("no node bid"),
        "{view:?}"
    );
    assert_eq!(
        balance(&nodes[0]).await,
        (Vibe::from_whole(INITIAL), Vibe::ZERO)
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[actix_rt::test]
async fn local_runs_need_no_payment_and_timeouts_kill_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let repo = sample_repo();
    let node = node(market_config(dir.path(), 10, true)).await;
    let mut local = task(repo.path(), EDIT_SCRIPT, 10);
    local.prefer = Prefer::Auto;
    let id = node.distributor.send(local).await.unwrap().unwrap();
    let view = task_final(&node, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(view.assigned_node.as_deref(), Some("local"));
    assert_eq!(view.paid, None);
    assert_eq!(
        balance(&node).await,
        (Vibe::from_whole(INITIAL), Vibe::ZERO)
    );
    applies_cleanly(repo.path(), view.diff.as_deref().unwrap());
    node.shutdown().await;

    // The timeout's kill, seen from outside: a node without the sandbox, so the script's pid
    // is one this test can watch and the marker's directory is writable (in the sandbox the
    // run has its own PID namespace and cannot write there, and the check below would pass
    // whatever happened; the sandbox's own containment is tests/sandbox.rs's business).
    let dir = tempfile::tempdir().unwrap();
    let mut unsandboxed = market_config(dir.path(), 10, true);
    unsandboxed.executor.sandbox = apn::config::SandboxMode::Off;
    let node = common::node(unsandboxed).await;
    let marker = dir.path().join("background-still-alive");
    let pid_file = dir.path().join("background.pid");
    let mut slow = task(
        repo.path(),
        &format!(
            "(sleep 3; touch {}) & echo $! > {}; sleep 30",
            marker.display(),
            pid_file.display()
        ),
        10,
    );
    slow.prefer = Prefer::Local;
    slow.requirements.timeout_s = 1;
    let id = node.distributor.send(slow).await.unwrap().unwrap();
    let view = task_final(&node, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed);
    assert!(
        view.error.as_deref().unwrap_or("").contains("timed out"),
        "{view:?}"
    );
    // The background child was in the killed group: it is gone, and it never got to touch
    // the marker (had it lived, it would have ended only after touching it).
    assert!(
        common::process::gone(common::process::read_pid(&pid_file), EVENT_TIMEOUT).await,
        "a process of the timed-out run survived"
    );
    assert!(!marker.exists(), "a process of the timed-out run survived");
    node.shutdown().await;
}

#[actix_rt::test]
async fn a_burst_from_one_originator_spreads_over_equal_executors() {
    const TASKS: usize = 6;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    // Three equal executors, each with a slot (and a reservation allowance) for every task
    // of the burst: nothing but the originator's choice spreads the tasks.
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let mut config = market_config(dir.path(), 6, index > 0);
            config.resources.max_concurrent_tasks = TASKS as u32;
            config.market.reservations_per_peer = TASKS as u32;
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let origin = &nodes[0];
    // Each run lasts a moment, so no executor has finished one (and gained reputation over
    // the others) while the burst is judged.
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        let id = origin
            .distributor
            .send(task(repo.path(), "sleep 2; echo done > done.txt", 10))
            .await
            .unwrap()
            .unwrap();
        ids.push(id);
    }
    let mut executors = std::collections::BTreeMap::<String, usize>::new();
    for id in ids {
        let view = task_final(origin, id, TASK_TIMEOUT).await;
        assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
        *executors
            .entry(view.assigned_node.clone().unwrap())
            .or_default() += 1;
    }
    let expected: std::collections::BTreeSet<String> = nodes[1..]
        .iter()
        .map(|n| n.identity.node_id().to_string())
        .collect();
    assert_eq!(
        executors
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected,
        "tasks per executor: {executors:?}"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// The task's assignment came less than half of `window_ms` after its creation (the
/// window closed early, it was not waited out); returns that delay.
fn assigned_before_half_the_window(
    view: &apn::actors::distributor::TaskView,
    window_ms: u64,
) -> chrono::TimeDelta {
    let assigned = view.assigned_at.expect("assignment time recorded") - view.created_at;
    assert!(
        assigned.num_milliseconds() < (window_ms / 2) as i64,
        "assigned {} ms after creation with a {window_ms} ms window",
        assigned.num_milliseconds()
    );
    assigned
}

#[actix_rt::test]
async fn a_bid_window_closes_once_every_known_executor_answered() {
    const WINDOW_MS: u64 = 5000;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    // A window far longer than the run: the task may only finish quickly if the window
    // closed on the one known executor's bid.
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let mut config = market_config(dir.path(), 6, index > 0);
            config.market.bid_window_ms = WINDOW_MS;
            // No fast path: this is about the bid round itself.
            config.market.offer_ttl_ms = 0;
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let origin = &nodes[0];
    let id = origin
        .distributor
        .send(task(repo.path(), "echo fast > fast.txt", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(origin, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(view.bids_received, 1, "{view:?}");
    let assigned = assigned_before_half_the_window(&view, WINDOW_MS);
    let started = view.started_at.expect("start time recorded") - view.created_at;
    assert!(
        started >= assigned,
        "started before it was assigned: {view:?}"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[actix_rt::test]
async fn a_refusal_from_an_eligible_executor_closes_the_window_on_the_other_bid() {
    const WINDOW_MS: u64 = 5000;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    // Two executors announce SHELL with free slots; the second asks far more than the
    // reward (600 VIBE/h for the default 600 s estimate: 100 VIBE), so it refuses. Without
    // its refusal the window would wait the full 5 s for it.
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let rate = if index == 2 { 600 } else { 6 };
            let mut config = market_config(dir.path(), rate, index > 0);
            config.market.bid_window_ms = WINDOW_MS;
            // No fast path: this is about the bid round itself.
            config.market.offer_ttl_ms = 0;
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let origin = &nodes[0];
    // Both executors announced a free slot: both are eligible.
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            peers(origin)
                .await
                .iter()
                .filter(|p| p.announced && p.free_slots > 0)
                .count()
                == 2
        })
        .await,
        "the executors' free slots were never announced"
    );
    let id = origin
        .distributor
        .send(task(repo.path(), "echo fast > fast.txt", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(origin, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(view.bids_received, 1, "{view:?}");
    assert_eq!(
        view.assigned_node.as_deref(),
        Some(nodes[1].identity.node_id().to_string().as_str())
    );
    assigned_before_half_the_window(&view, WINDOW_MS);
    for node in nodes {
        node.shutdown().await;
    }
}

/// True once `origin` holds a live offer (an announcement with a free slot) from `count`
/// executors.
async fn offers_known(origin: &NodeHandle, count: usize) -> bool {
    wait_until(EVENT_TIMEOUT, || async {
        peers(origin)
            .await
            .iter()
            .filter(|p| p.announced && p.free_slots > 0 && p.announced_at.is_some())
            .count()
            == count
    })
    .await
}

#[actix_rt::test]
async fn a_live_offer_assigns_the_task_without_a_bid_round() {
    const WINDOW_MS: u64 = 5000;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let mut config = market_config(dir.path(), 6, index > 0);
            config.market.bid_window_ms = WINDOW_MS;
            config.market.offer_ttl_ms = 60_000;
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let origin = &nodes[0];
    assert!(offers_known(origin, 1).await, "no offer announced");
    let id = origin
        .distributor
        .send(task(repo.path(), "echo fast > fast.txt", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(origin, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert!(view.via_offer, "not assigned through the offer: {view:?}");
    // The executor's acceptance is its one answer; nobody else was asked.
    assert_eq!(view.bids_received, 1, "{view:?}");
    assert_eq!(view.attempts, 1, "{view:?}");
    assigned_before_half_the_window(&view, WINDOW_MS);
    for node in nodes {
        node.shutdown().await;
    }
}

#[actix_rt::test]
async fn a_refused_offer_falls_back_to_a_bid_round_at_once() {
    const WINDOW_MS: u64 = 5000;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let repo = sample_repo();
    // The cheapest offer (1 VIBE for the 600 s estimate) is from an executor that runs no
    // peer's task (accept policy `none`, which its announcement does not show): asked
    // first, it refuses. The other (5 VIBE) bids in the full round that follows.
    let configs = dirs
        .iter()
        .enumerate()
        .map(|(index, dir)| {
            let rate = if index == 1 { 6 } else { 30 };
            let mut config = market_config(dir.path(), rate, index > 0);
            config.market.bid_window_ms = WINDOW_MS;
            config.market.offer_ttl_ms = 60_000;
            if index == 1 {
                config.accept.policy = apn::config::AcceptPolicy::None;
            }
            config
        })
        .collect();
    let nodes = mesh(configs).await;
    let origin = &nodes[0];
    assert!(offers_known(origin, 2).await, "offers not announced");
    let id = origin
        .distributor
        .send(task(repo.path(), "echo fast > fast.txt", 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(origin, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert!(!view.via_offer, "{view:?}");
    assert_eq!(
        view.assigned_node.as_deref(),
        Some(nodes[2].identity.node_id().to_string().as_str()),
        "{view:?}"
    );
    assert_eq!(view.paid, Some(Vibe::from_whole(5)), "{view:?}");
    // Neither the refusal nor the full round after it waited out a window.
    assigned_before_half_the_window(&view, WINDOW_MS);
    for node in nodes {
        node.shutdown().await;
    }
}
