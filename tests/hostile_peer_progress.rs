//! A hostile executor's progress reports: a peer that wins a task (a raw swarm answering
//! the Noise handshake itself) and then names more files, or longer paths, than a progress
//! report may is refused where the report arrives and counted (`oversized`); its next,
//! well-formed report is shown as usual.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use actix::prelude::*;
use apn::actors::relay::{ExecutionEvent, SubscribeExecution};
use apn::market::{PROGRESS_FILE_BYTES_MAX, PROGRESS_FILES_MAX, ProgressAction};
use apn::messages::*;
use common::attacker::Attacker;
use common::*;
use tokio::sync::mpsc;

#[actix_rt::test]
async fn an_executors_progress_past_the_file_limits_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let victim = node(test_config(dir.path())).await;
    let mut attacker = Attacker::attach(&victim).await;
    attacker.announce_to(&victim, &["SHELL"]).await;

    let repo = git_repo(&[("f", "x\n")]);
    let id = victim
        .distributor
        .send(mesh_shell_task(repo.path(), "target", "echo hi", 10))
        .await
        .unwrap()
        .unwrap();
    let (mut session, execution_id) = attacker.win_and_start(&victim, id).await;

    let (sender, mut events) = mpsc::unbounded_channel();
    let mut ctx = Context::new();
    ctx.set_mailbox_capacity(10_000);
    let history = victim
        .relay
        .send(SubscribeExecution {
            task_id: id,
            subscriber: ctx.run(Forward(sender)).recipient(),
        })
        .await
        .unwrap();
    let oversized_before = victim.metrics.dropped(DropReason::Oversized);

    let mut progress = |files: Vec<String>| {
        let action = ProgressAction {
            stage: ExecutionStage::Coding,
            action: "Editing".into(),
            files_modified: files,
            files_omitted: 0,
            repo_chunks_received: None,
        };
        let plain = apn::messages::codec::encode(&action).unwrap();
        APNMessage::ExecutionProgress(ExecutionProgress {
            task_id: id,
            execution_id,
            stage: ExecutionStage::Coding,
            percent: 20,
            current_action: Some(session.seal(&plain).unwrap()),
        })
    };
    // One path too many; one path a byte too long; then a report within the limits.
    let too_many = (0..=PROGRESS_FILES_MAX).map(|i| format!("f{i}")).collect();
    let too_long = vec!["x".repeat(PROGRESS_FILE_BYTES_MAX + 1)];
    let (first, second, third) = (
        progress(too_many),
        progress(too_long),
        progress(vec!["ok.txt".into()]),
    );
    for message in [&first, &second, &third] {
        attacker.send(message).await;
    }

    // The frames arrive in order on one connection: once the good report is shown, the
    // two before it were handled.
    let mut seen = history;
    let shown = tokio::time::timeout(EVENT_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            let good = matches!(&event, ExecutionEvent::Progress { files_modified, .. }
                if files_modified == &["ok.txt"]);
            seen.push(event);
            if good {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(shown.ok(), Some(true), "{seen:#?}");
    assert!(
        seen.iter().all(|e| match e {
            ExecutionEvent::Progress { files_modified, .. } =>
                files_modified.len() <= PROGRESS_FILES_MAX
                    && files_modified
                        .iter()
                        .all(|f| f.len() <= PROGRESS_FILE_BYTES_MAX),
            _ => true,
        }),
        "{seen:#?}"
    );
    assert_eq!(
        victim.metrics.dropped(DropReason::Oversized),
        oversized_before + 2
    );
    let view = task_view(&victim, id).await.unwrap();
    assert_eq!(view.files_modified, ["ok.txt"]);
    assert_eq!(view.task_attempt_id, Some(execution_id));
}
