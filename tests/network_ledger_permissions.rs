//! The ledger's server with per-account permissions (`apn treasury nats-authorization`): each
//! account logs in as the nkey that is its own key and may publish on its own subject only.
//! An account cannot write on another's subject (not even junk that would only cost the
//! owner a retry), cannot update, purge or delete the stream, and a client without a known
//! key is not let in; the read side a node needs (stream info, last message of a subject,
//! an ordered consumer) still works.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use apn::harness::NatsServer;
use apn::identity::Identity;
use apn::messages::Vibe;
use apn::network_ledger::entry::{EntryBody, subject_of};
use apn::network_ledger::permissions::authorization_block;
use apn::network_ledger::projection::Projection;
use apn::network_ledger::stream::{LedgerStream, StreamSettings, catch_up, connect, connect_as};
use apn::network_ledger::treasury;
use uuid::Uuid;

/// Bound on the whole test: nothing here may hang.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a refused call is waited for (the server drops it; the stream is checked after).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn an_account_writes_only_on_its_own_subject_and_nobody_touches_the_stream() {
    tokio::time::timeout(TEST_TIMEOUT, own_subject_only())
        .await
        .expect("the test finished in time");
}

async fn own_subject_only() {
    let (bank, alice, bob) = (
        Identity::ephemeral(),
        Identity::ephemeral(),
        Identity::ephemeral(),
    );
    let (a, b) = (alice.public_key(), bob.public_key());
    let server = NatsServer::start_jetstream_with_config(&authorization_block(
        "APN_LEDGER",
        &[bank.public_key()],
        &[a, b],
    ))
    .unwrap();
    let url = server.url();
    // No key, no entry.
    assert!(connect(&url).await.is_err(), "an anonymous client got in");
    let stranger = Identity::ephemeral();
    assert!(
        connect_as(&url, &stranger).await.is_err(),
        "an unknown key got in"
    );

    // The treasury creates the stream and funds Alice.
    let bank_stream = LedgerStream::open(
        connect_as(&url, &bank).await.unwrap(),
        &StreamSettings::default(),
    )
    .await
    .unwrap();
    treasury::mint(&bank_stream, &bank, a, Vibe::from_whole(10), "grant")
        .await
        .unwrap();

    // Alice pays Bob on her own subject.
    let alice_client = connect_as(&url, &alice).await.unwrap();
    let alice_stream = LedgerStream::open(alice_client.clone(), &StreamSettings::default())
        .await
        .unwrap();
    let pay = EntryBody::Transfer {
        to: b,
        amount: Vibe::from_whole(3),
        memo: String::new(),
    };
    alice_stream
        .append(&alice, Uuid::new_v4(), pay, None)
        .await
        .unwrap();

    // Alice cannot write on Bob's subject: not junk, not a correctly signed entry of hers.
    let junk = tokio::time::timeout(
        REFUSAL_TIMEOUT,
        alice_stream.publish_unchecked(&subject_of(&b), b"junk".to_vec()),
    )
    .await;
    assert!(
        !matches!(junk, Ok(Ok(_))),
        "junk landed on another account's subject"
    );
    assert_eq!(bank_stream.last_sequence_of(&b).await.unwrap(), 0);

    // Nor change the stream: update (to allow purge), purge, delete.
    let jetstream = async_nats::jetstream::new(alice_client);
    let mut config = async_nats::jetstream::stream::Config {
        name: "APN_LEDGER".into(),
        subjects: vec!["apn.v1.ledger.>".into()],
        ..Default::default()
    };
    config.deny_purge = false;
    config.deny_delete = false;
    let update = tokio::time::timeout(REFUSAL_TIMEOUT, jetstream.update_stream(config)).await;
    assert!(!matches!(update, Ok(Ok(_))), "the stream was updated");
    let delete = tokio::time::timeout(REFUSAL_TIMEOUT, jetstream.delete_stream("APN_LEDGER")).await;
    assert!(!matches!(delete, Ok(Ok(_))), "the stream was deleted");

    // The stream is intact, and Alice can still read all of it.
    assert_eq!(bank_stream.last_stream_sequence().await.unwrap(), 2);
    let mut projection = Projection::open_in_memory(&[bank.public_key()]).unwrap();
    catch_up(&alice_stream, &mut projection).await.unwrap();
    assert_eq!(projection.state().balance(&a), Vibe::from_whole(7).micros());
    assert_eq!(projection.state().balance(&b), Vibe::from_whole(3).micros());
}
