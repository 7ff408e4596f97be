//! The network ledger against a real nats-server with JetStream: a hostile account's entries
//! published on the stream (double spend, overdraft, a debit for another account, a release
//! of another's hold, an early or commit-less claim, a replay, a mint by a non-treasury key)
//! are skipped by every projection and change no balance; junk on an account's subject costs
//! its owner a retry, never a lost or doubled debit.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use apn::harness::NatsServer;
use apn::identity::Identity;
use apn::messages::Vibe;
use apn::network_ledger::entry::{AccountKey, EntryBody, sign, subject_of};
use apn::network_ledger::projection::Projection;
use apn::network_ledger::rules::HoldState;
use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up};
use uuid::Uuid;

/// Bound on the whole test: nothing here may hang.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn open_stream(server: &NatsServer) -> LedgerStream {
    let client = async_nats::connect(server.url()).await.unwrap();
    LedgerStream::open(client, &StreamSettings::default())
        .await
        .unwrap()
}

fn mint(to: &Identity, whole: u64) -> EntryBody {
    EntryBody::Mint {
        to: to.public_key(),
        amount: Vibe::from_whole(whole),
        memo: "grant".into(),
    }
}

fn transfer(to: &AccountKey, whole: u64) -> EntryBody {
    EntryBody::Transfer {
        to: *to,
        amount: Vibe::from_whole(whole),
        memo: String::new(),
    }
}

fn micros(whole: u64) -> u64 {
    Vibe::from_whole(whole).micros()
}

#[tokio::test]
async fn a_hostile_accounts_entries_change_no_balance_in_any_projection() {
    tokio::time::timeout(TEST_TIMEOUT, hostile_account())
        .await
        .expect("the test finished in time");
}

async fn hostile_account() {
    let server = NatsServer::start_jetstream().unwrap();
    let stream = open_stream(&server).await;
    let (treasury, mallory, victim) = (
        Identity::ephemeral(),
        Identity::ephemeral(),
        Identity::ephemeral(),
    );
    let (m, v) = (mallory.public_key(), victim.public_key());
    stream
        .append(&treasury, Uuid::new_v4(), mint(&mallory, 10), None)
        .await
        .unwrap();
    stream
        .append(&treasury, Uuid::new_v4(), mint(&victim, 10), None)
        .await
        .unwrap();

    // Double spend: two concurrent transfers of 6 from a balance of 10 through the honest
    // client (each retries until it is stored) and two raw ones signed after one sequence.
    let (first, second) = tokio::join!(
        stream.append(&mallory, Uuid::new_v4(), transfer(&v, 6), None),
        stream.append(&mallory, Uuid::new_v4(), transfer(&v, 6), None),
    );
    first.unwrap();
    second.unwrap();
    let prev = stream.last_sequence_of(&m).await.unwrap();
    let raw_a = sign(&mallory, Uuid::new_v4(), prev, transfer(&v, 3)).unwrap();
    let raw_b = sign(&mallory, Uuid::new_v4(), prev, transfer(&v, 3)).unwrap();
    stream
        .publish_unchecked(&subject_of(&m), raw_a.clone())
        .await
        .unwrap();
    stream
        .publish_unchecked(&subject_of(&m), raw_b)
        .await
        .unwrap();
    // Replay of an applied entry.
    stream
        .publish_unchecked(&subject_of(&m), raw_a)
        .await
        .unwrap();
    // Overdraft.
    stream
        .append(&mallory, Uuid::new_v4(), transfer(&v, 100), None)
        .await
        .unwrap();
    // A debit of the victim's account, signed by mallory, on the victim's subject.
    let victim_prev = stream.last_sequence_of(&v).await.unwrap();
    let forged = sign(&mallory, Uuid::new_v4(), victim_prev, transfer(&m, 5)).unwrap();
    stream
        .publish_unchecked(&subject_of(&v), forged)
        .await
        .unwrap();
    // A mint by a non-treasury key.
    stream
        .append(&mallory, Uuid::new_v4(), mint(&mallory, 1000), None)
        .await
        .unwrap();
    // The victim holds 4 for a third node; mallory releases it to itself (wrong party),
    // claims it as if it were the payee (wrong party), and the payee claims early.
    let payee = Identity::ephemeral();
    let hold = Uuid::new_v4();
    let deadline_ms = chrono::Utc::now().timestamp_millis() + 60_000;
    stream
        .append(
            &victim,
            Uuid::new_v4(),
            EntryBody::Hold {
                hold,
                payee: payee.public_key(),
                amount: Vibe::from_whole(4),
                task: Uuid::new_v4(),
                deadline_ms,
            },
            None,
        )
        .await
        .unwrap();
    for attack in [EntryBody::Release { hold }, EntryBody::Claim { hold }] {
        stream
            .append(&mallory, Uuid::new_v4(), attack, None)
            .await
            .unwrap();
    }
    // The payee claims before the deadline and without a commit.
    stream
        .append(&payee, Uuid::new_v4(), EntryBody::Claim { hold }, None)
        .await
        .unwrap();

    // Two projections, one on disk and one in memory, read the whole stream.
    let dir = tempfile::tempdir().unwrap();
    let mut on_disk =
        Projection::open(&dir.path().join("p.sqlite3"), &[treasury.public_key()]).unwrap();
    let mut in_memory = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    let outcome = catch_up(&stream, &mut on_disk).await.unwrap();
    catch_up(&stream, &mut in_memory).await.unwrap();
    assert_eq!(on_disk.state(), in_memory.state());
    let state = on_disk.state();
    assert_eq!(
        (outcome.applied, outcome.skipped),
        (5, 9),
        "applied: two mints, one transfer of 6, raw_a, the hold; skipped: one concurrent \
         transfer (overdraft), raw_b (stale), the replay, the overdraft, the \
         forgery, the mint, the release, mallory's claim, the early claim: {outcome:?}"
    );
    // Exactly one of the two concurrent transfers of 6 and one raw transfer of 3 applied.
    assert_eq!(state.balance(&m), micros(1));
    assert_eq!(state.balance(&v), micros(10 + 6 + 3 - 4));
    assert_eq!(state.balance(&payee.public_key()), 0);
    assert_eq!(state.hold(&hold).unwrap().state, HoldState::Held);
    assert_eq!(state.minted(), u128::from(micros(20)));
    assert_eq!(state.circulating(), state.minted());
}

