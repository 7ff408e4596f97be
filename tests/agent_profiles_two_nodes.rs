//! Issue 16: the CODEX, GEMINI and AMP profiles between two real nodes, and the workspace
//! watcher. The executor runs the stand-in CLIs of `common::agents` (which insist on the
//! flags and API key a real run passes); at the originator the task's execution stream
//! shows the stages in order, the `Editing …` action, the files modified before the run
//! ends, the agent's text (`log_type` Agent) and the tools' output (Stdout) in order, every
//! event naming the run attempt, and the diff comes back. A SHELL agent that prints nothing
//! structured still shows its changed files while it runs, from the executor's watcher.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use actix::prelude::*;
use apn::actors::distributor::TaskStatus;
use apn::actors::relay::{ExecutionEvent, GetExecutionLogs, SubscribeExecution};
use apn::config::ProfileConfig;
use apn::market::LogType;
use apn::messages::ExecutionStage;
use common::agents::{AMP, CODEX, GEMINI, StandIn};
use common::*;
use tokio::sync::mpsc;
use uuid::Uuid;

/// A task's events so far, then its later ones as they come. The forwarder's mailbox is
/// large: the relay drops events for a full subscriber, and a test must see them all.
async fn subscribe(
    node: &apn::actors::node::NodeHandle,
    task_id: Uuid,
) -> (Vec<ExecutionEvent>, mpsc::UnboundedReceiver<ExecutionEvent>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let mut ctx = Context::new();
    ctx.set_mailbox_capacity(100_000);
    let forward = ctx.run(Forward(sender));
    let history = node
        .relay
        .send(SubscribeExecution {
            task_id,
            subscriber: forward.recipient(),
        })
        .await
        .unwrap();
    (history, receiver)
}

/// The next event that `wanted` accepts, within [`EVENT_TIMEOUT`] (panics otherwise, and if
/// the task finishes first).
async fn next_event(
    events: &mut mpsc::UnboundedReceiver<ExecutionEvent>,
    what: &str,
    wanted: impl Fn(&ExecutionEvent) -> bool,
) -> ExecutionEvent {
    let found = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if wanted(&event) {
                return event;
            }
            assert!(
                !matches!(event, ExecutionEvent::Finished { .. }),
                "the task finished before {what}: {event:?}"
            );
        }
        panic!("the event stream ended before {what}");
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {EVENT_TIMEOUT:?}"))
}

/// The run attempt a task's `Started` event names.
fn started_attempt(history: &[ExecutionEvent]) -> Uuid {
    history
        .iter()
        .find_map(|event| match event {
            ExecutionEvent::Started {
                task_attempt_id, ..
            } => *task_attempt_id,
            _ => None,
        })
        .expect("a Started event naming the run attempt")
}

/// Run a task through `profile` (program: `stand_in`) from one node to another, and check
/// what the originator saw.
async fn profile_between_two_nodes(name: &str, mut profile: ProfileConfig, stand_in: &StandIn) {
    let (first, second, bin) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    stand_in.set_test_key();
    profile.program = stand_in.install(bin.path()).display().to_string();
    let mut executor_config = test_config(second.path());
    executor_config
        .executor
        .profiles
        .insert(name.into(), profile);
    let (origin, _executor) = connected_pair(test_config(first.path()), executor_config).await;
    let repo = git_repo(&[("README", "hello\n")]);
    let mut task = mesh_shell_task(repo.path(), "greeting", "write a greeting", 10);
    task.executor_profile = name.into();
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{name}: {view:?}");
    assert_eq!(view.files_modified, ["greeting.txt"], "{name}");
    let diff = view.diff.clone().unwrap_or_default();
    assert!(
        diff.contains("+++ b/greeting.txt")
            && diff.contains(&format!("+hello, {}", stand_in.program)),
        "{name}: {diff}"
    );

    // The whole stream, in the order the originator recorded it.
    let (history, _later) = subscribe(&origin, id).await;
    let attempt = started_attempt(&history);
    assert_eq!(view.task_attempt_id, Some(attempt), "{name}");
    let finished_at = history
        .iter()
        .position(|e| matches!(e, ExecutionEvent::Finished { .. }))
        .expect("a Finished event");

    // Stages in order, each once in a row: setup → coding → testing → done.
    let mut stages: Vec<ExecutionStage> = Vec::new();
    for event in &history {
        if let ExecutionEvent::Progress {
            stage,
            task_attempt_id,
            ..
        } = event
        {
            assert_eq!(*task_attempt_id, Some(attempt), "{name}: {event:?}");
            if stages.last() != Some(stage) {
                stages.push(*stage);
            }
        }
    }
    assert_eq!(
        stages,
        [
            ExecutionStage::Setup,
            ExecutionStage::Coding,
            ExecutionStage::Testing,
            ExecutionStage::Done
        ],
        "{name}: {history:#?}"
    );

    // The edit as an action, and the file in the progress before the run is done.
    let editing = history.iter().position(|e| {
        matches!(e, ExecutionEvent::Progress { stage: ExecutionStage::Coding, action, .. }
            if action == "Editing greeting.txt")
    });
    assert!(editing.is_some(), "{name}: {history:#?}");
    let files_while_running = history[..finished_at].iter().any(|e| {
        matches!(e, ExecutionEvent::Progress { stage, files_modified, .. }
            if *stage != ExecutionStage::Done && files_modified == &["greeting.txt"])
    });
    assert!(files_while_running, "{name}: {history:#?}");

    // Log lines: the agent's text, then the test run's output, then the agent's closing
    // words, each with its log type and the run attempt.
    let lines: Vec<(LogType, String)> = history
        .iter()
        .filter_map(|event| match event {
            ExecutionEvent::Log {
                line,
                task_attempt_id,
                ..
            } => {
                assert_eq!(*task_attempt_id, Some(attempt), "{name}: {line:?}");
                Some((line.log_type, line.line.clone()))
            }
            _ => None,
        })
        .collect();
    let position = |log_type: LogType, text: &str| {
        lines
            .iter()
            .position(|(t, l)| *t == log_type && l.contains(text))
            .unwrap_or_else(|| panic!("{name}: no {log_type:?} line {text:?} in {lines:#?}"))
    };
    let intro = position(LogType::Agent, "I will write the greeting.");
    let tests = position(LogType::Stdout, "test result: ok. 3 passed");
    let closing = position(LogType::Agent, "Greeting written; tests pass.");
    assert!(intro < tests && tests < closing, "{name}: {lines:#?}");
    assert!(
        lines.iter().all(|(_, line)| !line.starts_with('{')),
        "{name}: raw JSON reached the logs: {lines:#?}"
    );
    // The originator's stored logs keep the types (the API's log endpoint reads them).
    let stored = origin.relay.send(GetExecutionLogs(id)).await.unwrap();
    assert!(
        stored
            .iter()
            .any(|l| l.log_type == LogType::Agent && l.line == "I will write the greeting."),
        "{name}: {stored:#?}"
    );
    assert!(
        stored
            .iter()
            .any(|l| l.log_type == LogType::Stdout && l.line == "test result: ok. 3 passed"),
        "{name}: {stored:#?}"
    );
}

