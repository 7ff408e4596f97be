//! Nodes settling on the network ledger (settlement mode `jetstream`) against a real
//! nats-server with JetStream: a task is paid from an escrow on the stream and every
//! projection agrees on the balances, with nothing minted but the treasury's grant; a node
//! the treasury never funded cannot escrow (today's `local` mode lets any key mint itself
//! credits); an executor refuses an assignment whose escrow is not on the stream.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use apn::actors::distributor::TaskStatus;
use apn::actors::executor::GetExecutorStatus;
use apn::config::{Config, SettlementMode};
use apn::identity::Identity;
use apn::market::{RepoDelivery, TaskPayload};
use apn::messages::*;
use apn::network_ledger::entry::EntryBody;
use apn::network_ledger::projection::Projection;
use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up};
use apn::protocol::ledger::GetBalance;
use common::attacker::Attacker;
use common::*;
use uuid::Uuid;

const TASK_TIMEOUT: Duration = Duration::from_secs(60);

fn on_the_network_ledger(mut config: Config, nats: &NatsServer, treasury: &Identity) -> Config {
    config.settlement.mode = SettlementMode::Jetstream;
    config.settlement.url = nats.url();
    config.settlement.treasury = vec![hex::encode(treasury.public_key())];
    config.settlement.hold_wait_ms = 2_000;
    config
}

async fn ledger(nats: &NatsServer) -> LedgerStream {
    let client = async_nats::connect(nats.url()).await.unwrap();
    LedgerStream::open(client, &StreamSettings::default())
        .await
        .unwrap()
}

/// The treasury grants `whole` VIBE to the node whose data dir is `dir` (its key is created
/// here, before the node starts).
async fn fund(stream: &LedgerStream, treasury: &Identity, dir: &Path, whole: u64) {
    let node = Identity::load_or_create(dir).unwrap();
    stream
        .append(
            treasury,
            Uuid::new_v4(),
            EntryBody::Mint {
                to: node.public_key(),
                amount: Vibe::from_whole(whole),
                memo: "test grant".into(),
            },
            None,
        )
        .await
        .unwrap();
}

