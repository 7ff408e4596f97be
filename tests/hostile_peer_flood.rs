//! Issue 13, memory and CPU: a peer flooding junk frames is cut off by its frame budget
//! before any signature is checked: the excess is counted as `rate_limited`, only the
//! budget's worth reaches signature verification, and the node still answers.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use apn::messages::*;
use common::attacker::Attacker;
use common::*;

/// Junk frames the attacker sends.
const FLOOD_FRAMES: u64 = 1500;
/// The victim's budget per peer per second (bursts of two seconds' worth).
const FRAMES_PER_SECOND: u32 = 50;

#[actix_rt::test]
async fn a_junk_flood_is_dropped_before_signature_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.node.frames_per_peer_per_second = FRAMES_PER_SECOND;
    let victim = node(config).await;
    let mut attacker = Attacker::attach(&victim).await;
    let victim_peer = victim.identity.peer_id();
    // Correctly shaped envelopes with a broken signature: verifying each costs the victim
    // an Ed25519 check, which is what the flood is for.
    let mut envelope = Envelope::sign(
        &attacker.identity,
        &Audience::peer(&victim_peer),
        &APNMessage::PingRequest(PingRequest { nonce: 1 }),
        chrono::Utc::now().timestamp_millis(),
    )
    .unwrap();
    envelope.signature[0] ^= 0x01;
    let junk = envelope.encode().unwrap();
    let (bad_before, limited_before) = (
        victim.metrics.dropped(DropReason::BadSignature),
        victim.metrics.dropped(DropReason::RateLimited),
    );
    let started = std::time::Instant::now();
    for _ in 0..FLOOD_FRAMES {
        let _ = attacker.swarm.send_direct(victim_peer, junk.clone()).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            victim.metrics.dropped(DropReason::BadSignature) - bad_before
                + victim.metrics.dropped(DropReason::RateLimited)
                - limited_before
                >= FLOOD_FRAMES
        })
        .await,
        "the flood was not all accounted for: {:?}",
        victim.metrics.dropped_by_reason()
    );
    let verified = victim.metrics.dropped(DropReason::BadSignature) - bad_before;
    // At most the burst plus what the rate earned while the flood lasted (and slack).
    let budget = (f64::from(FRAMES_PER_SECOND) * (2.0 + seconds + 1.0)) as u64;
    assert!(
        verified <= budget,
        "{verified} junk frames reached signature checks in {seconds:.1} s (budget {budget})"
    );
    assert!(verified < FLOOD_FRAMES, "nothing was cut off");
    // Once the budget refills, the attacker's honest pings are answered again: ping (a fresh
    // nonce each time, four a second, well inside the budget) until one is answered.
    const FIRST_PING: u64 = 1_000;
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    for nonce in FIRST_PING.. {
        attacker
            .send(&APNMessage::PingRequest(PingRequest { nonce }))
            .await;
        let reply = attacker
            .next_within(
                std::time::Duration::from_millis(250),
                |m| matches!(m, APNMessage::PingReply(r) if r.nonce >= FIRST_PING),
            )
            .await;
        if reply.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim never answered an honest ping after the flood"
        );
    }
    victim.shutdown().await;
}

/// Peers the victim's table holds in the Sybil test.
const PEERS_MAX: usize = 16;

#[actix_rt::test]
async fn fresh_keys_cannot_fill_the_peer_table_against_known_peers_or_newcomers() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut config = test_config(dirs[0].path());
    config.node.peers_max = PEERS_MAX;
    let (victim, known) = connected_pair(config, test_config(dirs[1].path())).await;
    let attacker = Attacker::attach(&victim).await;
    let victim_peer = victim.identity.peer_id();
    // Three times the table's size in fresh keys, each signing one ping, over one connection.
    for nonce in 0..(PEERS_MAX as u64 * 3) {
        let sybil = apn::identity::Identity::ephemeral();
        let frame = Envelope::seal(
            &sybil,
            &Audience::peer(&victim_peer),
            &APNMessage::PingRequest(PingRequest { nonce }),
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
        attacker
            .swarm
            .send_direct(victim_peer, frame)
            .await
            .unwrap();
    }
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            peers(&victim).await.len() >= PEERS_MAX
        })
        .await,
        "the flood never filled the table"
    );
    // The known peer is still there, and a newcomer still gets in.
    assert!(
        knows_all(&victim, &[&known]).await,
        "a known peer was dropped"
    );
    let mut newcomer_config = test_config(dirs[2].path());
    newcomer_config.node.bootstrap = vec![victim.dial_address().unwrap().to_string()];
    let newcomer = node(newcomer_config).await;
    let only_newcomer = [&newcomer];
    assert!(
        wait_until(EVENT_TIMEOUT, || knows_all(&victim, &only_newcomer)).await,
        "a newcomer could not join a table full of fresh keys"
    );
    assert!(peers(&victim).await.len() <= PEERS_MAX);
    assert!(
        knows_all(&victim, &[&known]).await,
        "a known peer was dropped"
    );
    for node in [victim, known, newcomer] {
        node.shutdown().await;
    }
}
