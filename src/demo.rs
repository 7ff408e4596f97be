//! `apn demo`: several nodes on loopback in one process, a sample git repository, the
//! SHELL profile enabled (for the demo only), and a stream of small realistic tasks, some
//! of which fail on purpose so the failure path shows. Prints each panel's login URL (it
//! carries the node's token and sets the panel's session cookie) and one line per finished
//! task; while a task runs, its state goes to the caller as [`DemoUpdate::Running`] (the
//! CLI draws it as a live line). The executors ask the same price, so near-ties spread the
//! tasks across them.
//!
//! With `--settlement jetstream` the demo also starts a nats-server with JetStream on a free
//! port and a demo treasury, points every node's `[settlement]` at it, and mints each node
//! its starting VIBE before the first task: the nodes then pay each other on the network
//! ledger instead of their own ledgers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::actors::distributor::{CreateTaskAttempt, GetTask, Prefer, TaskStatus, TaskView};
use crate::actors::node::{NodeHandle, start_node};
use crate::actors::peer_manager::GetPeers;
use crate::config::{Config, ProfileConfig, SettlementMode};
use crate::harness::NatsServer;
use crate::messages::Vibe;
use crate::network_ledger::stream::{LedgerStream, StreamSettings};
use crate::network_ledger::treasury;

/// How long the demo waits for one task.
const TASK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the nodes get to find each other.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// What every demo node starts with: granted to itself in `local` mode, minted by the demo
/// treasury in `jetstream` mode.
const STARTING_VIBE: Vibe = Vibe::from_whole(1000);
/// How long the demo waits for its mints to reach the first node's projection.
const FUNDING_TIMEOUT: Duration = Duration::from_secs(30);

/// Demo settings from the command line.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Nodes started on loopback; at least 2 are started whatever this says.
    pub nodes: usize,
    /// `None`: run forever (until Ctrl-C).
    pub tasks: Option<usize>,
    /// HTTP port of the first node's panel; node `i` listens on this + `i`.
    pub http_base_port: u16,
    /// NATS relay URL for every node; `None`: no relay, direct libp2p only.
    pub relay: Option<String>,
    /// Keep the temporary data dirs and sample repository after the demo, and print where.
    pub keep: bool,
    /// `local`: each node its own ledger; `jetstream`: a local nats-server holds the network
    /// ledger and a demo treasury funds the nodes.
    pub settlement: SettlementMode,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Preparing the temp dirs, sample repository or configs failed, or nodes never met.
    #[error("demo set-up failed: {0}")]
    Setup(String),
    /// A node failed to start.
    #[error(transparent)]
    Node(#[from] crate::actors::node::NodeError),
}

/// One finished task, for the summary line and for tests.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// The demo task's title, e.g. `Fix a typo in the README`.
    pub title: String,
    /// The task attempt in its final state, as the first node's distributor reports it.
    pub view: TaskView,
    /// Wall-clock seconds from submission to the final state.
    pub seconds: f64,
}

/// The little tasks the demo hands out: (title, shell script, reward, should fail).
const TASKS: &[(&str, &str, u64, bool)] = &[
    (
        "Fix a typo in the README",
        "sed -i 's/Teh /The /' README.md; echo 'APN_PROGRESS testing 80 checking spelling'",
        3,
        false,
    ),
    (
        "Add a test for add()",
        "mkdir -p tests; printf 'from calc import add\\n\\ndef test_add():\\n    assert add(2, 3) == 5\\n' > tests/test_add.py; echo 'APN_PROGRESS testing 70 running tests'",
        5,
        false,
    ),
    (
        "Make the build fail on purpose",
        "echo 'compiling...'; echo 'error: this task fails on purpose' >&2; exit 3",
        2,
        true,
    ),
    (
        "Document the add function",
        "sed -i 's/^def add/# Return the sum of a and b.\\ndef add/' calc.py",
        4,
        false,
    ),
    (
        "Bump the version",
        "sed -i 's/0.1.0/0.2.0/' VERSION; echo bumped",
        2,
        false,
    ),
];

