//! Issue 13, discovery and gossip: a hostile peer cannot make a node dial addresses that a
//! third party reported (Kademlia lookups would), and junk it publishes on gossipsub stops at
//! the first honest node instead of being forwarded through the mesh.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::messages::*;
use common::attacker::Attacker;
use common::*;
use futures::StreamExt;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, StreamProtocol, allow_block_list, kad, noise, tcp, yamux};

/// How long the trap listens for a dial that must never come. Kademlia's automatic
/// bootstrap starts half a second after the liar enters the routing table and dials the
/// lookup's answers at once, so an unfixed node dials well within this.
const NO_DIAL_WINDOW: Duration = Duration::from_secs(5);

/// The liar's protocols: Kademlia, and a block list so that its own lookups never dial the
/// trap (only the victim may).
#[derive(NetworkBehaviour)]
struct Liar {
    kademlia: kad::Behaviour<kad::store::MemoryStore>,
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
}

/// A peer that speaks only Kademlia (on the node's protocol name) and answers every lookup
/// with `claimed` at `trap`: an address it made up for a peer that never announced it.
fn spawn_kademlia_liar(victim: Multiaddr, claimed: PeerId, trap: Multiaddr) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("a tcp transport")
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let mut kademlia = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(StreamProtocol::new("/apn/kad/1")),
            );
            kademlia.set_mode(Some(kad::Mode::Server));
            let mut blocked = allow_block_list::Behaviour::default();
            blocked.block_peer(claimed);
            Liar { kademlia, blocked }
        })
        .expect("a kademlia behaviour")
        .build();
    swarm.behaviour_mut().kademlia.add_address(&claimed, trap);
    swarm.dial(victim).expect("the liar dials the victim");
    tokio::spawn(async move {
        loop {
            let _ = swarm.select_next_some().await;
        }
    });
}

#[actix_rt::test]
async fn a_node_never_dials_addresses_a_third_party_reported() {
    let dir = tempfile::tempdir().unwrap();
    let victim = node(test_config(dir.path())).await;
    let trap_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_port = trap_listener.local_addr().unwrap().port();
    let trap: Multiaddr = format!("/ip4/127.0.0.1/tcp/{trap_port}").parse().unwrap();
    spawn_kademlia_liar(
        victim.dial_address().expect("the victim listens"),
        PeerId::random(),
        trap,
    );
    let dialled = tokio::time::timeout(NO_DIAL_WINDOW, trap_listener.accept()).await;
    assert!(
        dialled.is_err(),
        "the node dialled an address only a third party had reported: {dialled:?}"
    );
    victim.shutdown().await;
}

#[actix_rt::test]
async fn junk_published_on_gossip_is_not_forwarded() {
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (forwarder, observer) =
        connected_pair(test_config(first.path()), test_config(second.path())).await;
    let attacker = Attacker::attach(&forwarder).await;
    let attacker_peer = attacker.identity.peer_id().to_string();
    let announcement = attacker.announcement(&["SHELL"]);
    // Until the observer has heard the attacker's (valid) announcement through the
    // forwarder, publish junk before it on the same path: once the valid one arrives, the
    // junk before it would have arrived too had it been forwarded.
    let heard = wait_until(EVENT_TIMEOUT, || async {
        let junk = vec![0xAB; 64 + rand_suffix()];
        let _ = attacker.swarm.publish(Topic::Tasks, junk).await;
        let signed = Envelope::seal(
            &attacker.identity,
            &Audience::Topic(Topic::Announce),
            &announcement,
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
        let _ = attacker.swarm.publish(Topic::Announce, signed).await;
        has_peer(&observer, &attacker_peer, |p| p.announced).await
    })
    .await;
    assert!(
        heard,
        "the attacker's valid announcement never crossed the mesh"
    );
    assert!(
        forwarder.metrics.dropped(DropReason::Malformed) > 0,
        "the forwarder never saw the junk, so the test proved nothing"
    );
    assert_eq!(
        observer.metrics.dropped(DropReason::Malformed),
        0,
        "junk was forwarded to a node that never talked to the attacker"
    );
    assert!(
        !has_peer(&observer, &attacker_peer, |p| p.connected).await,
        "the observer connected to the attacker directly, so the test proved nothing"
    );
    forwarder.shutdown().await;
    observer.shutdown().await;
}

/// A varying length so gossipsub's content-addressed message ids differ each round.
fn rand_suffix() -> usize {
    (uuid::Uuid::new_v4().as_u128() % 64) as usize
}
