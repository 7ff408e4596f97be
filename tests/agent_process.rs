//! Agent processes for real: argv without a shell, a cleared environment, the process group
//! killed on timeout, cancel, normal exit and drop; the output cap; progress lines; a
//! consumer that stops reading; CPU and memory metering. Every run is bounded by
//! `RUN_TIMEOUT`, so a regression fails instead of hanging.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use apn::agent_process::{
    AgentError, AgentEvent, AgentOutcome, AgentOutputFormat, AgentSpec, LINE_BYTES_MAX, LogStream,
    build_argv, run_agent,
};
use apn::config::ProfileConfig;
use apn::messages::ExecutionStage;
use common::claude::fake_claude;
use common::process::{gone, pid_written, read_pid};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// No run in these tests should take this long; one that does has hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Room in the event channel, as the executor has.
const EVENTS_QUEUED_MAX: usize = 64;
/// A killed group is gone well within this (its background `sleep 300` would run on).
const KILLED_WITHIN: Duration = Duration::from_secs(5);

fn spec(argv: Vec<String>, dir: &Path) -> AgentSpec {
    AgentSpec {
        argv,
        workspace: dir.to_path_buf(),
        pass_env: vec!["PATH".into()],
        extra_env: Vec::new(),
        timeout: Duration::from_secs(30),
        output_bytes_max: 1024 * 1024,
        sandbox: None,
        output: AgentOutputFormat::Text,
    }
}

/// The SHELL profile's shape: the prompt is the script.
fn sh(script: &str) -> Vec<String> {
    let shell = ProfileConfig::shell(true);
    build_argv(&shell, script)
}

/// Run and collect every event (the receiver is drained concurrently, as the executor does).
async fn run(spec: AgentSpec, cancel: CancellationToken) -> (AgentOutcome, Vec<AgentEvent>) {
    let (sender, mut receiver) = mpsc::channel(EVENTS_QUEUED_MAX);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        events
    });
    let outcome = tokio::time::timeout(RUN_TIMEOUT, run_agent(spec, sender, cancel))
        .await
        .expect("the run ends in time")
        .expect("the run starts");
    let events = tokio::time::timeout(RUN_TIMEOUT, collector)
        .await
        .expect("the event stream ends")
        .unwrap();
    (outcome, events)
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
async fn lines_and_progress_arrive_in_order_with_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        "echo one; echo 'APN_PROGRESS coding 40 editing files'; echo two >&2; echo three; exit 4";
    let (outcome, events) = run(spec(sh(script), dir.path()), CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(4));
    assert_eq!(outcome.signal, None);
    assert!(!outcome.timed_out && !outcome.cancelled && !outcome.output_capped);
    let stdout_events: Vec<&AgentEvent> = events
        .iter()
        .filter(|e| {
            !matches!(
                e,
                AgentEvent::Log {
                    stream: LogStream::Stderr,
                    ..
                }
            )
        })
        .collect();
    let log = |line: &str| AgentEvent::Log {
        stream: LogStream::Stdout,
        line: line.into(),
    };
    assert_eq!(
        stdout_events,
        vec![
            &log("one"),
            &log("APN_PROGRESS coding 40 editing files"),
            &AgentEvent::Progress {
                stage: ExecutionStage::Coding,
                percent: 40,
                action: "editing files".into(),
                files_modified: Vec::new(),
            },
            &log("three"),
        ]
    );
    assert!(events.contains(&AgentEvent::Log {
        stream: LogStream::Stderr,
        line: "two".into()
    }));
    assert_eq!(outcome.output_bytes, 51);
}