fn git(repo: &Path, args: &[&str]) -> Result<(), DemoError> {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=APN demo",
            "-c",
            "user.email=demo@apn.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .status()
        .map_err(|e| DemoError::Setup(format!("git: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(DemoError::Setup(format!("git {args:?} failed")))
    }
}

/// A small Python project with a typo, in a fresh git repository.
pub fn create_sample_repo(path: &Path) -> Result<(), DemoError> {
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    std::fs::create_dir_all(path).map_err(setup)?;
    std::fs::write(
        path.join("README.md"),
        "# calc\n\nTeh smallest calculator.\n",
    )
    .map_err(setup)?;
    std::fs::write(path.join("calc.py"), "def add(a, b):\n    return a + b\n").map_err(setup)?;
    std::fs::write(path.join("VERSION"), "0.1.0\n").map_err(setup)?;
    git(path, &["init", "-q"])?;
    git(path, &["add", "-A"])?;
    git(path, &["commit", "-q", "-m", "calc: first version"])
}

/// The demo's network ledger: its server, the treasury, the stream.
struct DemoLedger {
    server: NatsServer,
    url: String,
    treasury: crate::identity::Identity,
    stream: LedgerStream,
}

impl DemoLedger {
    /// Start a nats-server with JetStream and create the demo treasury in `root`.
    async fn start(root: &Path) -> Result<DemoLedger, DemoError> {
        let server = NatsServer::start_jetstream().map_err(|e| {
            DemoError::Setup(format!("settlement jetstream needs a nats-server: {e}"))
        })?;
        let url = server.url();
        let (treasury, _) = treasury::init(&root.join("treasury"))
            .map_err(|e| DemoError::Setup(format!("demo treasury: {e}")))?;
        let stream = async {
            let client = crate::network_ledger::stream::connect(&url).await?;
            LedgerStream::open(client, &StreamSettings::default()).await
        }
        .await
        .map_err(|e| DemoError::Setup(format!("ledger stream on {url}: {e}")))?;
        Ok(DemoLedger {
            server,
            url,
            treasury,
            stream,
        })
    }

    /// Mint every node its starting VIBE, then wait until the first node's projection has
    /// all of it (its tasks are paid from it).
    async fn fund(&self, nodes: &[NodeHandle]) -> Result<(), DemoError> {
        for node in nodes {
            treasury::mint(
                &self.stream,
                &self.treasury,
                node.identity.public_key(),
                STARTING_VIBE,
                "demo grant",
            )
            .await
            .map_err(|e| DemoError::Setup(format!("minting: {e}")))?;
        }
        let deadline = Instant::now() + FUNDING_TIMEOUT;
        loop {
            let balance = nodes[0]
                .balance
                .send(crate::protocol::ledger::GetBalance)
                .await
                .ok()
                .and_then(Result::ok);
            if balance.is_some_and(|b| b.balance >= STARTING_VIBE) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DemoError::Setup(format!(
                    "the first node's projection did not see its grant in {FUNDING_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn demo_config(
    index: usize,
    data_dir: PathBuf,
    options: &DemoOptions,
    bootstrap: Option<String>,
    ledger: Option<&DemoLedger>,
) -> Config {
    let mut config = Config::default();
    config.node.data_dir = data_dir;
    config.node.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.node.mdns = false;
    config.node.announce_interval_s = 5;
    config.node.bootstrap = bootstrap.into_iter().collect();
    config.http.bind = format!(
        "127.0.0.1:{}",
        options.http_base_port.saturating_add(index as u16)
    );
    config.relay.url = options.relay.clone().unwrap_or_default();
    config.market.bid_window_ms = 300;
    config.market.heartbeat_timeout_s = 15;
    config.economics.initial_balance = STARTING_VIBE;
    if let Some(ledger) = ledger {
        config.settlement.mode = SettlementMode::Jetstream;
        config.settlement.url = ledger.url.clone();
        config.settlement.treasury = vec![hex::encode(ledger.treasury.public_key())];
    }
    // The same price everywhere: equally good executors are near-ties, and the originator
    // spreads near-ties by recent assignments, so every executor gets work.
    config.economics.compute_rate_per_cpu_hour = Vibe::from_whole(6);
    // The first node originates; the others execute with the SHELL profile (demo only).
    config
        .executor
        .profiles
        .insert("SHELL".into(), ProfileConfig::shell(index > 0));
    config.executor.timeout_s = 60;
    config
}

/// What the demo tells its caller.
#[derive(Debug, Clone)]
pub enum DemoUpdate {
    /// A line of the demo's story (set-up, a finished task's summary).
    Line(String),
    /// A task's state while it runs (sent when it changes).
    Running {
        /// The task's title.
        title: String,
        /// Its current view.
        view: Box<TaskView>,
    },
}

/// `Fix a typo -> apn_1234abcd  coding 40% Editing src/lib.rs` for a running task.
pub fn running_line(title: &str, view: &TaskView) -> String {
    let executor = view.assigned_node.as_deref().unwrap_or("(bidding)");
    let stage = view
        .stage
        .map(|s| format!("{s:?}").to_lowercase())
        .unwrap_or_else(|| format!("{:?}", view.status).to_lowercase());
    format!(
        "{title} -> {executor}  {stage} {}% {}",
        view.progress_percent,
        view.current_action.as_deref().unwrap_or("")
    )
}

/// Run the demo until the tasks are done (or forever). `on_update` receives every line the
/// demo prints and each running task's changes, so the binary shows them and tests collect.
pub async fn run_demo(
    options: DemoOptions,
    mut on_update: impl FnMut(DemoUpdate),
) -> Result<Vec<DemoOutcome>, DemoError> {
    let root = tempfile::Builder::new()
        .prefix("apn-demo-")
        .tempdir()
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let repo = root.path().join("sample-repo");
    create_sample_repo(&repo)?;
    let ledger = match options.settlement {
        SettlementMode::Local => None,
        SettlementMode::Jetstream => Some(DemoLedger::start(root.path()).await?),
    };
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for index in 0..options.nodes.max(2) {
        let bootstrap = nodes
            .first()
            .and_then(|n| n.dial_address())
            .map(|a| a.to_string());
        let config = demo_config(
            index,
            root.path().join(format!("node{index}")),
            &options,
            bootstrap,
            ledger.as_ref(),
        );
        nodes.push(start_node(config).await?);
    }
    if let Some(ledger) = &ledger {
        ledger.fund(&nodes).await?;
        line(
            &mut on_update,
            format!(
                "settlement jetstream on {}: treasury {} minted {STARTING_VIBE} VIBE to each node",
                ledger.url,
                hex::encode(ledger.treasury.public_key())
            ),
        );
    }
    for node in &nodes {
        // The login URL: opening it sets the panel's session cookie (see `web/access/`).
        let url = node.login_url().unwrap_or_else(|| "(no panel)".into());
        line(
            &mut on_update,
            format!("node {} panel {url}", node.identity.node_id()),
        );
    }
    let deadline = Instant::now() + DISCOVERY_TIMEOUT;
    loop {
        let peers = nodes[0]
            .peer_manager
            .send(GetPeers)
            .await
            .unwrap_or_default();
        if peers
            .iter()
            .filter(|p| p.announced && !p.executor_profiles.is_empty())
            .count()
            >= nodes.len() - 1
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(DemoError::Setup(
                "the demo nodes did not find each other".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    line(
        &mut on_update,
        format!(
            "{} nodes connected; submitting tasks from {}",
            nodes.len(),
            nodes[0].identity.node_id()
        ),
    );
    let mut outcomes = Vec::new();
    let mut submitted = 0usize;
    while options.tasks.is_none_or(|limit| submitted < limit) {
        let (title, script, reward, _) = TASKS[submitted % TASKS.len()];
        submitted += 1;
        let started = Instant::now();
        let request = CreateTaskAttempt {
            title: title.into(),
            prompt: script.into(),
            executor_profile: "SHELL".into(),
            repo_path: repo.display().to_string(),
            base: "HEAD".into(),
            requirements: Default::default(),
            reward: Vibe::from_whole(reward),
            prefer: Prefer::Mesh,
            verify_command: None,
        };
        let id = match nodes[0].distributor.send(request).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => {
                line(&mut on_update, format!("task {title:?} not created: {e}"));
                continue;
            }
            Err(e) => return Err(DemoError::Setup(format!("distributor gone: {e}"))),
        };
        let mut last_shown = String::new();
        let view = loop {
            match nodes[0].distributor.send(GetTask(id)).await.ok().flatten() {
                Some(view) if view.status.is_final() => break Some(view),
                _ if started.elapsed() > TASK_TIMEOUT => break None,
                Some(view) => {
                    let shown = running_line(title, &view);
                    if shown != last_shown {
                        last_shown = shown;
                        on_update(DemoUpdate::Running {
                            title: title.into(),
                            view: Box::new(view),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let Some(view) = view else {
            line(
                &mut on_update,
                format!("task {title:?} did not finish in {TASK_TIMEOUT:?}"),
            );
            continue;
        };
        let seconds = started.elapsed().as_secs_f64();
        line(&mut on_update, summary_line(title, &view, seconds));
        outcomes.push(DemoOutcome {
            title: title.into(),
            view,
            seconds,
        });
    }
    for node in nodes {
        node.shutdown().await;
    }
    if let Some(mut ledger) = ledger {
        ledger.server.stop();
    }
    if options.keep {
        let kept = root.keep();
        line(&mut on_update, format!("data kept in {}", kept.display()));
    }
    Ok(outcomes)
}

fn line(on_update: &mut impl FnMut(DemoUpdate), text: String) {
    on_update(DemoUpdate::Line(text));
}

/// `✓ Fix a typo … → apn_1234abcd in 1.2 s, diff 312 B, paid 1 VIBE`.
pub fn summary_line(title: &str, view: &TaskView, seconds: f64) -> String {
    let executor = view.assigned_node.clone().unwrap_or_else(|| "-".into());
    match view.status {
        TaskStatus::Completed => format!(
            "completed  {title} -> {executor} in {seconds:.1} s, diff {} B, paid {} VIBE",
            view.diff.as_ref().map(|d| d.len()).unwrap_or(0),
            view.paid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "0".into()),
        ),
        _ => format!(
            "{:<10} {title} -> {executor} in {seconds:.1} s: {}",
            format!("{:?}", view.status).to_lowercase(),
            view.error.clone().unwrap_or_default()
        ),
    }
}
