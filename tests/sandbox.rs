//! The sandbox for real: an executor node runs as its own `apn node` process (with a HOME
//! of its own holding a fake SSH key), an originator in this process sends it SHELL tasks
//! whose prompts try to escape, and each prompt reports what it could do into a file of
//! the workspace, which comes back in the diff. Every escape must be denied and the node
//! must stay healthy; the positive side checks that git, sh, a compiler, the workspace,
//! HOME and an allowed TCP port still work. Verify commands are attacked directly through
//! `workspace::apply_and_verify`.
//!
//! Running as root, `apn sandbox check` is also run as uid 65534: the sandbox needs no root.
//!
//! On a kernel that cannot sandbox these tests fail with the reason (`apn sandbox check`),
//! except `a_node_that_cannot_sandbox_refuses_peers_tasks`, which checks the refusal rule.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apn::actors::distributor::{TaskStatus, TaskView};
use apn::actors::node::NodeHandle;
use apn::messages::Vibe;
use common::{
    EVENT_TIMEOUT, free_port, git, git_repo, has_peer, mesh_shell_task, nats, node, task_final,
    test_config,
};

/// How long one escape task may take end to end.
const TASK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the executor process may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Memory limit of the executor's runs, in megabytes.
const RUN_MEMORY_MB: u64 = 64;
/// Process limit of the executor's runs.
const RUN_PROCESSES_MAX: u32 = 300;

/// Fail with the reason when this kernel cannot sandbox (never skip silently).
fn require_sandbox() {
    let support = apn::sandbox::probe();
    assert!(
        support.available(),
        "this kernel cannot sandbox runs: {:?}",
        support.problem
    );
}

