//! What a restart must not lose, with real nodes on real data dirs: a payment whose payee
//! was down is delivered when it returns (the outbox and receipts), and a task whose
//! originator restarted mid-run is failed with a reason and its escrow refunded.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::actors::distributor::{GetTask, TaskStatus};
use apn::actors::settler::{
    GetBalance, INTERRUPTED_REASON, PayPeer, RecordCounterparty, UndeliveredPayments,
};
use apn::config::Config;
use apn::messages::{TransactionReason, Vibe};
use common::*;
use uuid::Uuid;

/// A node that runs SHELL tasks, with a short bid window.
fn quick_shell_config(dir: &std::path::Path) -> Config {
    let mut config = shell_config(dir);
    config.market.bid_window_ms = 300;
    config
}

async fn balance(node: &apn::actors::node::NodeHandle) -> Vibe {
    node.settler
        .send(GetBalance)
        .await
        .expect("settler alive")
        .expect("balance")
        .balance
}

#[actix_rt::test]
async fn a_payment_to_a_node_that_was_down_arrives_once_when_it_returns() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config_b = test_config(dir_b.path());
    config_b.node.announce_interval_s = 1;
    let (a, b) = connected_pair(test_config(dir_a.path()), config_b.clone()).await;
    let payee = b.identity.public_key();
    // b ran a task for a (its executor admitted it): a's payments are welcome on b.
    b.settler
        .send(RecordCounterparty {
            peer: a.identity.public_key(),
        })
        .await
        .unwrap();
    b.shutdown().await;

    let amount = Vibe::from_whole(7);
    a.settler
        .send(PayPeer {
            transfer_id: Uuid::new_v4(),
            payee,
            amount,
            reason: TransactionReason::BandwidthShare,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        a.settler.send(UndeliveredPayments).await.unwrap().unwrap(),
        1,
        "the payment waits in the outbox while its payee is away"
    );

    // The payee comes back on the same data dir (same identity, same ledger).
    config_b.node.bootstrap = vec![a.dial_address().unwrap().to_string()];
    let b = node(config_b).await;
    let expected = Vibe::from_whole(1007);
    assert!(
        wait_until(Duration::from_secs(30), || async {
            balance(&b).await == expected
                && a.settler.send(UndeliveredPayments).await.unwrap().unwrap() == 0
        })
        .await,
        "payment not delivered and confirmed: payee has {}, outbox {}",
        balance(&b).await,
        a.settler.send(UndeliveredPayments).await.unwrap().unwrap()
    );
    // Credited once, even though the payer may have sent it more than once.
    assert_eq!(balance(&b).await, expected);
    assert_eq!(balance(&a).await, Vibe::from_whole(993));
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn a_task_cut_short_by_a_restart_fails_with_a_reason_and_its_escrow_returns() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config_a = test_config(dir_a.path());
    config_a.market.bid_window_ms = 300;
    let (a, b) = connected_pair(config_a.clone(), quick_shell_config(dir_b.path())).await;
    let repo = git_repo(&[("f", "x\n")]);
    let id = a
        .distributor
        .send(mesh_shell_task(repo.path(), "long", "sleep 30", 5))
        .await
        .unwrap()
        .unwrap();
    assert!(
        task_reaches(&a, id, TaskStatus::Running, EVENT_TIMEOUT).await,
        "the task never ran"
    );
    let escrowed = a.settler.send(GetBalance).await.unwrap().unwrap().escrowed;
    assert!(escrowed > Vibe::ZERO, "escrow is held while the task runs");

    // The originator goes away and comes back on the same data dir.
    a.shutdown().await;
    b.shutdown().await;
    let a = node(config_a).await;
    let view = a
        .distributor
        .send(GetTask(id))
        .await
        .unwrap()
        .expect("the journal remembers the task");
    assert_eq!(view.status, TaskStatus::Failed);
    assert_eq!(view.error.as_deref(), Some(INTERRUPTED_REASON));
    assert_eq!(view.title, "long");
    let summary = a.settler.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(summary.escrowed, Vibe::ZERO);
    assert_eq!(summary.balance, Vibe::from_whole(1000));
    a.shutdown().await;
}

#[actix_rt::test]
async fn what_a_killed_run_left_behind_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir
        .path()
        .join("workspaces")
        .join(Uuid::new_v4().to_string());
    std::fs::create_dir_all(workspace.join("src")).unwrap();
    std::fs::write(workspace.join("src/lib.rs"), "half-written").unwrap();
    let bundles = dir.path().join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::write(bundles.join(format!("{}.bundle", Uuid::new_v4())), b"x").unwrap();
    // A link out of the tree is removed as a link; its target is left alone.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), "keep").unwrap();
    std::os::unix::fs::symlink(outside.path(), bundles.join("link")).unwrap();

    let node = node(test_config(dir.path())).await;
    for name in apn::actors::node::SCRATCH_DIRS {
        let left = std::fs::read_dir(dir.path().join(name))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(left, 0, "{name} still has {left} entries");
    }
    assert!(outside.path().join("keep").exists());
    node.shutdown().await;
}