#[tokio::test]
async fn a_clean_exit_and_a_last_line_without_newline() {
    let dir = tempfile::tempdir().unwrap();
    let mut unlimited = spec(sh("printf 'a\\nno newline'; pwd >&2"), dir.path());
    // A timeout beyond the clock's range (a config's `u64::MAX`) is no limit, not a panic.
    unlimited.timeout = Duration::MAX;
    let (outcome, events) = run(unlimited, CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(stdout_lines(&events), vec!["a", "no newline"]);
    // The workspace is the working directory.
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert!(events.contains(&AgentEvent::Log {
        stream: LogStream::Stderr,
        line: cwd.display().to_string()
    }));
}

#[tokio::test]
async fn the_prompt_is_one_argument_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let prompt = format!("$(touch {}); rm -rf ~", marker.display());
    let profile = ProfileConfig::new("printf", &["%s\\n", "{prompt}"]);
    let argv = build_argv(&profile, &prompt);
    assert_eq!(argv.len(), 3);
    let (outcome, events) = run(spec(argv, dir.path()), CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(stdout_lines(&events), vec![prompt]);
    assert!(!marker.exists(), "the prompt was interpreted by a shell");
}

#[tokio::test]
async fn node_secrets_are_not_passed_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the test sets a variable no other test reads.
    unsafe { std::env::set_var("APN_SECRET_TOKEN", "hunter2") };
    let script = "echo token=${APN_SECRET_TOKEN:-unset} extra=${APN_TASK:-unset}; env | wc -l";
    let (_, events) = run(spec(sh(script), dir.path()), CancellationToken::new()).await;
    let lines = stdout_lines(&events);
    assert_eq!(lines[0], "token=unset extra=unset");
    // PATH, and what sh itself sets (PWD, SHLVL, _): nothing of the node's environment.
    let count: usize = lines[1].trim().parse().unwrap();
    assert!(count <= 5, "{count} variables reached the agent");

    let mut passing = spec(sh(script), dir.path());
    passing.pass_env.push("APN_SECRET_TOKEN".into());
    passing.extra_env.push(("APN_TASK".into(), "t1".into()));
    let (_, events) = run(passing, CancellationToken::new()).await;
    assert_eq!(stdout_lines(&events)[0], "token=hunter2 extra=t1");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let script = format!("sleep 300 & echo $! > {}; sleep 300", pid_file.display());
    let mut limited = spec(sh(&script), dir.path());
    limited.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let (outcome, _) = run(limited, CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(outcome.timed_out && !outcome.cancelled);
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert_eq!(outcome.exit_code, None);
    assert!(outcome.usage.wall_seconds >= 1.0);
    assert!(
        gone(read_pid(&pid_file), KILLED_WITHIN).await,
        "the background child survived the timeout"
    );
}

#[tokio::test]
async fn a_normal_exit_kills_stray_children_and_does_not_wait_for_their_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    // The background sleep inherits stdout: the pipe stays open after the script exits.
    let script = format!("sleep 300 & echo $! > {}; echo done", pid_file.display());
    let started = Instant::now();
    let (outcome, events) = run(spec(sh(&script), dir.path()), CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.exit_code, Some(0));
    assert!(!outcome.timed_out);
    assert_eq!(stdout_lines(&events), vec!["done"]);
    assert!(
        gone(read_pid(&pid_file), KILLED_WITHIN).await,
        "a background child outlived the run"
    );
}

#[tokio::test]
async fn cancel_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let script = format!(
        "sleep 300 & echo $! > {}; echo started; sleep 300",
        pid_file.display()
    );
    let cancel = CancellationToken::new();
    let (sender, mut receiver) = mpsc::channel(EVENTS_QUEUED_MAX);
    let run = tokio::spawn(run_agent(
        spec(sh(&script), dir.path()),
        sender,
        cancel.clone(),
    ));
    // Cancel once the script has said it started (its background child is running then).
    let mut events = Vec::new();
    let started = tokio::time::timeout(RUN_TIMEOUT, async {
        while let Some(event) = receiver.recv().await {
            let is_started = matches!(&event, AgentEvent::Log { line, .. } if line == "started");
            events.push(event);
            if is_started {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the script never said it started");
    cancel.cancel();
    while let Some(event) = tokio::time::timeout(RUN_TIMEOUT, receiver.recv())
        .await
        .expect("the event stream ends")
    {
        events.push(event);
    }
    let outcome = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("the run ends in time")
        .unwrap()
        .expect("the run starts");
    assert!(outcome.cancelled && !outcome.timed_out);
    assert_eq!(outcome.signal, Some(libc::SIGKILL));
    assert_eq!(stdout_lines(&events), vec!["started"]);
    assert!(
        gone(read_pid(&pid_file), KILLED_WITHIN).await,
        "the background child survived the cancel"
    );
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("background.pid");
    let script = format!("sleep 300 & echo $! > {}; sleep 300", pid_file.display());
    let (sender, _receiver) = mpsc::channel(EVENTS_QUEUED_MAX);
    let task = tokio::spawn(run_agent(
        spec(sh(&script), dir.path()),
        sender,
        CancellationToken::new(),
    ));
    assert!(
        pid_written(&pid_file, RUN_TIMEOUT).await,
        "the script never wrote its background pid"
    );
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(
        gone(read_pid(&pid_file), KILLED_WITHIN).await,
        "the group outlived the dropped run"
    );
}

#[tokio::test]
async fn a_consumer_that_stops_reading_does_not_stop_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, receiver) = mpsc::channel(1);
    let mut limited = spec(sh("while true; do echo line; done"), dir.path());
    limited.timeout = Duration::from_secs(1);
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        RUN_TIMEOUT,
        run_agent(limited, sender, CancellationToken::new()),
    )
    .await
    .expect("the run ends although nobody reads its events")
    .unwrap();
    assert!(outcome.timed_out);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(receiver);
}

