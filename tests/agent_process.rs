//! Agent processes for real: argv without a shell, a cleared environment, the process group
//! killed on timeout and cancel, the output cap, progress lines, CPU metering.

use std::time::Duration;

use apn::agent_process::{AgentEvent, AgentOutcome, AgentSpec, LogStream, build_argv, run_agent};
use apn::config::ProfileConfig;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

fn spec(argv: Vec<String>, dir: &std::path::Path) -> AgentSpec {
    AgentSpec {
        argv,
        workspace: dir.to_path_buf(),
        pass_env: vec!["PATH".into()],
        extra_env: Vec::new(),
        timeout: Duration::from_secs(30),
        output_bytes_max: 1024 * 1024,
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Run and collect every event (the receiver is drained concurrently, as the executor does).
async fn run(spec: AgentSpec, cancel: CancellationToken) -> (AgentOutcome, Vec<AgentEvent>) {
    let (sender, mut receiver) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        events
    });
    let outcome = tokio::time::timeout(RUN_TIMEOUT, run_agent(spec, sender, cancel))
        .await
        .expect("run ends")
        .expect("run starts");
    (outcome, collector.await.unwrap())
}

fn stdout_lines(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Log {
                stream: LogStream::Stdout,
                line,
            } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn lines_progress_and_exit_codes_are_reported_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "echo one; echo 'APN_PROGRESS coding 40 editing files'; echo two >&2; echo three; exit 4";
    let (outcome, events) = run(spec(sh(script), dir.path()), CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(4));
    assert!(!outcome.timed_out);
    assert_eq!(
        stdout_lines(&events),
        vec!["one", "APN_PROGRESS coding 40 editing files", "three"]
    );
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Progress { percent: 40, action, .. } if action == "editing files")));
    assert!(events.iter().any(
        |e| matches!(e, AgentEvent::Log { stream: LogStream::Stderr, line } if line == "two")
    ));
}

#[tokio::test]
async fn the_prompt_is_one_argument_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let prompt = format!("$(touch {}); rm -rf ~", marker.display());
    let profile = ProfileConfig {
        program: "printf".into(),
        args: vec!["%s\\n".into(), "{prompt}".into()],
        enabled: true,
    };
    let (outcome, events) = run(
        spec(build_argv(&profile, &prompt), dir.path()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(stdout_lines(&events), vec![prompt]);
    assert!(!marker.exists(), "the prompt was interpreted by a shell");
}

#[tokio::test]
async fn node_secrets_are_not_passed_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the test sets a variable no other test reads.
    unsafe { std::env::set_var("APN_SECRET_TOKEN_FOR_TEST", "hunter2") };
    let script = "echo token=${APN_SECRET_TOKEN_FOR_TEST:-unset}";
    let (_, events) = run(spec(sh(script), dir.path()), CancellationToken::new()).await;
    assert_eq!(stdout_lines(&events), vec!["token=unset"]);
    let mut passing = spec(sh(script), dir.path());
    passing.pass_env.push("APN_SECRET_TOKEN_FOR_TEST".into());
    let (_, events) = run(passing, CancellationToken::new()).await;
    assert_eq!(stdout_lines(&events), vec!["token=hunter2"]);
}

/// Running (a killed child whose parent died may stay a zombie until init reaps it: that
/// is not running).
fn running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let script = format!("sleep 300 & echo $! > {}; sleep 300", pid_file.display());
    let mut limited = spec(sh(&script), dir.path());
    limited.timeout = Duration::from_secs(1);
    let (outcome, _) = run(limited, CancellationToken::new()).await;
    assert!(outcome.timed_out);
    assert_eq!(outcome.signal, Some(9));
    let background = std::fs::read_to_string(&pid_file).unwrap();
    assert!(
        !running(background.trim()),
        "the background child survived the timeout"
    );
}

#[tokio::test]
async fn cancel_kills_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let (outcome, _) = run(spec(sh("sleep 300"), dir.path()), cancel).await;
    assert!(outcome.cancelled && !outcome.timed_out);
}

#[tokio::test]
async fn a_flood_of_output_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    // About 50 MB of output against a 1 MiB cap.
    let (outcome, events) = run(
        spec(sh("yes 'flood line' | head -c 50000000"), dir.path()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.output_capped);
    assert!(outcome.output_bytes >= 50_000_000);
    let forwarded: usize = events
        .iter()
        .map(|e| match e {
            AgentEvent::Log { line, .. } => line.len() + 1,
            _ => 0,
        })
        .sum();
    assert!(
        forwarded <= 1024 * 1024 + apn::agent_process::LINE_BYTES_MAX,
        "{forwarded} bytes forwarded"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, AgentEvent::OutputCapped { .. }))
            .count(),
        1
    );
}

#[tokio::test]
async fn cpu_time_is_measured_from_the_child() {
    let dir = tempfile::tempdir().unwrap();
    // Burn about one CPU second, measured by the child itself.
    let burn = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 1.0:\n    pass\n";
    let argv = vec!["python3".into(), "-c".into(), burn.into()];
    let (outcome, _) = run(spec(argv, dir.path()), CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(0));
    let cpu = outcome.usage.cpu_seconds;
    assert!((0.7..=1.5).contains(&cpu), "metered {cpu} cpu seconds");
    assert!(outcome.usage.memory_gb_seconds > 0.0);
}
