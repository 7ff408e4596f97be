//! The faucet against a real nats-server with JetStream: a node gets exactly the policy's
//! amount once; asking again, even of a restarted faucet, is refused and changes no balance;
//! a request signed by another key than the account it names, junk and oversized requests are
//! refused and spend nobody's grant; the hour's grants run out at `grants_per_hour`, also
//! across a restart (the faucet reads its past grants from the stream).
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use apn::harness::NatsServer;
use apn::identity::Identity;
use apn::messages::Vibe;
use apn::messages::codec;
use apn::network_ledger::faucet::{
    FAUCET_SUBJECT, FaucetAnswer, FaucetError, FaucetPolicy, FaucetRequest, HOUR_MS,
    MAX_REQUEST_BYTES, Refusal, SignedRequest, request_grant, serve, sign_request,
};
use apn::network_ledger::projection::Projection;
use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up};
use apn::network_ledger::treasury;
use tokio::task::JoinHandle;

/// Bound on each test: nothing here may hang.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a test waits for a just-started faucet to subscribe.
const FAUCET_START: Duration = Duration::from_secs(20);

fn policy(grants_per_hour: u32) -> FaucetPolicy {
    FaucetPolicy {
        amount: Vibe::from_whole(25),
        grants_per_hour,
    }
}

async fn open_stream(server: &NatsServer) -> LedgerStream {
    let client = async_nats::connect(server.url()).await.unwrap();
    LedgerStream::open(client, &StreamSettings::default())
        .await
        .unwrap()
}

/// Start a faucet on a connection of its own (aborting the task closes it).
async fn start_faucet(
    server: &NatsServer,
    treasury: &Identity,
    policy: FaucetPolicy,
) -> JoinHandle<Result<(), FaucetError>> {
    let client = async_nats::connect(server.url()).await.unwrap();
    let stream = LedgerStream::open(client.clone(), &StreamSettings::default())
        .await
        .unwrap();
    let treasury = treasury.clone();
    tokio::spawn(serve(client, stream, treasury, policy))
}

async fn stop_faucet(faucet: JoinHandle<Result<(), FaucetError>>) {
    faucet.abort();
    assert!(faucet.await.unwrap_err().is_cancelled());
}

/// Ask for `identity`'s grant, waiting for a just-started faucet to answer at all.
async fn ask(client: &async_nats::Client, identity: &Identity) -> FaucetAnswer {
    let deadline = tokio::time::Instant::now() + FAUCET_START;
    loop {
        match request_grant(client, identity).await {
            Err(FaucetError::NoFaucet) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answer => return answer.unwrap(),
        }
    }
}

/// Send raw request bytes (what an attacker can put on the subject).
async fn ask_raw(client: &async_nats::Client, bytes: Vec<u8>) -> FaucetAnswer {
    let deadline = tokio::time::Instant::now() + FAUCET_START;
    loop {
        match client.request(FAUCET_SUBJECT, bytes.clone().into()).await {
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("faucet request failed: {e}"),
            Ok(reply) => return serde_json::from_slice(&reply.payload).unwrap(),
        }
    }
}

/// Balances as a projection caught up from the stream sees them.
async fn balances(stream: &LedgerStream, treasury: &Identity, accounts: &[&Identity]) -> Vec<Vibe> {
    let mut projection = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    catch_up(stream, &mut projection).await.unwrap();
    accounts
        .iter()
        .map(|a| Vibe::from_micros(projection.state().balance(&a.public_key())))
        .collect()
}

fn is_bad_request(answer: &FaucetAnswer) -> bool {
    matches!(
        answer,
        FaucetAnswer::Refused {
            reason: Refusal::BadRequest { .. }
        }
    )
}

#[tokio::test]
async fn a_forged_or_malformed_request_is_refused_and_spends_no_grant() {
    tokio::time::timeout(TEST_TIMEOUT, forged_request())
        .await
        .expect("the test finished in time");
}

async fn forged_request() {
    let server = NatsServer::start_jetstream().unwrap();
    let stream = open_stream(&server).await;
    let (treasury, mallory, victim) = (
        Identity::ephemeral(),
        Identity::ephemeral(),
        Identity::ephemeral(),
    );
    let faucet = start_faucet(&server, &treasury, policy(10)).await;
    let client = async_nats::connect(server.url()).await.unwrap();

    // Mallory signs a request that names the victim's account: the signature is not the
    // victim's, so it is refused (and cannot spend the victim's one grant).
    let own = sign_request(&mallory, chrono::Utc::now().timestamp_millis()).unwrap();
    let mut signed: SignedRequest = codec::decode(&own, MAX_REQUEST_BYTES).unwrap();
    signed.request = codec::encode(&FaucetRequest {
        account: victim.public_key(),
        time_ms: chrono::Utc::now().timestamp_millis(),
    })
    .unwrap();
    let forged = codec::encode(&signed).unwrap();
    let answer = ask_raw(&client, forged).await;
    assert!(is_bad_request(&answer), "{answer:?}");

    // A request from too long ago (a replay of an old capture), junk, an oversized one.
    let stale = sign_request(
        &mallory,
        chrono::Utc::now().timestamp_millis() - 10 * 60_000,
    )
    .unwrap();
    for bytes in [stale, b"junk".to_vec(), vec![0xa1; MAX_REQUEST_BYTES + 1]] {
        let answer = ask_raw(&client, bytes).await;
        assert!(is_bad_request(&answer), "{answer:?}");
    }
    assert_eq!(
        balances(&stream, &treasury, &[&mallory, &victim]).await,
        [Vibe::ZERO, Vibe::ZERO],
        "no refused request minted anything"
    );

    // The victim's grant is still there for the victim.
    let answer = ask(&client, &victim).await;
    assert!(
        matches!(answer, FaucetAnswer::Granted { amount, .. } if amount == policy(10).amount),
        "{answer:?}"
    );
    assert_eq!(
        balances(&stream, &treasury, &[&mallory, &victim]).await,
        [Vibe::ZERO, policy(10).amount]
    );
    stop_faucet(faucet).await;
}