#[tokio::test]
async fn a_run_whose_receiver_is_gone_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, receiver) = mpsc::channel(1);
    drop(receiver);
    let outcome = tokio::time::timeout(
        RUN_TIMEOUT,
        run_agent(
            spec(sh("seq 1 10000; exit 3"), dir.path()),
            sender,
            CancellationToken::new(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome.exit_code, Some(3));
    assert_eq!(outcome.output_bytes, 48894);
}

/// Bytes of output forwarded as log lines (each with its newline).
fn forwarded_bytes(events: &[AgentEvent]) -> usize {
    events
        .iter()
        .map(|e| match e {
            AgentEvent::Log { line, .. } => line.len() + 1,
            _ => 0,
        })
        .sum()
}

fn capped_events(events: &[AgentEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, AgentEvent::OutputCapped { .. }))
        .count()
}

#[tokio::test]
async fn a_flood_of_output_is_capped_and_drained() {
    let dir = tempfile::tempdir().unwrap();
    // About 50 MB of output against a 1 MiB cap; the agent still finishes normally.
    let (outcome, events) = run(
        spec(sh("yes 'flood line' | head -c 50000000"), dir.path()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.output_capped && !outcome.timed_out);
    assert_eq!(outcome.output_bytes, 50_000_000);
    assert!(
        forwarded_bytes(&events) <= 1024 * 1024,
        "{}",
        forwarded_bytes(&events)
    );
    // 1 MiB of 11-byte lines, and nothing after the cap.
    assert!(
        events.len() <= 1024 * 1024 / 11 + 2,
        "{} events",
        events.len()
    );
    assert_eq!(capped_events(&events), 1);
}

#[tokio::test]
async fn an_endless_flood_ends_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut limited = spec(vec!["yes".into(), "endless".into()], dir.path());
    limited.timeout = Duration::from_secs(2);
    limited.output_bytes_max = 64 * 1024;
    let (outcome, events) = run(limited, CancellationToken::new()).await;
    assert!(outcome.timed_out && outcome.output_capped);
    assert!(outcome.output_bytes > 64 * 1024);
    assert!(forwarded_bytes(&events) <= 64 * 1024);
    assert_eq!(capped_events(&events), 1);
}

#[tokio::test]
async fn long_lines_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let script = "head -c 100000 /dev/zero | tr '\\0' x; echo; echo short";
    let (outcome, events) = run(spec(sh(script), dir.path()), CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(0));
    let lines = stdout_lines(&events);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0].len(), LINE_BYTES_MAX);
    assert_eq!(lines[1], "short");
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, _receiver) = mpsc::channel(EVENTS_QUEUED_MAX);
    let error = run_agent(
        spec(vec!["apn-no-such-agent-program".into()], dir.path()),
        sender,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, AgentError::Spawn { ref program, .. } if program == "apn-no-such-agent-program")
    );
    let (sender, _receiver) = mpsc::channel(EVENTS_QUEUED_MAX);
    let error = run_agent(
        spec(Vec::new(), dir.path()),
        sender,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, AgentError::EmptyCommand));
}

#[tokio::test]
async fn cpu_and_memory_are_measured_from_the_child() {
    let dir = tempfile::tempdir().unwrap();
    // Burn about one CPU second in a grandchild (sh waits for it, so its rusage counts),
    // holding about 50 MB resident.
    let burn = "import time\nblock = bytearray(50_000_000)\nstart = time.process_time()\nwhile time.process_time() - start < 1.0:\n    pass\n";
    let argv = sh(&format!("python3 -c '{burn}'; true"));
    let (outcome, _) = run(spec(argv, dir.path()), CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(0));
    let cpu = outcome.usage.cpu_seconds;
    assert!((0.7..=1.8).contains(&cpu), "metered {cpu} cpu seconds");
    // Around 0.05 GB for about a second, sampled.
    let memory = outcome.usage.memory_gb_seconds;
    assert!(
        (0.02..=0.2).contains(&memory),
        "metered {memory} GB-seconds"
    );
    assert!(outcome.usage.wall_seconds >= cpu * 0.9);
}

/// The CLAUDE_CODE profile's spec, as the executor builds it, with `program` the stand-in.
/// Sets the node's `ANTHROPIC_API_KEY`, which the profile passes through.
fn claude_spec(bin: &Path, workspace: &Path) -> AgentSpec {
    common::claude::set_test_key();
    let mut profile = ProfileConfig::claude_code();
    profile.program = fake_claude(bin).display().to_string();
    let mut config = apn::config::Config::default();
    config.executor.pass_env = vec!["PATH".into()];
    let dirs = apn::actors::executor_run::RunDirs::beside(workspace);
    dirs.create().unwrap();
    AgentSpec {
        argv: build_argv(&profile, "write a greeting"),
        pass_env: apn::actors::executor_run::agent_pass_env(&config, &profile),
        extra_env: apn::actors::executor_run::agent_extra_env(&profile, &dirs),
        output: profile.output,
        ..spec(Vec::new(), workspace)
    }
}

