//! The binary as a user runs it: `apn demo`, and `status`, `peers`, `ledger`, `task submit`
//! against a real node, with exit codes and `--json` output that parses.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, git_repo};

const APN: &str = env!("CARGO_BIN_EXE_apn");
const WAIT: Duration = Duration::from_secs(60);

/// Run to completion with a timeout.
fn run(command: &mut Command) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    receiver
        .recv_timeout(Duration::from_secs(180))
        .expect("command finishes")
        .unwrap()
}

#[test]
fn demo_runs_tasks_remotely_pays_and_reports_the_failure() {
    let output = run(Command::new(APN).env_remove("RUST_LOG").args([
        "demo",
        "--nodes",
        "3",
        "--tasks",
        "5",
        "--http-base-port",
        &free_port().to_string(),
    ]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Each panel is printed as its login URL, which carries that node's token.
    let logins: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" panel http://127.0.0.1:"))
        .collect();
    assert_eq!(logins.len(), 3, "{stdout}");
    for line in logins {
        let token = line.split("/?token=").nth(1).unwrap_or("");
        assert!(
            token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()),
            "{line}"
        );
    }
    let paid = stdout
        .lines()
        .filter(|l| {
            l.starts_with("completed") && l.contains("-> apn_") && !l.contains("paid 0 VIBE")
        })
        .count();
    assert!(paid >= 1, "no task ran remotely and was paid:\n{stdout}");
    // The two executors ask the same price: near-ties spread the tasks over both.
    let executors: std::collections::HashSet<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("completed"))
        .filter_map(|l| l.split("-> ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(executors.len(), 2, "the tasks did not spread:\n{stdout}");
    // The demo's own story: its nodes log at warn unless RUST_LOG says otherwise.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("failed") && l.contains("fail on purpose")),
        "{stdout}"
    );
}

struct RunningNode {
    child: Child,
    url: String,
    data_dir: tempfile::TempDir,
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(shell: bool) -> RunningNode {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = Command::new(APN);
    command
        .args([
            "node",
            "--no-mdns",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--http",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if shell {
        command.env(
            "APN_EXECUTOR_PROFILES",
            "{ SHELL = { program = \"sh\", args = [\"-c\", \"{prompt}\"] } }",
        );
    }
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let (login_sender, logins) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("?token=") {
                let _ = login_sender.send(line.clone());
            }
            if line.contains("node started") {
                let _ = sender.send(());
            }
        }
    });
    receiver.recv_timeout(WAIT).expect("node starts");
    // The login URL is logged once, before the node reports that it started.
    let logged: Vec<String> = logins.try_iter().collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    let token = std::fs::read_to_string(data_dir.path().join("api.token")).unwrap();
    assert!(
        logged[0].contains(&format!("http://127.0.0.1:{port}/?token={}", token.trim())),
        "{logged:?}"
    );
    RunningNode {
        child,
        url: format!("http://127.0.0.1:{port}"),
        data_dir,
    }
}