#[tokio::test]
async fn one_grant_per_identity_even_across_a_faucet_restart() {
    tokio::time::timeout(TEST_TIMEOUT, one_grant_per_identity())
        .await
        .expect("the test finished in time");
}

async fn one_grant_per_identity() {
    let server = NatsServer::start_jetstream().unwrap();
    let stream = open_stream(&server).await;
    let (treasury, node) = (Identity::ephemeral(), Identity::ephemeral());
    // A treasury mint with another memo is not a faucet grant: the node still gets one.
    treasury::mint(
        &stream,
        &treasury,
        node.public_key(),
        Vibe::from_whole(1),
        "grant",
    )
    .await
    .unwrap();
    let faucet = start_faucet(&server, &treasury, policy(10)).await;
    let client = async_nats::connect(server.url()).await.unwrap();

    let answer = ask(&client, &node).await;
    let FaucetAnswer::Granted { sequence, amount } = answer else {
        panic!("the first request is granted: {answer:?}");
    };
    assert_eq!(amount, policy(10).amount);
    let after_grant = Vibe::from_whole(1).checked_add(amount).unwrap();
    assert_eq!(balances(&stream, &treasury, &[&node]).await, [after_grant]);
    let mut projection = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    catch_up(&stream, &mut projection).await.unwrap();
    assert_eq!(
        projection.verdict(sequence).unwrap(),
        None,
        "the grant's entry is applied"
    );

    let again = ask(&client, &node).await;
    assert_eq!(
        again,
        FaucetAnswer::Refused {
            reason: Refusal::AlreadyGranted
        }
    );
    assert_eq!(balances(&stream, &treasury, &[&node]).await, [after_grant]);

    // A new faucet reads the grant from the stream.
    stop_faucet(faucet).await;
    let faucet = start_faucet(&server, &treasury, policy(10)).await;
    let after_restart = ask(&client, &node).await;
    assert_eq!(
        after_restart,
        FaucetAnswer::Refused {
            reason: Refusal::AlreadyGranted
        }
    );
    assert_eq!(balances(&stream, &treasury, &[&node]).await, [after_grant]);
    stop_faucet(faucet).await;
}

#[tokio::test]
async fn the_hours_grants_run_out_at_the_policys_rate_even_across_a_restart() {
    tokio::time::timeout(TEST_TIMEOUT, rate_limited())
        .await
        .expect("the test finished in time");
}

async fn rate_limited() {
    let server = NatsServer::start_jetstream().unwrap();
    let stream = open_stream(&server).await;
    let treasury = Identity::ephemeral();
    let nodes: Vec<Identity> = (0..4).map(|_| Identity::ephemeral()).collect();
    let faucet = start_faucet(&server, &treasury, policy(2)).await;
    let client = async_nats::connect(server.url()).await.unwrap();

    for node in &nodes[..2] {
        let answer = ask(&client, node).await;
        assert!(matches!(answer, FaucetAnswer::Granted { .. }), "{answer:?}");
    }
    let third = ask(&client, &nodes[2]).await;
    let FaucetAnswer::Refused {
        reason: Refusal::RateLimited { retry_after_ms },
    } = third
    else {
        panic!("the third identity is rate limited: {third:?}");
    };
    assert!(retry_after_ms > 0 && retry_after_ms <= HOUR_MS.unsigned_abs());

    // A restarted faucet counts the hour's grants from the stream.
    stop_faucet(faucet).await;
    let faucet = start_faucet(&server, &treasury, policy(2)).await;
    let fourth = ask(&client, &nodes[3]).await;
    assert!(
        matches!(
            fourth,
            FaucetAnswer::Refused {
                reason: Refusal::RateLimited { .. }
            }
        ),
        "{fourth:?}"
    );
    let refs: Vec<&Identity> = nodes.iter().collect();
    let granted = policy(2).amount;
    assert_eq!(
        balances(&stream, &treasury, &refs).await,
        [granted, granted, Vibe::ZERO, Vibe::ZERO]
    );
    stop_faucet(faucet).await;
}

#[tokio::test]
async fn two_faucets_sharing_a_treasury_grant_one_identity_once() {
    tokio::time::timeout(TEST_TIMEOUT, two_faucets())
        .await
        .expect("the test finished in time");
}

async fn two_faucets() {
    let server = NatsServer::start_jetstream().unwrap();
    let stream = open_stream(&server).await;
    let (treasury, node) = (Identity::ephemeral(), Identity::ephemeral());
    let first = start_faucet(&server, &treasury, policy(100)).await;
    let second = start_faucet(&server, &treasury, policy(100)).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    // Both faucets are subscribed before the burst (each answers some of the warm-up asks).
    for _ in 0..4 {
        ask(&client, &Identity::ephemeral()).await;
    }
    let answers = futures::future::join_all((0..8).map(|_| ask(&client, &node))).await;
    let granted = answers
        .iter()
        .filter(|a| matches!(a, FaucetAnswer::Granted { .. }))
        .count();
    assert_eq!(granted, 1, "{answers:?}");
    assert!(
        answers.iter().all(|a| matches!(
            a,
            FaucetAnswer::Granted { .. }
                | FaucetAnswer::Refused {
                    reason: Refusal::AlreadyGranted
                }
        )),
        "{answers:?}"
    );
    assert_eq!(
        balances(&stream, &treasury, &[&node]).await,
        [policy(100).amount]
    );
    stop_faucet(first).await;
    stop_faucet(second).await;
}
