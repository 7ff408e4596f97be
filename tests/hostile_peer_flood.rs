//! Issue 13, memory and CPU: a peer flooding junk frames is cut off by its frame budget
//! before any signature is checked: the excess is counted as `rate_limited`, only the
//! budget's worth reaches signature verification, and the node still answers.

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
    // Once the budget refills, the attacker's honest ping is answered again.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    attacker
        .swarm
        .send_direct(
            victim_peer,
            Envelope::seal(
                &attacker.identity,
                &Audience::peer(&victim_peer),
                &APNMessage::PingRequest(PingRequest { nonce: 7 }),
                chrono::Utc::now().timestamp_millis(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    attacker
        .next(|m| matches!(m, APNMessage::PingReply(r) if r.nonce == 7))
        .await;
    victim.shutdown().await;
}
