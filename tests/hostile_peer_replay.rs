//! Issue 13, replay to another recipient: a message signed for one node, replayed to
//! another (by the relay, or by the node it was for), is refused and counted as
//! `wrong_recipient`, over libp2p and over a real nats-server; so is a broadcast sent as a
//! direct message. The same channel carries a message signed for the victim, so the
//! refusals are not a dead line.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::messages::*;
use common::attacker::Attacker;
use common::*;

/// How long a refused frame gets to (not) produce an answer.
const QUIET: Duration = Duration::from_millis(1500);

fn ping(nonce: u64) -> APNMessage {
    APNMessage::PingRequest(PingRequest { nonce })
}

fn is_reply(nonce: u64) -> impl Fn(&APNMessage) -> bool {
    move |m| matches!(m, APNMessage::PingReply(r) if r.nonce == nonce)
}

fn sealed(attacker: &Attacker, to: &Audience, message: &APNMessage) -> Vec<u8> {
    Envelope::seal(
        &attacker.identity,
        to,
        message,
        chrono::Utc::now().timestamp_millis(),
    )
    .expect("a ping encodes")
}

#[actix_rt::test]
async fn a_message_signed_for_another_node_or_topic_is_refused() {
    let relay = nats();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut victim_config = test_config(dirs.0.path());
    victim_config.relay.url = relay.url();
    let victim = node(victim_config).await;
    let bystander = node(test_config(dirs.1.path())).await;
    let mut attacker = Attacker::attach(&victim).await;
    let victim_peer = victim.identity.peer_id();
    let before = victim.metrics.dropped(DropReason::WrongRecipient);

    // Control: a ping signed for the victim is answered.
    attacker
        .swarm
        .send_direct(
            victim_peer,
            sealed(&attacker, &Audience::peer(&victim_peer), &ping(1)),
        )
        .await
        .unwrap();
    attacker.next(is_reply(1)).await;

    // Signed for the bystander, replayed to the victim directly.
    let for_bystander = Audience::peer(&bystander.identity.peer_id());
    attacker
        .swarm
        .send_direct(victim_peer, sealed(&attacker, &for_bystander, &ping(2)))
        .await
        .unwrap();
    // A broadcast envelope (tasks topic) sent as a direct message.
    attacker
        .swarm
        .send_direct(
            victim_peer,
            sealed(&attacker, &Audience::Topic(Topic::Tasks), &ping(3)),
        )
        .await
        .unwrap();
    // Control on the relay path: a ping signed for the victim, published until the
    // victim's relay subscription is up and it answers.
    let nats_client = async_nats::connect(relay.url()).await.unwrap();
    let subject = apn::mesh::relay::node_subject(&victim_peer);
    let mut answered = false;
    for nonce in 100..120 {
        let frame = sealed(&attacker, &Audience::peer(&victim_peer), &ping(nonce));
        nats_client
            .publish(subject.clone(), frame.into())
            .await
            .unwrap();
        if attacker
            .next_within(Duration::from_millis(500), is_reply(nonce))
            .await
            .is_some()
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "the victim never answered through the relay");
    // Signed for the bystander, replayed to the victim through the relay.
    nats_client
        .publish(
            apn::mesh::relay::node_subject(&victim_peer),
            sealed(&attacker, &for_bystander, &ping(4)).into(),
        )
        .await
        .unwrap();
    nats_client.flush().await.unwrap();

    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            victim.metrics.dropped(DropReason::WrongRecipient) >= before + 3
        })
        .await,
        "refusals not counted: {:?}",
        victim.metrics.dropped_by_reason()
    );
    for nonce in [2, 3, 4] {
        assert!(
            attacker.next_within(QUIET, is_reply(nonce)).await.is_none(),
            "the victim answered ping {nonce}, which was not signed for it"
        );
    }
    // The victim still answers what is signed for it.
    attacker
        .swarm
        .send_direct(
            victim_peer,
            sealed(&attacker, &Audience::peer(&victim_peer), &ping(5)),
        )
        .await
        .unwrap();
    attacker.next(is_reply(5)).await;
    victim.shutdown().await;
    bystander.shutdown().await;
}