#[tokio::test]
async fn the_claude_code_profile_runs_claude_and_its_stream_json_becomes_progress() {
    let bin = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let workspace = std::fs::canonicalize(root.path()).unwrap().join("ws");
    std::fs::create_dir(&workspace).unwrap();

    let (outcome, events) = run(
        claude_spec(bin.path(), &workspace),
        CancellationToken::new(),
    )
    .await;
    let stderr: Vec<&AgentEvent> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AgentEvent::Log {
                    stream: LogStream::Stderr,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(outcome.exit_code, Some(0), "stderr: {stderr:?}");
    assert_eq!(
        std::fs::read_to_string(workspace.join("greeting.txt")).unwrap(),
        "hello, stream-json\n"
    );
    assert!(
        events.contains(&AgentEvent::Log {
            stream: LogStream::Agent,
            line: "I will write the greeting.".into()
        }),
        "{events:#?}"
    );
    assert!(
        events.contains(&AgentEvent::Log {
            stream: LogStream::Stdout,
            line: "test result: ok. 3 passed".into()
        }),
        "{events:#?}"
    );
    let progress: Vec<(ExecutionStage, String, Vec<String>)> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Progress {
                stage,
                action,
                files_modified,
                ..
            } => Some((*stage, action.clone(), files_modified.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        vec![
            (ExecutionStage::Coding, "Starting (stand-in)".into(), vec![]),
            (
                ExecutionStage::Coding,
                "Editing greeting.txt".into(),
                vec!["greeting.txt".into()]
            ),
            (
                ExecutionStage::Testing,
                "Running cargo test --quiet".into(),
                vec!["greeting.txt".into()]
            ),
        ]
    );
    // No raw JSON is forwarded as a log line: stdout went through the parser.
    assert!(stdout_lines(&events).iter().all(|l| !l.starts_with('{')));
    let summary = outcome.summary.expect("the result event is the summary");
    assert!(summary.success);
    assert_eq!(summary.num_turns, Some(4));
    assert_eq!(summary.total_cost_usd, Some(0.0123));
    assert_eq!(summary.text, "Greeting written; tests pass.");
    assert!(events.contains(&AgentEvent::Summary(summary)));
}

#[tokio::test]
async fn the_stand_in_claude_refuses_without_its_key_and_sandbox_flag() {
    let bin = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let workspace = root.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let mut without = claude_spec(bin.path(), &workspace);
    without.extra_env.retain(|(name, _)| name != "IS_SANDBOX");
    let (outcome, events) = run(without, CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(2));
    assert!(events.contains(&AgentEvent::Log {
        stream: LogStream::Stderr,
        line: "IS_SANDBOX=1 did not reach claude".into()
    }));
    assert!(outcome.summary.is_none());
}

#[tokio::test]
async fn past_the_output_cap_stream_json_still_reports_progress_and_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let result_line = r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"noisy output line"}]}}"#;
    let script = format!(
        "echo '{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"before the cap\"}}]}}}}'; \
         i=0; while [ $i -lt 2000 ]; do echo '{result_line}'; i=$((i+1)); done; \
         echo '{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"after the cap\"}},{{\"type\":\"tool_use\",\"name\":\"Write\",\"input\":{{\"file_path\":\"late.txt\"}}}}]}}}}'; \
         echo '{{\"type\":\"result\",\"subtype\":\"success\",\"num_turns\":2,\"result\":\"done late\"}}'"
    );
    let mut spec = spec(sh(&script), dir.path());
    spec.output = AgentOutputFormat::StreamJson;
    spec.output_bytes_max = 16 * 1024;
    let (outcome, events) = run(spec, CancellationToken::new()).await;
    assert_eq!(outcome.exit_code, Some(0));
    assert!(outcome.output_capped);
    assert_eq!(capped_events(&events), 1);
    let agent_lines: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::Log {
                stream: LogStream::Agent,
                line,
            } => Some(line.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        agent_lines,
        ["before the cap"],
        "logs past the cap are dropped"
    );
    let noisy = stdout_lines(&events).len();
    assert!(
        (100..2000).contains(&noisy),
        "{noisy} tool output lines forwarded"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::Progress { action, files_modified, .. }
            if action == "Editing late.txt" && files_modified == &["late.txt"]
    )));
    let summary = outcome.summary.expect("the summary past the cap");
    assert_eq!(summary.text, "done late");
    assert!(events.contains(&AgentEvent::Summary(summary)));
}
