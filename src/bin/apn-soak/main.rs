//! `apn-soak`: a mesh of separate `apn node` processes on loopback and a real nats-server,
//! loaded with tasks from several originators while faults are injected: nodes SIGKILLed
//! and restarted, one node paused with SIGSTOP for longer than the heartbeat timeout, the
//! relay restarted. Then it drains and audits: every task completed or failed with a
//! reason, no escrow held, every payment debited once and credited once across all
//! ledgers (`apn::ledger::audit`), each ledger's invariants, no panic, memory under a bound.
//!
//! With `--settlement jetstream` the nodes pay on the network ledger instead, a stream on a
//! three-server JetStream cluster (R3); one of its servers is killed and restarted as well,
//! and the audit compares every node's projection with the stream (see `settlement.rs`).
//!
//! Prints JSON lines (one per fault, one summary) and exits 0 only when the audit is clean.
//! `--quick` is the CI size; the defaults are the long run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apn::actors::distributor::{CreateTaskAttempt, Prefer};
use apn::client::{ApiClient, json_text};
use apn::harness::{NatsServer, free_port};
use apn::identity::Identity;
use apn::ledger::audit;
use apn::messages::{TaskRequirements, Vibe};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[derive(Parser, Debug, Clone)]
#[command(about = "Soak the mesh with faults, then audit every ledger")]
struct Args {
    /// Nodes (separate processes).
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// How many of them talk only through the relay.
    #[arg(long, default_value_t = 2)]
    relay_only: usize,
    /// Tasks submitted in all.
    #[arg(long, default_value_t = 300)]
    tasks: usize,
    /// Seconds over which the tasks are submitted (faults run during this time).
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Seconds between SIGKILLs of a random node.
    #[arg(long, default_value_t = 12)]
    kill_every_s: u64,
    /// Bound on each node's resident memory, in MiB.
    #[arg(long, default_value_t = 256)]
    memory_bound_mib: u64,
    /// The CI size: 60 tasks over 40 s, a SIGKILL every 6 s.
    #[arg(long)]
    quick: bool,
    /// The `apn` binary (default: next to this one).
    #[arg(long)]
    apn: Option<PathBuf>,
    /// Keep the run's directory (logs, ledgers) and print where it is.
    #[arg(long)]
    keep: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where VIBE lives: `local` (each node's ledger) or `jetstream` (the network ledger on
    /// a three-server cluster).
    #[arg(long, value_enum, default_value = "local")]
    settlement: Settlement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Settlement {
    Local,
    Jetstream,
}

/// Heartbeat timeout of the soak's nodes; the pause lasts well beyond it.
const HEARTBEAT_TIMEOUT_S: u64 = 4;
const PAUSE: Duration = Duration::from_secs(HEARTBEAT_TIMEOUT_S * 2 + 2);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

fn emit(value: Value) {
    println!("{value}");
}

mod nodes;
mod settlement;

use nodes::{NodeProc, node_config, rss_kib, sample_repo};

/// A submitted task: which originator, its id.
struct Submitted {
    originator: usize,
    id: String,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.tasks = 60;
        args.seconds = 40;
        args.kill_every_s = 6;
    }
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("apn-soak: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    if args.nodes < 3 || args.relay_only >= args.nodes - 1 {
        bail!("need at least 3 nodes and at least 2 that listen");
    }
    let apn = match &args.apn {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .join("apn"),
    };
    let root = tempfile::Builder::new().prefix("apn-soak-").tempdir()?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut nats = NatsServer::start()?;
    let listening = args.nodes - args.relay_only;

    // Identities first, so every node can be told the others' peer ids.
    let mut ports = Vec::new();
    let mut identities = Vec::new();
    for index in 0..args.nodes {
        let data_dir = root.path().join(format!("node{index}"));
        identities.push(Identity::load_or_create(&data_dir)?);
        ports.push((free_port()?, free_port()?));
    }
    let seeds: Vec<String> = (0..2)
        .map(|i| {
            format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                ports[i].0,
                identities[i].peer_id()
            )
        })
        .collect();
    let mut ledger = match args.settlement {
        Settlement::Local => None,
        Settlement::Jetstream => {
            let accounts: Vec<[u8; 32]> = identities.iter().map(Identity::public_key).collect();
            Some(settlement::SoakLedger::start(&accounts)?)
        }
    };
    let mut nodes = Vec::new();
    for index in 0..args.nodes {
        let data_dir = root.path().join(format!("node{index}"));
        let relay_only = index >= listening;
        let http: SocketAddr = format!("127.0.0.1:{}", ports[index].1).parse()?;
        let bootstrap: Vec<String> = if relay_only {
            Vec::new()
        } else {
            seeds
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, s)| s.clone())
                .collect()
        };
        let config = root.path().join(format!("node{index}.toml"));
        let mut text = node_config(
            &data_dir,
            (!relay_only).then_some(ports[index].0),
            &bootstrap,
            &nats.url(),
            http,
        );
        if let Some(ledger) = &ledger {
            text.push_str(&ledger.config_section());
        }
        std::fs::write(&config, text)?;
        nodes.push(NodeProc {
            name: format!("node{index}{}", if relay_only { "-relay" } else { "" }),
            data_dir,
            config,
            log: root.path().join(format!("node{index}.log")),
            http,
            public_key: identities[index].public_key(),
            // Two listening originators and one relay-only one.
            originator: index < 2 || index == args.nodes - 1,
            child: None,
            exits: Vec::new(),
        });
    }
    for node in &mut nodes {
        node.start(&apn)?;
    }
    let originators: Vec<usize> = (0..args.nodes).filter(|i| nodes[*i].originator).collect();
    let mut repos = BTreeMap::new();
    for &index in &originators {
        let repo = root.path().join(format!("repo{index}"));
        sample_repo(&repo)?;
        repos.insert(index, repo);
    }
    // Wait until every node has heard of every other (announcements through the relay too).
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let all = nodes.iter().all(|node| {
            ApiClient::new(&node.url(), None)
                .peers()
                .is_ok_and(|peers| peers.iter().filter(|p| p.announced).count() + 1 >= args.nodes)
        });
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!("the mesh did not form within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let nodes = Arc::new(Mutex::new(nodes));
    let running = Arc::new(AtomicBool::new(true));
    let max_rss = Arc::new(Mutex::new(vec![0u64; args.nodes]));
    let sampler = {
        let (nodes, running, max_rss) = (nodes.clone(), running.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let pids: Vec<Option<i32>> = match nodes.lock() {
                    Ok(nodes) => nodes.iter().map(NodeProc::pid).collect(),
                    Err(_) => return,
                };
                if let Ok(mut max) = max_rss.lock() {
                    for (index, pid) in pids.iter().enumerate() {
                        if let Some(kib) = pid.and_then(rss_kib) {
                            max[index] = max[index].max(kib);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // Submit at an even pace from a thread; faults run on this one.
    let started = Instant::now();
    // Each originator's URL and API token (creating a task needs it, loopback included).
    let urls: Vec<(usize, String, Option<String>)> = {
        let nodes = nodes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        originators
            .iter()
            .map(|&i| (i, nodes[i].url(), ApiClient::token_in(&nodes[i].data_dir)))
            .collect()
    };
    let submitter = {
        let (tasks, seconds, seed) = (args.tasks, args.seconds, args.seed);
        let repos = repos.clone();
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            let mut submitted = Vec::new();
            let mut refused = 0u64;
            let gap = Duration::from_secs_f64(seconds as f64 / tasks.max(1) as f64);
            for n in 0..tasks {
                let due = started + gap * n as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let prompt = if rng.gen_ratio(1, 20) {
                    "echo failing on purpose >&2; exit 3".to_string()
                } else {
                    let ms = rng.gen_range(200..1200);
                    format!(
                        "echo 'APN_PROGRESS coding 50 writing'; echo soak {n} > task-{n}.txt; sleep {}.{:03}; echo done",
                        ms / 1000,
                        ms % 1000
                    )
                };
                // Try the originators in turn from a random one; a killed one refuses.
                let first = rng.gen_range(0..urls.len());
                for k in 0..urls.len() {
                    let (index, url, token) = &urls[(first + k) % urls.len()];
                    let request = CreateTaskAttempt {
                        title: format!("soak {n}"),
                        prompt: prompt.clone(),
                        executor_profile: "SHELL".into(),
                        repo_path: repos[index].display().to_string(),
                        base: "main".into(),
                        requirements: TaskRequirements {
                            timeout_s: 20,
                            ..TaskRequirements::default()
                        },
                        reward: Vibe::from_whole(5),
                        prefer: Prefer::Mesh,
                        verify_command: None,
                    };
                    match ApiClient::new(url, token.clone()).create_task(&request) {
                        Ok(created) => {
                            submitted.push(Submitted {
                                originator: *index,
                                id: created.id.to_string(),
                            });
                            break;
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
            (submitted, refused)
        })
    };

    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut next_kill = started + Duration::from_secs(args.kill_every_s);
    let pause_at = started + Duration::from_secs(args.seconds / 3);
    let relay_at = started + Duration::from_secs(args.seconds / 2);
    let ledger_server_at = started + Duration::from_secs(args.seconds * 2 / 3);
    let (mut paused, mut relay_restarted) = (false, false);
    let mut ledger_server_restarted = ledger.is_none();
    let end = started + Duration::from_secs(args.seconds);
    // The paused node: a listening non-originator (an executor only).
    let pause_index = (0..args.nodes)
        .find(|i| *i < listening && !originators.contains(i))
        .unwrap_or(listening - 1);
    while Instant::now() < end {
        let now = Instant::now();
        if !paused && now >= pause_at {
            paused = true;
            with_nodes(&nodes, |nodes| nodes[pause_index].signal(libc::SIGSTOP))?;
            emit(json!({"fault": "sigstop", "node": pause_index, "seconds": PAUSE.as_secs()}));
            std::thread::sleep(PAUSE);
            with_nodes(&nodes, |nodes| nodes[pause_index].signal(libc::SIGCONT))?;
            *faults.entry("sigstop").or_default() += 1;
        } else if !relay_restarted && now >= relay_at {
            relay_restarted = true;
            nats.stop();
            std::thread::sleep(Duration::from_secs(1));
            nats.restart()?;
            emit(json!({"fault": "relay_restart"}));
            *faults.entry("relay_restart").or_default() += 1;
        } else if !ledger_server_restarted && now >= ledger_server_at {
            ledger_server_restarted = true;
            let server = rng.gen_range(0..3);
            if let Some(ledger) = &mut ledger {
                ledger.restart_server(server)?;
            }
            emit(json!({"fault": "ledger_server_restart", "server": server}));
            *faults.entry("ledger_server_restart").or_default() += 1;
        } else if now >= next_kill {
            next_kill = now + Duration::from_secs(args.kill_every_s);
            let victim = loop {
                let index = rng.gen_range(0..args.nodes);
                if index != pause_index || paused {
                    break index;
                }
            };
            let down = Duration::from_millis(rng.gen_range(500..3000));
            with_nodes(&nodes, |nodes| nodes[victim].kill())?;
            emit(json!({"fault": "sigkill", "node": victim, "down_ms": down.as_millis() as u64}));
            std::thread::sleep(down);
            with_nodes(&nodes, |nodes| nodes[victim].start(&apn))??;
            *faults.entry("sigkill").or_default() += 1;
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (submitted, refused) = submitter
        .join()
        .map_err(|_| anyhow::anyhow!("the submitter panicked"))?;

    // Drain: every task final, then every outbox empty.
    let mut problems = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut failure_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let urls: BTreeMap<usize, String> = with_nodes(&nodes, |nodes| {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (i, n.url()))
            .collect()
    })?;
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut pending: Vec<&Submitted> = submitted.iter().collect();
    let mut completed_at = Instant::now();
    while !pending.is_empty() && Instant::now() < drain_deadline {
        let mut still = Vec::new();
        for task in pending {
            let client = ApiClient::new(&urls[&task.originator], None);
            match client.get_task(&task.id) {
                Ok(view) if view.status.is_final() => {
                    let status = json_text(&view.status);
                    if status != "completed" {
                        let reason = view.error.unwrap_or_default();
                        if reason.is_empty() {
                            problems.push(format!("task {} {status} without a reason", task.id));
                        }
                        *failure_reasons.entry(reason_class(&reason)).or_default() += 1;
                    }
                    *statuses.entry(status).or_default() += 1;
                }
                _ => still.push(task),
            }
        }
        pending = still;
        completed_at = Instant::now();
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for task in &pending {
        problems.push(format!(
            "task {} on node{} never finished",
            task.id, task.originator
        ));
    }
    let work_seconds = completed_at.duration_since(started).as_secs_f64();
    // Payments still in flight settle within a few retries.
    let outbox_deadline = Instant::now() + Duration::from_secs(60);
    let ledgers: Vec<(PathBuf, [u8; 32])> = with_nodes(&nodes, |nodes| {
        nodes
            .iter()
            .map(|n| (n.data_dir.join(apn::ledger::LEDGER_FILE), n.public_key))
            .collect()
    })?;
    while Instant::now() < outbox_deadline {
        if ledgers.iter().all(|(path, _)| undelivered(path) == Some(0)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    running.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    with_nodes(&nodes, |nodes| nodes.iter_mut().for_each(NodeProc::stop))?;

    // Audit.
    let mut dumps = Vec::new();
    for (path, key) in &ledgers {
        dumps.push(audit::dump(path, key).with_context(|| format!("reading {}", path.display()))?);
    }
    let reconciliation = audit::reconcile(&dumps);
    problems.extend(reconciliation.problems.iter().cloned());
    let network_ledger = match &ledger {
        None => Value::Null,
        Some(ledger) => {
            let dirs: Vec<PathBuf> = with_nodes(&nodes, |nodes| {
                nodes.iter().map(|n| n.data_dir.clone()).collect()
            })?;
            let (found, summary) = ledger.audit(&dirs)?;
            problems.extend(found);
            summary
        }
    };
    let max_rss_mib: Vec<u64> = max_rss
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .map(|kib| kib.div_ceil(1024))
        .collect();
    with_nodes(&nodes, |nodes| {
        for (index, node) in nodes.iter().enumerate() {
            for exit in &node.exits {
                problems.push(format!("{}: {exit}", node.name));
            }
            if let Some(line) = first_panic(&node.log) {
                problems.push(format!("{} panicked: {line}", node.name));
            }
            if max_rss_mib[index] > args.memory_bound_mib {
                problems.push(format!(
                    "{}: {} MiB resident, over the {} MiB bound",
                    node.name, max_rss_mib[index], args.memory_bound_mib
                ));
            }
        }
    })?;
    let completed = statuses.get("completed").copied().unwrap_or(0);
    let clean = problems.is_empty();
    emit(json!({
        "soak": "summary",
        "ok": clean,
        "nodes": args.nodes,
        "relay_only": args.relay_only,
        "tasks_submitted": submitted.len(),
        "submissions_refused": refused,
        "statuses": statuses,
        "failure_reasons": failure_reasons,
        "tasks_per_minute": (completed as f64 * 60.0 / work_seconds.max(1.0) * 10.0).round() / 10.0,
        "work_seconds": work_seconds.round(),
        "faults": faults,
        "payments_matched": reconciliation.payments_matched,
        "settlement": format!("{:?}", args.settlement).to_lowercase(),
        "network_ledger": network_ledger,
        "max_rss_mib": max_rss_mib,
        "memory_bound_mib": args.memory_bound_mib,
        "problems": problems,
    }));
    if args.keep {
        let kept = root.keep();
        emit(json!({"kept": kept.display().to_string()}));
    }
    Ok(clean)
}

fn with_nodes<T>(
    nodes: &Arc<Mutex<Vec<NodeProc>>>,
    work: impl FnOnce(&mut Vec<NodeProc>) -> T,
) -> anyhow::Result<T> {
    let mut nodes = nodes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok(work(&mut nodes))
}

/// A failure reason without its ids and numbers, to count reasons by kind.
fn reason_class(reason: &str) -> String {
    let class: String = reason
        .chars()
        .take_while(|c| *c != ':' && *c != '(')
        .filter(|c| !c.is_ascii_digit())
        .collect();
    class.trim().to_string()
}

/// Payments in a running node's outbox (`None` while the ledger cannot be read).
fn undelivered(ledger: &Path) -> Option<u64> {
    rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row("SELECT COUNT(*) FROM outbox", [], |row| {
                row.get::<_, i64>(0)
            })
        })
        .map(|n| n.max(0) as u64)
        .ok()
}

fn first_panic(log: &Path) -> Option<String> {
    let file = File::open(log).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("panicked"))
}
