//! The network ledger on a three-server JetStream cluster (routes between them, stream R3):
//! three nodes, each talking to a different server, trade tasks while one server is killed
//! and restarted. Afterwards every node's projection, and one built from the stream alone,
//! has the same balance for every account, and balances plus held escrow equal what the
//! treasury minted.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use apn::actors::distributor::TaskStatus;
use apn::actors::node::NodeHandle;
use apn::config::{Config, SettlementMode};
use apn::harness::NatsCluster;
use apn::identity::Identity;
use apn::messages::Vibe;
use apn::network_ledger::entry::EntryBody;
use apn::network_ledger::projection::Projection;
use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up};
use apn::protocol::ledger::GetBalance;
use common::*;
use uuid::Uuid;

const TASKS: usize = 6;
const FUNDS: u64 = 100;

fn clustered(mut config: Config, url: String, treasury: &Identity) -> Config {
    config.settlement.mode = SettlementMode::Jetstream;
    config.settlement.url = url;
    config.settlement.replicas = 3;
    config.settlement.treasury = vec![hex::encode(treasury.public_key())];
    // Six tasks at once outnumber the executors' slots: let them wait for a slot over more
    // bid rounds than the default three (a loaded machine runs each task longer).
    config.market.bid_rounds_max = 30;
    config
}

async fn balance(node: &NodeHandle) -> Vibe {
    node.balance
        .send(GetBalance)
        .await
        .unwrap()
        .unwrap()
        .balance
}

#[actix_rt::test]
async fn projections_agree_after_a_server_of_the_cluster_is_killed_and_restarted() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let urls = cluster.urls();
    let treasury = Identity::ephemeral();
    let client = apn::network_ledger::stream::connect(&urls.join(","))
        .await
        .unwrap();
    let settings = StreamSettings {
        replicas: 3,
        ..StreamSettings::default()
    };
    let stream = LedgerStream::open(client, &settings).await.unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let originator_key = Identity::load_or_create(dirs[0].path()).unwrap();
    stream
        .append(
            &treasury,
            Uuid::new_v4(),
            EntryBody::Mint {
                to: originator_key.public_key(),
                amount: Vibe::from_whole(FUNDS),
                memo: "cluster test".into(),
            },
            None,
        )
        .await
        .unwrap();

    let (a, b) = connected_pair(
        clustered(test_config(dirs[0].path()), urls[0].clone(), &treasury),
        clustered(shell_config(dirs[1].path()), urls[1].clone(), &treasury),
    )
    .await;
    let mut third = clustered(shell_config(dirs[2].path()), urls[2].clone(), &treasury);
    third.node.bootstrap = vec![a.dial_address().unwrap().to_string()];
    let c = node(third).await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async { knows_all(&a, &[&b, &c]).await }).await,
        "the originator knows both executors"
    );
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            balance(&a).await == Vibe::from_whole(FUNDS)
        })
        .await
    );

    let repo = git_repo(&[("f", "x\n")]);
    let mut ids = Vec::new();
    for n in 0..TASKS {
        if n == TASKS / 2 {
            // Server 1 (executor b's) goes down while tasks are in flight; a quorum of two
            // keeps the stream writable.
            cluster.servers[1].stop();
        }
        let task = mesh_shell_task(repo.path(), &format!("t{n}"), "echo done > out", 3);
        ids.push(a.distributor.send(task).await.unwrap().unwrap());
    }
    let mut completed = 0;
    let mut failures = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        if n == TASKS / 2 + 1 {
            cluster.servers[1].restart().unwrap();
        }
        let view = task_final(&a, *id, Duration::from_secs(90)).await;
        if view.status == TaskStatus::Completed {
            completed += 1;
        } else {
            failures.push(view.error.unwrap_or_default());
        }
    }
    assert!(completed > 0, "no task completed: {failures:#?}");

    // Every projection converges on the same balances.
    let nodes = [&a, &b, &c];
    let mut observer = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let agreed = loop {
        // The restarted server's cluster may still be electing: a timed-out read is a retry.
        let mut all = catch_up(&stream, &mut observer).await.is_ok();
        for node in nodes {
            all &= Vibe::from_micros(observer.state().balance(&node.identity.public_key()))
                == balance(node).await;
        }
        if all || tokio::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let state = observer.state();
    assert!(
        agreed,
        "node projections differ from the stream's: {state:?}"
    );
    assert_eq!(state.minted(), u128::from(Vibe::from_whole(FUNDS).micros()));
    assert_eq!(state.circulating(), state.minted());
    let paid: u64 = [&b, &c]
        .iter()
        .map(|node| state.balance(&node.identity.public_key()))
        .sum();
    assert!(paid > 0, "the executors were paid");
    for node in [a, b, c] {
        node.shutdown().await;
    }
}
