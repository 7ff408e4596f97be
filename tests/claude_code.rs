//! Issue 16: the CLAUDE_CODE profile on two nodes. The executor's `claude` is a stand-in
//! (`common::claude`) that insists on `-p`, stream-json output, the API key passed through
//! and `IS_SANDBOX=1`; its stream-json transcript reaches the originator as agent log lines,
//! progress ("Editing …", a testing stage) and the result's summary.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use actix::prelude::*;
use apn::actors::distributor::TaskStatus;
use apn::actors::relay::{ExecutionEvent, GetExecutionLogs, SubscribeExecution};
use apn::config::ProfileConfig;
use apn::messages::ExecutionStage;
use common::*;

/// Takes a task's later events and drops them: the test reads the history.
struct Ignore;

impl Actor for Ignore {
    type Context = Context<Self>;
}

impl Handler<ExecutionEvent> for Ignore {
    type Result = ();
    fn handle(&mut self, _event: ExecutionEvent, _ctx: &mut Self::Context) {}
}

#[actix_rt::test]
async fn a_claude_code_task_streams_its_agent_text_progress_and_summary_to_the_originator() {
    let (first, second, bin) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    claude::set_test_key();
    let mut executor_config = test_config(second.path());
    let mut profile = ProfileConfig::claude_code();
    profile.program = claude::fake_claude(bin.path()).display().to_string();
    executor_config
        .executor
        .profiles
        .insert("CLAUDE_CODE".into(), profile);
    let (origin, _executor) = connected_pair(test_config(first.path()), executor_config).await;
    let repo = git_repo(&[("README", "hello\n")]);
    let mut task = mesh_shell_task(repo.path(), "greeting", "write a greeting", 10);
    task.executor_profile = "CLAUDE_CODE".into();
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(view.files_modified, ["greeting.txt"]);
    let summary = view.summary.unwrap_or_default();
    assert!(
        summary.contains("Greeting written; tests pass.") && summary.contains("4 turn(s)"),
        "{summary}"
    );

    let lines = origin.relay.send(GetExecutionLogs(id)).await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "agent" && l.line == "I will write the greeting."),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.line == "test result: ok. 3 passed"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|l| !l.line.starts_with('{')),
        "raw stream-json reached the logs: {lines:#?}"
    );

    let history = origin
        .relay
        .send(SubscribeExecution {
            task_id: id,
            subscriber: Ignore.start().recipient(),
        })
        .await
        .unwrap();
    let progress: Vec<(ExecutionStage, String)> = history
        .iter()
        .filter_map(|event| match event {
            ExecutionEvent::Progress { stage, action, .. } => Some((*stage, action.clone())),
            _ => None,
        })
        .collect();
    assert!(
        progress.contains(&(ExecutionStage::Coding, "Editing greeting.txt".into())),
        "{progress:?}"
    );
    assert!(
        progress.contains(&(ExecutionStage::Testing, "Running cargo test --quiet".into())),
        "{progress:?}"
    );
}
