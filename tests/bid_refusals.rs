//! Who does not bid, between two real nodes: a node whose roles leave out `compute`, and a
//! node whose scratch data fills its `resources.storage_gb` cap (measured at start, at
//! each assignment and after each run: the first task after the disk fills is refused at
//! assignment, the next hears no bid). The same executor with the compute role runs the
//! task.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use apn::actors::distributor::TaskStatus;
use apn::config::Config;
use common::*;

/// Run one SHELL task from a fresh originator on `executor` and return its final view.
async fn one_task(executor: Config) -> apn::actors::distributor::TaskView {
    let origin_dir = tempfile::tempdir().unwrap();
    let mut origin_config = test_config(origin_dir.path());
    origin_config.market.bid_rounds_max = 1;
    let (origin, _executor) = connected_pair(origin_config, executor).await;
    let repo = git_repo(&[("README", "hello\n")]);
    let task = mesh_shell_task(repo.path(), "refusal", "echo ran > out.txt", 10);
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    task_final(&origin, id, EVENT_TIMEOUT).await
}

#[actix_rt::test]
async fn a_node_whose_roles_leave_out_compute_does_not_bid() {
    let dir = tempfile::tempdir().unwrap();
    let mut relay_only = shell_config(dir.path());
    relay_only.node.capabilities = vec!["relay".into(), "storage".into()];
    let view = one_task(relay_only).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    assert!(
        view.error
            .as_deref()
            .unwrap_or_default()
            .contains("no node bid"),
        "{view:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut compute = shell_config(dir.path());
    compute.node.capabilities = vec!["compute".into(), "relay".into()];
    let view = one_task(compute).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
}

#[actix_rt::test]
async fn a_node_whose_scratch_data_fills_its_storage_cap_refuses_then_does_not_bid() {
    let dir = tempfile::tempdir().unwrap();
    let mut full = shell_config(dir.path());
    full.resources.storage_gb = 1;
    let origin_dir = tempfile::tempdir().unwrap();
    let mut origin_config = test_config(origin_dir.path());
    origin_config.market.bid_rounds_max = 1;
    let (origin, _executor) = connected_pair(origin_config, full).await;

    // Scratch data left at start would be removed as a killed run's leftovers, so the
    // filler arrives while the node runs. A sparse file: its length counts against the
    // cap, its blocks cost the test nothing.
    let workspaces = dir.path().join("workspaces");
    std::fs::create_dir_all(&workspaces).unwrap();
    let filler = std::fs::File::create(workspaces.join("filler")).unwrap();
    filler.set_len(1 << 30).unwrap();
    let repo = git_repo(&[("README", "hello\n")]);

    // The executor bid on its start-up measure; the measure at assignment refuses.
    let task = mesh_shell_task(repo.path(), "refused", "echo ran > out.txt", 10);
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    assert!(view.diff.is_none(), "{view:?}");

    // That measure is kept: the next task hears no bid at all.
    let task = mesh_shell_task(repo.path(), "no bid", "echo ran > out.txt", 10);
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    let view = task_final(&origin, id, EVENT_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    assert!(
        view.error
            .as_deref()
            .unwrap_or_default()
            .contains("no node bid"),
        "{view:?}"
    );
}