fn json_of(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn status_peers_ledger_and_task_submit_against_a_running_node() {
    let node = start_node(true);
    let status = run(Command::new(APN).args(["status", "--json", "--node", &node.url]));
    assert!(status.status.success());
    let value = json_of(&status);
    assert!(value["node_id"].as_str().unwrap().starts_with("apn_"));
    let human = run(Command::new(APN).args(["status", "--node", &node.url]));
    assert!(String::from_utf8_lossy(&human.stdout).contains("balance   1000 VIBE"));

    let peers = run(Command::new(APN).args(["peers", "--json", "--node", &node.url]));
    assert!(peers.status.success());
    assert!(json_of(&peers).is_array());

    // A repository and a task the node runs itself (it has the SHELL profile).
    let repo = git_repo(&[("notes.txt", "one\n")]);
    // Loopback is not trust: without the token the node refuses the task, with a reason.
    let refused = run(Command::new(APN)
        .env_remove("APN_TOKEN")
        .args([
            "task",
            "submit",
            "--node",
            &node.url,
            "--profile",
            "SHELL",
            "--reward",
            "3",
            "--prompt",
            "echo no >> notes.txt",
            "--repo",
        ])
        .arg(repo.path()));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("missing_token"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let submit = run(Command::new(APN)
        .arg("task")
        .arg("submit")
        .arg("--data-dir")
        .arg(node.data_dir.path())
        .args([
            "--json",
            "--node",
            &node.url,
            "--profile",
            "SHELL",
            "--reward",
            "3",
            "--prompt",
            "echo two >> notes.txt",
            "--repo",
        ])
        .arg(repo.path()));
    assert!(
        submit.status.success(),
        "{}",
        String::from_utf8_lossy(&submit.stderr)
    );
    let task = json_of(&submit);
    assert_eq!(task["status"], "completed");
    assert!(task["diff"].as_str().unwrap().contains("+two"));
    // Followed for people: the run's log lines arrive through the node's event stream
    // (polling the task would never show them), then the diff is printed.
    let followed = run(Command::new(APN)
        .arg("task")
        .arg("submit")
        .arg("--data-dir")
        .arg(node.data_dir.path())
        .args([
            "--follow",
            "--node",
            &node.url,
            "--profile",
            "SHELL",
            "--reward",
            "3",
            "--prompt",
            "echo streamed-through-sse; echo three >> notes.txt",
            "--repo",
        ])
        .arg(repo.path()));
    let stderr = String::from_utf8_lossy(&followed.stderr);
    assert!(followed.status.success(), "{stderr}");
    assert!(
        stderr.contains("stdout | streamed-through-sse"),
        "the log line did not stream: {stderr}"
    );
    assert!(!stderr.contains("polling instead"), "{stderr}");
    assert!(String::from_utf8_lossy(&followed.stdout).contains("+three"));
    let token = std::fs::read_to_string(node.data_dir.path().join("api.token")).unwrap();
    let failing = run(Command::new(APN)
        .env("APN_TOKEN", token.trim())
        .args([
            "task",
            "submit",
            "--node",
            &node.url,
            "--profile",
            "SHELL",
            "--reward",
            "3",
            "--prompt",
            "exit 7",
            "--repo",
        ])
        .arg(repo.path()));
    assert_eq!(failing.status.code(), Some(1), "a failed task exits 1");
    let list = run(Command::new(APN).args(["task", "list", "--json", "--node", &node.url]));
    assert_eq!(json_of(&list).as_array().unwrap().len(), 3);

    let ledger = run(Command::new(APN)
        .args(["ledger", "--json", "--data-dir"])
        .arg(node.data_dir.path()));
    assert!(
        ledger.status.success(),
        "{}",
        String::from_utf8_lossy(&ledger.stderr)
    );
    let report = json_of(&ledger);
    assert_eq!(report["balance"], "1000");
    assert_eq!(report["escrowed"], "0");

    // Usage errors exit 2; a node that is not there exits 1.
    let usage = run(Command::new(APN).args(["task", "submit", "--node", &node.url]));
    assert_eq!(usage.status.code(), Some(2));
    let unreachable = run(Command::new(APN).args([
        "status",
        "--node",
        &format!("http://127.0.0.1:{}", free_port()),
    ]));
    assert_eq!(unreachable.status.code(), Some(1));
}

#[test]
fn demo_settles_on_the_network_ledger_with_a_demo_treasury() {
    let output = run(Command::new(APN)
        .args([
            "demo",
            "--nodes",
            "2",
            "--tasks",
            "2",
            "--settlement",
            "jetstream",
            "--http-base-port",
            &free_port().to_string(),
        ])
        .env("PATH", path_with_sbin()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("settlement jetstream on nats://") && l.contains("minted")),
        "{stdout}"
    );
    let paid = stdout
        .lines()
        .filter(|l| l.starts_with("completed") && !l.contains("paid 0 VIBE"))
        .count();
    assert!(
        paid >= 1,
        "no task was paid on the network ledger:\n{stdout}"
    );
}

/// Debian installs nats-server in /usr/sbin.
fn path_with_sbin() -> String {
    format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default())
}

#[test]
fn treasury_mints_on_the_stream_and_ledger_reads_the_projection() {
    let nats = common::NatsServer::start_jetstream().unwrap();
    let work = tempfile::tempdir().unwrap();
    let treasury_dir = work.path().join("treasury");
    let init = run(Command::new(APN)
        .args(["treasury", "init", "--json", "--dir"])
        .arg(&treasury_dir));
    assert!(init.status.success(), "{init:?}");
    let treasury_key = json_of(&init)["public_key"].as_str().unwrap().to_string();
    assert_eq!(treasury_key.len(), 64);

    // A node's data dir (its key) and the mint, addressed by peer id.
    let node_dir = work.path().join("node");
    let node = apn::identity::Identity::load_or_create(&node_dir).unwrap();
    let mint = |to: &str, dir: &std::path::Path| {
        run(Command::new(APN)
            .args([
                "treasury", "mint", "--json", "--amount", "12.5", "--memo", "grant",
            ])
            .args(["--to", to, "--url", &nats.url(), "--dir"])
            .arg(dir))
    };
    let minted = mint(&node.peer_id().to_string(), &treasury_dir);
    assert!(minted.status.success(), "{minted:?}");
    assert_eq!(json_of(&minted)["sequence"], 1);
    assert_eq!(json_of(&minted)["amount"], "12.5");
    // Refusals: an account that is not one, a treasury that does not exist.
    let bad_account = mint("nobody", &treasury_dir);
    assert_eq!(bad_account.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_account.stderr).contains("is not an account"));
    let no_treasury = mint(&node.peer_id().to_string(), &work.path().join("none"));
    assert_eq!(no_treasury.status.code(), Some(1));
    assert!(
        !work.path().join("none").exists(),
        "mint never creates a treasury"
    );

    // The node's projection, as a node builds it, then `apn ledger` reads it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let treasury: [u8; 32] = hex::decode(&treasury_key).unwrap().try_into().unwrap();
    runtime.block_on(async {
        use apn::network_ledger::projection::{PROJECTION_FILE, Projection};
        use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up, connect};
        let stream = LedgerStream::open(
            connect(&nats.url()).await.unwrap(),
            &StreamSettings::default(),
        )
        .await
        .unwrap();
        let mut projection =
            Projection::open(&node_dir.join(PROJECTION_FILE), &[treasury]).unwrap();
        catch_up(&stream, &mut projection).await.unwrap();
    });
    let ledger = run(Command::new(APN)
        .args(["ledger", "--json", "--data-dir"])
        .arg(&node_dir));
    assert!(ledger.status.success(), "{ledger:?}");
    let report = json_of(&ledger);
    assert_eq!(report["mode"], "jetstream");
    assert_eq!(report["balance"], "12.5");
    assert_eq!(report["history"][0]["kind"], "mint");
    assert_eq!(report["history"][0]["account"], treasury_key.as_str());
    let text = run(Command::new(APN)
        .args(["ledger", "--data-dir"])
        .arg(&node_dir));
    assert!(String::from_utf8_lossy(&text.stdout).contains("balance   12.5 VIBE"));

    // The faucet, run by the treasury: a new identity that asks is granted its amount.
    let mut faucet = Command::new(APN)
        .args([
            "treasury",
            "faucet",
            "--amount",
            "7",
            "--grants-per-hour",
            "5",
        ])
        .args(["--url", &nats.url(), "--dir"])
        .arg(&treasury_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let asker = apn::identity::Identity::ephemeral();
    let answer = runtime.block_on(async {
        use apn::network_ledger::faucet::{FaucetError, request_grant};
        let client = async_nats::connect(nats.url()).await.unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match request_grant(&client, &asker).await {
                Err(FaucetError::NoFaucet) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answer => break answer,
            }
        }
    });
    let _ = faucet.kill();
    let _ = faucet.wait();
    match answer.unwrap() {
        apn::network_ledger::faucet::FaucetAnswer::Granted { amount, .. } => {
            assert_eq!(amount, apn::messages::Vibe::from_whole(7));
        }
        other => panic!("the faucet did not grant: {other:?}"),
    }
}