/// An executor node as a child process.
struct Executor {
    child: Child,
    data_dir: tempfile::TempDir,
    home: tempfile::TempDir,
    http_port: u16,
    dial: String,
    peer_id: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Executor {
    /// Start `apn node` with the SHELL profile on (`shell_ports`: its TCP ports), the run
    /// limits above, a relay on `nats_url`, HTTP on a free port, and `HOME` a temp dir
    /// holding `.ssh/id_ed25519`.
    fn start(nats_url: &str, shell_ports: &[u16], extra: &str) -> Executor {
        let data_dir = tempfile::tempdir().expect("data dir");
        let home = tempfile::tempdir().expect("home dir");
        std::fs::create_dir_all(home.path().join(".ssh")).expect("ssh dir");
        std::fs::write(
            home.path().join(".ssh/id_ed25519"),
            "-----BEGIN OPENSSH PRIVATE KEY----- operator-ssh-secret",
        )
        .expect("fake key");
        let http_port = free_port();
        let ports: Vec<String> = shell_ports.iter().map(|p| p.to_string()).collect();
        let config = data_dir.path().join("apn.toml");
        std::fs::write(
            &config,
            format!(
                "[node]\nannounce_interval_s = 1\n\
                 [resources]\nmax_memory_mb = {RUN_MEMORY_MB}\nmax_processes = {RUN_PROCESSES_MAX}\n\
                 [market]\nheartbeat_timeout_s = 10\n\
                 [executor]\ntimeout_s = 40\n{extra}\n\
                 [executor.profiles.SHELL]\nprogram = \"sh\"\nargs = [\"-c\", \"{{prompt}}\"]\n\
                 enabled = true\nnetwork_ports = [{}]\n",
                ports.join(", ")
            ),
        )
        .expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_apn"))
            .args(["node", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--http", &format!("127.0.0.1:{http_port}")])
            .args(["--relay", nats_url])
            .env("HOME", home.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("APN_SECRET_IN_NODE_ENV", "node-environment-secret")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("apn node starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (started, receiver) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("node started") {
                    let _ = started.send(line.clone());
                }
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
            }
        });
        let line = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                panic!("the executor did not start: {e}; log: {:?}", log.lock());
            }
        };
        let peer_id = field(&line, "peer_id=").expect("peer id in the start line");
        let listen = line
            .split('"')
            .find(|part| part.starts_with("/ip4/127.0.0.1/tcp/"))
            .expect("a listen address")
            .to_string();
        Executor {
            child,
            data_dir,
            home,
            http_port,
            dial: format!("{listen}/p2p/{peer_id}"),
            peer_id,
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process is alive and `/healthz` answers 200.
    fn healthy(&mut self) -> bool {
        if self.child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let answer = ureq::get(&format!("http://127.0.0.1:{}/healthz", self.http_port)).call();
        answer.is_ok_and(|r| r.status() == 200)
    }

    fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(name)? + name.len();
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// An originator in this process, connected to `executor`, with SHELL off (its tasks go
/// to the mesh).
async fn originator(dir: &Path, executor: &Executor) -> NodeHandle {
    let mut config = test_config(dir);
    config
        .executor
        .profiles
        .get_mut("SHELL")
        .expect("SHELL")
        .enabled = false;
    config.economics.initial_balance = Vibe::from_whole(1000);
    config.market.bid_window_ms = 300;
    config.node.bootstrap = vec![executor.dial.clone()];
    let handle = node(config).await;
    let announced = common::wait_until(EVENT_TIMEOUT, || {
        has_peer(&handle, &executor.peer_id, |p| p.announced)
    })
    .await;
    assert!(
        announced,
        "the originator never saw the executor; its log:\n{}",
        executor.log_text()
    );
    handle
}

/// Run `prompt` on the executor through the mesh; the final view.
async fn run_task(originator: &NodeHandle, repo: &Path, prompt: &str) -> TaskView {
    let id = originator
        .distributor
        .send(mesh_shell_task(repo, "escape", prompt, 5))
        .await
        .expect("distributor alive")
        .expect("task accepted");
    task_final(originator, id, TASK_TIMEOUT).await
}

/// The lines the task's report added (`report.txt` in the diff), without the `+`.
fn report(view: &TaskView) -> Vec<String> {
    added_lines(view, "report.txt")
}

/// The lines the task added to `file`, without the `+`.
fn added_lines(view: &TaskView, file: &str) -> Vec<String> {
    assert_eq!(
        view.status,
        TaskStatus::Completed,
        "the escape task did not complete: {view:?}"
    );
    let diff = view.diff.as_deref().unwrap_or_default();
    let mut in_file = false;
    let mut lines = Vec::new();
    for line in diff.lines() {
        if line.starts_with("diff --git") {
            in_file = line.ends_with(&format!("b/{file}"));
        } else if in_file
            && let Some(added) = line.strip_prefix('+')
            && !added.starts_with("++")
        {
            lines.push(added.to_string());
        }
    }
    lines
}

/// A prompt line that appends `ESCAPED <name>` to the report when `command` succeeds and
/// `DENIED <name>` when it fails.
fn attempt(name: &str, command: &str) -> String {
    format!(
        "if {command} >/dev/null 2>&1; then echo 'ESCAPED {name}'; else echo 'DENIED {name}'; fi >> report.txt\n"
    )
}

fn assert_denied(lines: &[String], names: &[&str]) {
    for name in names {
        assert!(
            lines.contains(&format!("DENIED {name}")),
            "{name} was not denied; report: {lines:#?}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("ESCAPED")),
        "an escape worked; report: {lines:#?}"
    );
}

#[actix_rt::test]
async fn a_run_cannot_read_or_write_the_nodes_files_or_the_operators_home() {
    require_sandbox();
    let mut executor = Executor::start("none", &[], "");
    let data = executor.data_dir.path().to_path_buf();
    let home = executor.home.path().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let origin = originator(dir.path(), &executor).await;
    let repo = git_repo(&[("README.md", "hello\n")]);
    let token = std::fs::read_to_string(data.join("api.token")).expect("the token exists");
    let pid = executor.pid();
    let outside = std::env::temp_dir().join(format!("apn-sandbox-pwned-{}", uuid::Uuid::new_v4()));
    let mut prompt = String::new();
    for (name, command) in [
        (
            "identity.key",
            format!("cat {}/identity.key", data.display()),
        ),
        ("noise.key", format!("cat {}/noise.key", data.display())),
        ("api.token", format!("cat {}/api.token", data.display())),
        ("ledger", format!("cat {}/ledger.sqlite3", data.display())),
        ("data-dir-listing", format!("ls {}", data.display())),
        ("ssh-key", format!("cat {}/.ssh/id_ed25519", home.display())),
        ("node-environ", format!("cat /proc/{pid}/environ")),
        ("node-cmdline", format!("cat /proc/{pid}/cmdline")),
        (
            "write-data-dir",
            format!("sh -c 'echo x > {}/pwned'", data.display()),
        ),
        (
            "write-home",
            format!("sh -c 'echo x > {}/pwned'", home.display()),
        ),
        (
            "write-tmp",
            format!("sh -c 'echo x > {}'", outside.display()),
        ),
        (
            "append-ledger",
            format!("sh -c 'echo x >> {}/ledger.sqlite3'", data.display()),
        ),
        (
            "find-keys",
            "find /tmp /root /home -name identity.key | grep -q .".to_string(),
        ),
    ] {
        prompt.push_str(&attempt(name, &command));
    }
    // What an agent would do with what it found: put it in the diff.
    prompt.push_str(&format!(
        "cat {d}/api.token {h}/.ssh/id_ed25519 /proc/{pid}/environ >> loot.txt 2>/dev/null; true\n",
        d = data.display(),
        h = home.display()
    ));
    let view = run_task(&origin, repo.path(), &prompt).await;
    let lines = report(&view);
    assert_denied(
        &lines,
        &[
            "identity.key",
            "noise.key",
            "api.token",
            "ledger",
            "data-dir-listing",
            "ssh-key",
            "node-environ",
            "node-cmdline",
            "write-data-dir",
            "write-home",
            "write-tmp",
            "append-ledger",
            "find-keys",
        ],
    );
    let diff = view.diff.unwrap_or_default();
    assert!(!diff.contains(token.trim()), "the API token leaked");
    assert!(!diff.contains("operator-ssh-secret"), "the SSH key leaked");
    assert!(
        !diff.contains("node-environment-secret"),
        "the node's environment leaked"
    );
    assert!(!data.join("pwned").exists() && !home.join("pwned").exists() && !outside.exists());
    assert!(executor.healthy(), "the executor is not healthy");
    origin.shutdown().await;
}

#[actix_rt::test]
async fn with_the_sandbox_off_the_same_prompt_reads_the_key() {
    // The attack is real: without the sandbox the key is read. (A node logs this mode
    // loudly at every start.)
    let executor = Executor::start("none", &[], "sandbox = \"off\"");
    let data = executor.data_dir.path().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let origin = originator(dir.path(), &executor).await;
    let repo = git_repo(&[("README.md", "hello\n")]);
    let prompt = attempt(
        "identity.key",
        &format!("cat {}/identity.key", data.display()),
    );
    let lines = report(&run_task(&origin, repo.path(), &prompt).await);
    assert!(
        lines.contains(&"ESCAPED identity.key".to_string()),
        "{lines:?}"
    );
    assert!(executor.log_text().contains("WITHOUT a sandbox"));
    origin.shutdown().await;
}

#[actix_rt::test]
async fn tcp_reaches_only_the_profiles_ports() {
    require_sandbox();
    let relay = nats();
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let mut executor = Executor::start(&relay.url(), &[allowed_port], "");
    let nats_port = relay.url().rsplit(':').next().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let origin = originator(dir.path(), &executor).await;
    let repo = git_repo(&[("README.md", "hello\n")]);
    let tcp = |port: &str| format!("bash -c 'echo > /dev/tcp/127.0.0.1/{port}'");
    let mut prompt = String::new();
    prompt.push_str(&attempt("node-http", &tcp(&executor.http_port.to_string())));
    prompt.push_str(&attempt("nats", &tcp(&nats_port)));
    prompt.push_str(&format!(
        "if {} 2>/dev/null; then echo 'CONNECTED allowed'; fi >> report.txt\n",
        tcp(&allowed_port.to_string())
    ));
    let accepted = std::thread::spawn(move || allowed.accept().is_ok());
    let lines = report(&run_task(&origin, repo.path(), &prompt).await);
    assert_denied(&lines, &["node-http", "nats"]);
    assert!(
        lines.contains(&"CONNECTED allowed".to_string()),
        "the profile's port was not reachable: {lines:?}"
    );
    assert!(accepted.join().unwrap(), "the listener saw no connection");
    assert!(executor.healthy());
    origin.shutdown().await;
}

#[actix_rt::test]
async fn processes_memory_and_signals_are_contained() {
    require_sandbox();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let listener_port = listener.local_addr().unwrap().port();
    let mut executor = Executor::start("none", &[], "keep_workspaces = true");
    let data = executor.data_dir.path().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let origin = originator(dir.path(), &executor).await;
    let repo = git_repo(&[("README.md", "hello\n")]);
    let pid = executor.pid();
    let mut prompt = String::new();
    // A survivor outside the process group that would write into the kept workspace.
    prompt.push_str("setsid sh -c 'sleep 3; echo survived > \"$0\"' \"$PWD/survivor.txt\" </dev/null >/dev/null 2>&1 &\n");
    prompt.push_str("(sh -c 'sleep 3; echo survived > \"$0\"' \"$PWD/double-fork.txt\" &) </dev/null >/dev/null 2>&1\n");
    prompt.push_str(&attempt("signal-node", &format!("kill -STOP {pid}")));
    prompt.push_str(&attempt(
        "no-network-listener",
        &format!("bash -c 'echo > /dev/tcp/127.0.0.1/{listener_port}'"),
    ));
    // Memory: 200 MB in one process against a 64 MB limit.
    prompt.push_str("( x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo \"ALLOCATED ${#x}\" ) >> report.txt 2>/dev/null\n");
    prompt.push_str("echo memory-probe-done >> report.txt\n");
    // A bounded fork bomb, last (no fork works after it): 1000 sleeping children against a
    // limit of 300; forks.txt counts the ones that started.
    prompt.push_str(
        "( i=0; while [ $i -lt 1000 ]; do sleep 30 & i=$((i+1)); echo $i > forks.txt; done ) >/dev/null 2>&1\n\
         exit 0\n",
    );
    let view = run_task(&origin, repo.path(), &prompt).await;
    let lines = report(&view);
    assert_denied(&lines, &["signal-node", "no-network-listener"]);
    assert!(
        lines.contains(&"memory-probe-done".to_string()),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("ALLOCATED")),
        "200 MB were allocated under a {RUN_MEMORY_MB} MB limit: {lines:?}"
    );
    let forks: u32 = added_lines(&view, "forks.txt")
        .first()
        .and_then(|n| n.trim().parse().ok())
        .expect("the fork count");
    assert!(
        forks <= RUN_PROCESSES_MAX,
        "{forks} processes started under a limit of {RUN_PROCESSES_MAX}"
    );
    // A negative window, kept on purpose: the survivors would write 3 s after the start
    // (their pids are in the run's PID namespace, out of the test's sight), so wait past that.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let workspaces: Vec<PathBuf> = std::fs::read_dir(data.join("workspaces"))
        .expect("workspaces kept")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(!workspaces.is_empty());
    for workspace in &workspaces {
        for marker in ["survivor.txt", "double-fork.txt"] {
            assert!(
                !workspace.join(marker).exists(),
                "a process outlived the run and wrote {marker}"
            );
        }
    }
    // The node was not stopped by the signal and still answers.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    assert_ne!(state, Some("T"), "the node was stopped");
    assert!(executor.healthy());
    origin.shutdown().await;
}

#[actix_rt::test]
async fn a_run_can_still_use_git_sh_a_compiler_its_workspace_and_home() {
    require_sandbox();
    let mut executor = Executor::start("none", &[], "");
    let dir = tempfile::tempdir().unwrap();
    let origin = originator(dir.path(), &executor).await;
    let repo = git_repo(&[("README.md", "hello\n")]);
    let prompt = "\
        git log --oneline | grep -q initial && echo git-log-ok >> report.txt\n\
        git status --porcelain >/dev/null && echo git-status-ok >> report.txt\n\
        (cd \"$TMPDIR\" && git init -q scratch && cd scratch && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x) && echo git-commit-ok >> report.txt\n\
        printf 'int main(void){return 0;}\\n' > \"$TMPDIR/a.c\" && cc -o \"$TMPDIR/a\" \"$TMPDIR/a.c\" && \"$TMPDIR/a\" && echo cc-ok >> report.txt\n\
        echo x > \"$HOME/.agent-config\" && echo home-ok >> report.txt\n\
        echo created > created.txt && echo workspace-ok >> report.txt\n\
        sed -i 's/hello/hello sandbox/' README.md\n";
    let view = run_task(&origin, repo.path(), prompt).await;
    let lines = report(&view);
    for expected in [
        "git-log-ok",
        "git-status-ok",
        "git-commit-ok",
        "cc-ok",
        "home-ok",
        "workspace-ok",
    ] {
        assert!(
            lines.contains(&expected.to_string()),
            "{expected} missing: {lines:?}"
        );
    }
    let diff = view.diff.unwrap_or_default();
    assert!(
        diff.contains("+hello sandbox") && diff.contains("created.txt"),
        "{diff}"
    );
    assert!(executor.healthy());
    // The node says it sandboxes, in its status and its metrics.
    let base = format!("http://127.0.0.1:{}", executor.http_port);
    let status: serde_json::Value = ureq::get(&format!("{base}/api/status"))
        .call()
        .expect("status")
        .body_mut()
        .read_json()
        .expect("status JSON");
    assert_eq!(status["sandbox"]["mode"], "required", "{status}");
    assert_eq!(status["sandbox"]["available"], true, "{status}");
    assert_eq!(status["sandbox"]["peer_tasks_accepted"], true, "{status}");
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    assert!(metrics.contains("apn_sandbox_available 1"), "{metrics}");
    origin.shutdown().await;
}

/// The base commit and a diff that adds `check.sh` with `script`.
fn repo_with_check(script: &str) -> (tempfile::TempDir, String, String) {
    let repo = git_repo(&[("README.md", "hello\n")]);
    let output = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let commit = String::from_utf8_lossy(&output.stdout).trim().to_string();
    std::fs::write(repo.path().join("check.sh"), script).unwrap();
    git(repo.path(), &["add", "-N", "check.sh"]);
    let diff = Command::new("git")
        .args(["diff"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    let diff = String::from_utf8_lossy(&diff.stdout).to_string();
    git(repo.path(), &["rm", "-q", "--cached", "check.sh"]);
    std::fs::remove_file(repo.path().join("check.sh")).unwrap();
    (repo, commit, diff)
}

fn verify_limits() -> apn::sandbox::SandboxLimits {
    apn::sandbox::SandboxLimits {
        memory_bytes_max: 256 * 1024 * 1024,
        processes_max: 128,
        cpu_seconds_max: 60,
    }
}

#[test]
fn a_verify_command_cannot_read_secrets_touch_the_users_repository_or_reach_the_network() {
    require_sandbox();
    let secrets = tempfile::tempdir().unwrap();
    let secret = secrets.path().join("identity.key");
    std::fs::write(&secret, "node-secret").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let timeout = Duration::from_secs(30);
    // Each script succeeds only if its escape works.
    let escapes = [
        format!("cat {}", secret.display()),
        "touch \"$REPO/.git/objects/pwned\"".to_string(),
        "touch \"$REPO/pwned\"".to_string(),
        format!("bash -c 'echo > /dev/tcp/127.0.0.1/{port}'"),
    ];
    for escape in &escapes {
        let (repo, commit, diff) = repo_with_check(&format!("{escape}\n"));
        let command = format!("REPO={} sh check.sh", repo.path().display());
        let unsandboxed =
            apn::workspace::apply_and_verify(repo.path(), &commit, &diff, &command, timeout, None)
                .expect("verify runs");
        assert!(
            unsandboxed,
            "the escape `{escape}` does not even work unsandboxed"
        );
        let _ = std::fs::remove_file(repo.path().join(".git/objects/pwned"));
        let _ = std::fs::remove_file(repo.path().join("pwned"));
        let sandboxed = apn::workspace::apply_and_verify(
            repo.path(),
            &commit,
            &diff,
            &command,
            timeout,
            Some(verify_limits()),
        )
        .expect("verify runs");
        assert!(!sandboxed, "the verify command escaped with `{escape}`");
        assert!(!repo.path().join(".git/objects/pwned").exists());
        assert!(!repo.path().join("pwned").exists());
    }
    // And a good verify command still passes in the sandbox.
    let (repo, commit, diff) = repo_with_check("test -f README.md && git status >/dev/null\n");
    assert!(
        apn::workspace::apply_and_verify(
            repo.path(),
            &commit,
            &diff,
            "sh check.sh",
            timeout,
            Some(verify_limits())
        )
        .unwrap()
    );
}

#[test]
fn a_node_that_cannot_sandbox_refuses_peers_tasks() {
    let no_landlock = apn::sandbox::SandboxSupport {
        landlock_abi: 0,
        tcp_rules: false,
        scopes: false,
        unix_socket_rules: false,
        trial_run: false,
        problem: Some("the kernel has no Landlock".into()),
    };
    let refused =
        apn::sandbox::peer_runs_allowed(apn::sandbox::SandboxMode::Required, &no_landlock);
    assert!(refused.is_err_and(|reason| reason.contains("no Landlock")));
    assert!(apn::sandbox::peer_runs_allowed(apn::sandbox::SandboxMode::Off, &no_landlock).is_ok());
    // `apn sandbox check` reports this kernel and exits 0 only when it can sandbox.
    let output = Command::new(env!("CARGO_BIN_EXE_apn"))
        .args(["sandbox", "check", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let available = report["problem"].is_null();
    assert_eq!(output.status.success(), available, "{report}");
    assert_eq!(available, apn::sandbox::probe().available());
}

#[test]
fn an_unprivileged_account_can_sandbox_too() {
    // The sandbox needs no root: as root here, run `apn sandbox check` (a real sandboxed
    // trial run) as the unprivileged uid 65534. Not root: this process already is such an
    // account and the other tests cover it.
    require_sandbox();
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("apn");
    std::fs::copy(env!("CARGO_BIN_EXE_apn"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Another test thread may fork while the copy's write descriptor is still open; the
    // child holds it until its exec and executing the copy then fails with ETXTBSY. That
    // clears as soon as the other child has exec'd, so try again a few times.
    let mut tries = 0;
    let output = loop {
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&binary)
            .args(["sandbox", "check", "--json"])
            .output()
            .expect("setpriv runs (util-linux)");
        tries += 1;
        if tries < 20 && String::from_utf8_lossy(&output.stderr).contains("Text file busy") {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        break output;
    };
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{report}");
    assert_eq!(report["trial_run"], true, "{report}");
}
