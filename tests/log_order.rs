//! Issue 15, "sequence numbers really order batches": a run's log batches carry 0, 1, 2, …
//! and the originator keeps its stream in that order.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::actors::distributor::TaskStatus;
use apn::actors::relay::GetExecutionLogs;
use apn::messages::APNMessage;
use common::*;

/// Lines the task prints: several batches' worth (a batch holds at most 200 lines).
const LINES: usize = 1000;

#[actix_rt::test]
async fn log_batches_are_numbered_and_the_stream_stays_in_order() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (origin, _executor) =
        connected_pair(test_config(first.path()), shell_config(second.path())).await;
    let mut tap = Tap::on(&origin).await;
    let repo = git_repo(&[("README", "hello\n")]);
    let prompt = format!("for i in $(seq 1 {LINES}); do echo \"line $i\"; done");
    let id = origin
        .distributor
        .send(mesh_shell_task(repo.path(), "many lines", &prompt, 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");

    let mut sequences = Vec::new();
    while let Some(inbound) = tap
        .next_of("execution_logs", Duration::from_millis(200))
        .await
    {
        if let APNMessage::ExecutionLogs(logs) = &inbound.envelope.message
            && logs.task_id == id
        {
            sequences.push(logs.sequence);
        }
    }
    sequences.sort_unstable();
    assert!(sequences.len() >= 3, "only {} batches", sequences.len());
    let expected: Vec<u64> = (0..sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "batches are not numbered 0, 1, 2, …");

    let lines = origin.relay.send(GetExecutionLogs(id)).await.unwrap();
    let printed: Vec<&str> = lines
        .iter()
        .filter(|l| l.line.starts_with("line "))
        .map(|l| l.line.as_str())
        .collect();
    let wanted: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    assert_eq!(
        printed, wanted,
        "the stream is not in the order it was printed"
    );
}
