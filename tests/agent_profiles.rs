//! The CODEX, GEMINI and AMP profiles through the agent runner, with stand-in CLIs
//! (`common::agents`) that insist on the flags and API key a real run passes: their
//! structured output becomes agent log lines, `Editing <file>` progress with the file in
//! `files_modified`, a `testing` stage from the test command, and the summary.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::path::Path;
use std::time::Duration;

use apn::agent_process::{AgentEvent, AgentOutcome, AgentSpec, LogStream, build_argv, run_agent};
use apn::config::ProfileConfig;
use apn::messages::ExecutionStage;
use common::agents::{AMP, CODEX, GEMINI, StandIn};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// No run in these tests should take this long; one that does has hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The spec the executor builds for `profile`, its program replaced by the stand-in.
fn spec_for(
    mut profile: ProfileConfig,
    stand_in: &StandIn,
    bin: &Path,
    workspace: &Path,
) -> AgentSpec {
    stand_in.set_test_key();
    profile.program = stand_in.install(bin).display().to_string();
    let mut config = apn::config::Config::default();
    config.executor.pass_env = vec!["PATH".into()];
    let dirs = apn::actors::executor_run::RunDirs::beside(workspace);
    dirs.create().unwrap();
    AgentSpec {
        argv: build_argv(&profile, "write a greeting"),
        workspace: workspace.to_path_buf(),
        pass_env: apn::actors::executor_run::agent_pass_env(&config, &profile),
        extra_env: apn::actors::executor_run::agent_extra_env(&profile, &dirs),
        timeout: Duration::from_secs(30),
        output_bytes_max: 1024 * 1024,
        sandbox: None,
        output: profile.output,
    }
}

async fn run(spec: AgentSpec) -> (AgentOutcome, Vec<AgentEvent>) {
    let (sender, mut receiver) = mpsc::channel(64);
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = receiver.recv().await {
            events.push(event);
        }
        events
    });
    let outcome = tokio::time::timeout(
        RUN_TIMEOUT,
        run_agent(spec, sender, CancellationToken::new()),
    )
    .await
    .expect("the run hung")
    .expect("the run started");
    (outcome, collector.await.unwrap())
}

/// Run `profile` with `stand_in` and check what its structured output became.
async fn profile_runs(profile: ProfileConfig, stand_in: &StandIn) {
    let bin = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let workspace = std::fs::canonicalize(root.path()).unwrap().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let (outcome, events) = run(spec_for(profile, stand_in, bin.path(), &workspace)).await;
    assert_eq!(outcome.exit_code, Some(0), "{events:#?}");
    assert!(
        std::fs::read_to_string(workspace.join("greeting.txt"))
            .unwrap()
            .starts_with("hello, ")
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
    assert!(
        events.iter().any(|e| matches!(
            e,
            AgentEvent::Progress { stage: ExecutionStage::Coding, action, files_modified, .. }
                if action == "Editing greeting.txt" && files_modified == &["greeting.txt"]
        )),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            AgentEvent::Progress { stage: ExecutionStage::Testing, action, files_modified, .. }
                if action.starts_with("Running ") && action.contains("cargo test --quiet")
                    && files_modified == &["greeting.txt"]
        )),
        "{events:#?}"
    );
    // No raw JSON is forwarded as a log line: stdout went through the parser.
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, AgentEvent::Log { line, .. } if line.starts_with('{'))),
        "{events:#?}"
    );
    let summary = outcome.summary.expect("the final event is the summary");
    assert!(summary.success, "{summary:?}");
    assert_eq!(summary.text, "Greeting written; tests pass.");
    assert!(events.contains(&AgentEvent::Summary(summary)));
}

#[tokio::test]
async fn the_codex_profile_runs_codex_and_its_json_becomes_progress() {
    profile_runs(ProfileConfig::codex(), &CODEX).await;
}

#[tokio::test]
async fn the_gemini_profile_runs_gemini_and_its_json_becomes_progress() {
    profile_runs(ProfileConfig::gemini(), &GEMINI).await;
}

#[tokio::test]
async fn the_amp_profile_runs_amp_and_its_stream_json_becomes_progress() {
    profile_runs(ProfileConfig::amp(), &AMP).await;
}

#[tokio::test]
async fn each_stand_in_refuses_without_its_key() {
    for (profile, stand_in) in [
        (ProfileConfig::codex(), &CODEX),
        (ProfileConfig::gemini(), &GEMINI),
        (ProfileConfig::amp(), &AMP),
    ] {
        let bin = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let workspace = root.path().join("ws");
        std::fs::create_dir(&workspace).unwrap();
        let mut spec = spec_for(profile, stand_in, bin.path(), &workspace);
        spec.pass_env.retain(|name| name != stand_in.key_variable);
        let (outcome, events) = run(spec).await;
        assert_eq!(outcome.exit_code, Some(2), "{}", stand_in.program);
        let expected = format!(
            "{} did not reach {}",
            stand_in.key_variable, stand_in.program
        );
        assert!(
            events.contains(&AgentEvent::Log {
                stream: LogStream::Stderr,
                line: expected
            }),
            "{events:#?}"
        );
        assert!(outcome.summary.is_none());
    }
}