/// The project seed's config file, exactly as the seed ships it (`config/seed.toml`).
const SEED_CONFIG: &str = include_str!("../config/seed.toml");

/// `apn config check` with no `APN_*` variable from the test's own environment.
fn config_check(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(APN);
    command.args(["config", "check"]).args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("APN_") {
            command.env_remove(name);
        }
    }
    run(&mut command)
}

#[test]
fn config_check_prints_the_seed_config_and_names_the_key_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.toml");
    std::fs::write(&seed, SEED_CONFIG).unwrap();
    let seed = seed.to_str().unwrap();

    let output = config_check(&["--config", seed, "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = json_of(&output);
    assert_eq!(config["node"]["port"], 4001);
    assert_eq!(
        config["node"]["capabilities"],
        serde_json::json!(["compute", "relay", "storage"])
    );
    assert_eq!(config["resources"]["max_concurrent_tasks"], 4);
    assert_eq!(config["resources"]["storage_gb"], 50);
    assert_eq!(config["economics"]["min_task_reward"], "1");
    assert_eq!(config["economics"]["compute_rate_per_cpu_hour"], "0.5");
    assert_eq!(config["relay"]["url"], "nats://nonlocal.info:4222");
    assert_eq!(config["relay"]["auto_reconnect"], true);

    // For people: TOML, which loads again as the same config.
    let output = config_check(&["--config", seed]);
    assert_eq!(output.status.code(), Some(0));
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains("storage_gb = 50"), "{printed}");
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &printed).unwrap();
    let output = config_check(&["--config", again.to_str().unwrap(), "--json"]);
    assert_eq!(json_of(&output), config);

    // The environment is merged as `apn node` merges it.
    let mut command = Command::new(APN);
    command
        .args(["config", "check", "--json", "--config", seed])
        .env("APN_RESOURCES_STORAGE_GB", "7");
    let output = run(&mut command);
    assert_eq!(json_of(&output)["resources"]["storage_gb"], 7);

    // A bad file: exit 2, the key named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        SEED_CONFIG.replace("storage_gb = 50", "storage_gb = -50"),
    )
    .unwrap();
    let output = config_check(&["--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resources.storage_gb"), "{stderr}");
    assert!(output.stdout.is_empty());

    // A named file that is missing is a usage error too.
    let output = config_check(&["--config", dir.path().join("none.toml").to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
}