/// `originator` runs a 5-VIBE task on the mesh; it completes at a price, which is returned.
async fn a_paid_task(originator: &apn::actors::node::NodeHandle) -> Vibe {
    let repo = git_repo(&[("f", "x\n")]);
    let id = originator
        .distributor
        .send(mesh_shell_task(repo.path(), "paid", "echo done > out", 5))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(originator, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    view.price.expect("a price was agreed")
}

async fn balance(node: &apn::actors::node::NodeHandle) -> (Vibe, Vibe) {
    let summary = node.balance.send(GetBalance).await.unwrap().unwrap();
    (summary.balance, summary.escrowed)
}

#[actix_rt::test]
async fn a_task_is_paid_from_an_escrow_on_the_stream_and_every_projection_agrees() {
    let nats = NatsServer::start_jetstream().unwrap();
    let treasury = Identity::ephemeral();
    let stream = ledger(&nats).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fund(&stream, &treasury, dir_a.path(), 100).await;
    let mut config_a = on_the_network_ledger(test_config(dir_a.path()), &nats, &treasury);
    config_a.http.bind = "127.0.0.1:0".into();
    let (a, b) = connected_pair(
        config_a,
        on_the_network_ledger(shell_config(dir_b.path()), &nats, &treasury),
    )
    .await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            balance(&a).await.0 == Vibe::from_whole(100)
        })
        .await,
        "the originator's projection shows the treasury's grant"
    );
    // No local grant: the local ledger minted nothing.
    let local = a.settler.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(local.balance, Vibe::default());

    let price = a_paid_task(&a).await;
    assert!(price > Vibe::default());
    // Paid: the executor's own projection shows the price, the originator's the rest.
    assert!(
        wait_until(EVENT_TIMEOUT, || async { balance(&b).await.0 == price }).await,
        "the executor was paid {price}: {:?}",
        balance(&b).await
    );
    let rest = Vibe::from_whole(100).checked_sub(price).unwrap();
    assert_eq!(balance(&a).await, (rest, Vibe::default()));
    // A third projection, built from the stream alone, agrees with both nodes.
    let mut observer = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    catch_up(&stream, &mut observer).await.unwrap();
    let state = observer.state();
    assert_eq!(state.balance(&a.identity.public_key()), rest.micros());
    assert_eq!(state.balance(&b.identity.public_key()), price.micros());
    assert_eq!(state.minted(), u128::from(Vibe::from_whole(100).micros()));
    assert_eq!(state.circulating(), state.minted());
    // The executor committed to its result before delivering it.
    let hold = state.holds().values().next().expect("one escrow");
    assert!(hold.commit.is_some(), "{hold:?}");
    // The API reads the projection: the mode, the balance, the escrow's entries in the
    // history (newest first) with the executor as the other party, and paging.
    let base = format!("http://{}", a.http_addr.unwrap());
    let (status, ledger, page) = tokio::task::spawn_blocking(move || {
        let client = apn::client::ApiClient::new(&base, None);
        let ledger = client.get("/api/ledger?limit=10").unwrap();
        let before = ledger["history"][0]["sequence"].as_u64().unwrap();
        (
            client.get("/api/status").unwrap(),
            ledger,
            client.get(&format!("/api/ledger?before={before}")).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(status["settlement"], "jetstream");
    assert_eq!(ledger["mode"], "jetstream", "{ledger}");
    assert_eq!(ledger["balance"], rest.to_string());
    assert_eq!(ledger["escrowed"], "0");
    let kinds: Vec<&str> = ledger["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["kind"].as_str().unwrap())
        .collect();
    // (Bandwidth payments may come between; the escrow's entries come in this order.)
    let escrow_entries: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|kind| ["release", "commit", "hold", "mint"].contains(kind))
        .collect();
    assert_eq!(
        escrow_entries,
        ["release", "commit", "hold", "mint"],
        "{ledger}"
    );
    let commit = ledger["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["kind"] == "commit")
        .unwrap();
    assert_eq!(
        commit["account"],
        hex::encode(b.identity.public_key()),
        "the executor's commit is in the payer's history"
    );
    assert_eq!(
        page["history"].as_array().unwrap().len(),
        kinds.len() - 1,
        "{page}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn a_node_the_treasury_never_funded_cannot_escrow() {
    let nats = NatsServer::start_jetstream().unwrap();
    let treasury = Identity::ephemeral();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = connected_pair(
        on_the_network_ledger(test_config(dir_a.path()), &nats, &treasury),
        on_the_network_ledger(shell_config(dir_b.path()), &nats, &treasury),
    )
    .await;
    let repo = git_repo(&[("f", "x\n")]);
    let id = a
        .distributor
        .send(mesh_shell_task(
            repo.path(),
            "unfunded",
            "echo done > out",
            5,
        ))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&a, id, TASK_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    let error = view.error.clone().unwrap_or_default();
    assert!(error.contains("cannot escrow"), "{error}");
    assert_eq!(balance(&a).await, (Vibe::default(), Vibe::default()));
    assert_eq!(balance(&b).await, (Vibe::default(), Vibe::default()));
    let status = b.executor.send(GetExecutorStatus).await.unwrap();
    assert_eq!(status.completed_today, 0, "nothing ran: {status:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn an_assignment_whose_escrow_is_not_on_the_stream_is_refused() {
    let nats = NatsServer::start_jetstream().unwrap();
    let treasury = Identity::ephemeral();
    let dir = tempfile::tempdir().unwrap();
    let mut config = on_the_network_ledger(shell_config(dir.path()), &nats, &treasury);
    config.settlement.hold_wait_ms = 300;
    let victim = node(config).await;
    let mut attacker = Attacker::attach(&victim).await;
    attacker.announce_to(&victim, &[]).await;
    let task = TaskPayload {
        title: "unpaid".into(),
        prompt: "echo pwned > pwned".into(),
        executor_profile: "SHELL".into(),
        base_commit: "0".repeat(40),
        repo: RepoDelivery::Bundle {
            root_commit: "0".repeat(40),
        },
        timeout_s: 30,
    };
    // A real bid, a matching assignment at the bid's price: only the escrow is missing.
    let bid = attacker.request_bid(Vibe::from_whole(5), &task).await;
    let before = victim.metrics.dropped(DropReason::NoEscrow);
    let assignment = attacker.assignment(&victim, bid.task_id, bid.price, &task);
    attacker.send(&assignment).await;
    let answer = attacker
        .next(|m| match m {
            APNMessage::ExecutionFailed(f) => f.task_id == bid.task_id,
            APNMessage::ExecutionStarted(s) => s.task_id == bid.task_id,
            _ => false,
        })
        .await;
    match answer {
        APNMessage::ExecutionFailed(failed) => {
            assert!(failed.error.contains("no escrow"), "{}", failed.error)
        }
        other => panic!("the run started without an escrow: {other:?}"),
    }
    assert_eq!(victim.metrics.dropped(DropReason::NoEscrow), before + 1);
    let status = victim.executor.send(GetExecutorStatus).await.unwrap();
    assert_eq!(status.active, 0);
    victim.shutdown().await;
}

#[actix_rt::test]
async fn nodes_logged_in_as_their_own_keys_settle_under_per_account_permissions() {
    let treasury = Identity::ephemeral();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let accounts =
        [dir_a.path(), dir_b.path()].map(|dir| Identity::load_or_create(dir).unwrap().public_key());
    let nats = NatsServer::start_jetstream_with_config(
        &apn::network_ledger::permissions::authorization_block(
            "APN_LEDGER",
            &[treasury.public_key()],
            &accounts,
        ),
    )
    .unwrap();
    // The treasury creates the stream (nodes may not) and funds the originator.
    let client = apn::network_ledger::stream::connect_as(&nats.url(), &treasury)
        .await
        .unwrap();
    let stream = LedgerStream::open(client, &StreamSettings::default())
        .await
        .unwrap();
    fund(&stream, &treasury, dir_a.path(), 100).await;
    let logged_in = |config: Config| {
        let mut config = on_the_network_ledger(config, &nats, &treasury);
        config.settlement.identity_nkey = true;
        config
    };
    let (a, b) = connected_pair(
        logged_in(test_config(dir_a.path())),
        logged_in(shell_config(dir_b.path())),
    )
    .await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            balance(&a).await.0 == Vibe::from_whole(100)
        })
        .await,
        "the originator follows the stream under its permissions"
    );
    let price = a_paid_task(&a).await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async { balance(&b).await.0 == price }).await,
        "the executor was paid {price} on its own subject: {:?}",
        balance(&b).await
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn a_node_asks_the_faucet_at_start_and_is_granted_once() {
    use apn::network_ledger::faucet::{FaucetAnswer, FaucetPolicy, Refusal, request_grant, serve};
    let nats = NatsServer::start_jetstream().unwrap();
    let treasury = Identity::ephemeral();
    let stream = ledger(&nats).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let policy = FaucetPolicy {
        amount: Vibe::from_whole(50),
        grants_per_hour: 10,
    };
    let faucet = tokio::spawn(serve(client.clone(), stream, treasury.clone(), policy));
    let dir = tempfile::tempdir().unwrap();
    let with_faucet = || {
        let mut config = on_the_network_ledger(test_config(dir.path()), &nats, &treasury);
        config.settlement.faucet = true;
        config
    };
    let granted = |node: &apn::actors::node::NodeHandle| {
        let node = node.clone();
        async move { balance(&node).await.0 == Vibe::from_whole(50) }
    };
    let first = node(with_faucet()).await;
    assert!(
        wait_until(EVENT_TIMEOUT, || granted(&first)).await,
        "the node's grant never arrived: {:?}",
        balance(&first).await
    );
    let identity = first.identity.clone();
    first.shutdown().await;
    // Started again, it asks again and is refused: still one grant.
    let again = node(with_faucet()).await;
    assert!(wait_until(EVENT_TIMEOUT, || granted(&again)).await);
    match request_grant(&client, &identity).await.unwrap() {
        FaucetAnswer::Refused {
            reason: Refusal::AlreadyGranted,
        } => {}
        other => panic!("a second grant for one identity: {other:?}"),
    }
    let mut observer = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    catch_up(&ledger(&nats).await, &mut observer).await.unwrap();
    assert_eq!(
        observer.state().minted(),
        u128::from(Vibe::from_whole(50).micros())
    );
    again.shutdown().await;
    faucet.abort();
}