#[tokio::test]
async fn junk_on_an_owners_subject_costs_a_retry_never_a_lost_or_doubled_debit() {
    tokio::time::timeout(TEST_TIMEOUT, junk_costs_a_retry())
        .await
        .expect("the test finished in time");
}

async fn junk_costs_a_retry() {
    let server = NatsServer::start_jetstream().unwrap();
    let stream = open_stream(&server).await;
    let (treasury, owner, payee) = (
        Identity::ephemeral(),
        Identity::ephemeral(),
        Identity::ephemeral(),
    );
    let (o, p) = (owner.public_key(), payee.public_key());
    stream
        .append(&treasury, Uuid::new_v4(), mint(&owner, 10), None)
        .await
        .unwrap();
    let mut projection = Projection::open_in_memory(&[treasury.public_key()]).unwrap();
    catch_up(&stream, &mut projection).await.unwrap();
    let known = projection.state().last_sequence(&o);
    // The owner's view is now stale: junk lands on its subject.
    stream
        .publish_unchecked(&subject_of(&o), b"junk".to_vec())
        .await
        .unwrap();
    let id = Uuid::new_v4();
    let appended = stream
        .append(&owner, id, transfer(&p, 2), Some(known))
        .await
        .unwrap();
    assert_eq!(
        appended.attempts, 2,
        "the stale publish was refused, then retried"
    );
    // The same id appended again (a caller retrying after a lost answer) is stored once.
    let again = stream
        .append(&owner, id, transfer(&p, 2), None)
        .await
        .unwrap();
    assert!(again.duplicate, "the server de-duplicated the id");
    assert_eq!(again.sequence, appended.sequence);
    catch_up(&stream, &mut projection).await.unwrap();
    assert_eq!(projection.state().balance(&o), micros(8));
    assert_eq!(projection.state().balance(&p), micros(2));
}

#[tokio::test]
async fn a_stream_that_allows_purge_is_refused() {
    let server = NatsServer::start_jetstream().unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client.clone());
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "APN_LEDGER".into(),
            subjects: vec!["apn.v1.ledger.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let opened = tokio::time::timeout(
        TEST_TIMEOUT,
        LedgerStream::open(client, &StreamSettings::default()),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            opened,
            Err(apn::network_ledger::stream::StreamError::Mutable(_))
        ),
        "{opened:?}"
    );
}