#[actix_rt::test]
async fn a_codex_task_between_two_nodes_shows_stages_actions_files_and_typed_logs() {
    profile_between_two_nodes("CODEX", ProfileConfig::codex(), &CODEX).await;
}

#[actix_rt::test]
async fn a_gemini_task_between_two_nodes_shows_stages_actions_files_and_typed_logs() {
    profile_between_two_nodes("GEMINI", ProfileConfig::gemini(), &GEMINI).await;
}

#[actix_rt::test]
async fn an_amp_task_between_two_nodes_shows_stages_actions_files_and_typed_logs() {
    profile_between_two_nodes("AMP", ProfileConfig::amp(), &AMP).await;
}

/// The file in the run's `.git` directory the SHELL agent below waits for: inside `.git`
/// it is in no diff and no `git status`, and the agent can read it through its sandbox.
const GO_FILE: &str = ".git/apn-test-go";

#[actix_rt::test]
async fn the_workspace_watcher_shows_a_text_only_agents_files_at_the_originator_while_it_runs() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut executor_config = shell_config(second.path());
    executor_config.executor.watch_interval_ms = 200;
    let (origin, _executor) = connected_pair(test_config(first.path()), executor_config).await;
    let repo = git_repo(&[("README", "hello\n")]);
    // Writes a file, then waits (at most 30 s) for the test to have seen it reported.
    let prompt = format!(
        "printf 'one\\n' > first.txt; i=0; \
         while [ ! -e {GO_FILE} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; \
         printf 'two\\n' > second.txt"
    );
    let task = mesh_shell_task(repo.path(), "watched", &prompt, 10);
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    let (history, mut events) = subscribe(&origin, id).await;

    let attempt = match history.iter().find_map(|event| match event {
        ExecutionEvent::Started {
            task_attempt_id, ..
        } => *task_attempt_id,
        _ => None,
    }) {
        Some(attempt) => attempt,
        None => {
            match next_event(&mut events, "the run's start", |e| {
                matches!(e, ExecutionEvent::Started { .. })
            })
            .await
            {
                ExecutionEvent::Started {
                    task_attempt_id: Some(attempt),
                    ..
                } => attempt,
                other => panic!("a start without its run attempt: {other:?}"),
            }
        }
    };
    let seen_in_history = history.iter().any(|e| {
        matches!(e, ExecutionEvent::Progress { files_modified, .. } if files_modified == &["first.txt"])
    });
    if !seen_in_history {
        next_event(&mut events, "first.txt in a progress report", |e| {
            matches!(e, ExecutionEvent::Progress { files_modified, .. } if files_modified == &["first.txt"])
        })
        .await;
    }
    // The run is still under way (the agent waits for us), and the API shows the file.
    let view = task_view(&origin, id).await.unwrap();
    assert_eq!(view.status, TaskStatus::Running, "{view:?}");
    assert_eq!(view.files_modified, ["first.txt"], "{view:?}");
    assert_eq!(view.task_attempt_id, Some(attempt));

    let workspace = second.path().join("workspaces").join(attempt.to_string());
    std::fs::write(workspace.join(GO_FILE), b"go").unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(view.files_modified, ["first.txt", "second.txt"]);
    let diff = view.diff.unwrap_or_default();
    assert!(diff.contains("+one") && diff.contains("+two"), "{diff}");
    assert!(!diff.contains("apn-test-go"), "{diff}");
}
