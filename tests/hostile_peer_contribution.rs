//! Issue 16, contribution records: a hostile peer over real libp2p sends forged and
//! unsolicited `BandwidthContribution` and `ComputeContribution` records (signed by the
//! wrong node, naming no payment or task between it and the victim, claiming absurd
//! amounts). Each is dropped and counted as `bad_contribution`; none credits the victim,
//! none makes a panel entry, and the victim keeps serving.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use apn::actors::node::NodeHandle;
use apn::actors::settler::GetBalance;
use apn::messages::*;
use apn::protocol::panel::GetTransactions;
use common::attacker::Attacker;
use common::*;
use uuid::Uuid;

/// The victim's panel entries of `kind`.
async fn entries(victim: &NodeHandle, kind: &str) -> usize {
    victim
        .panel_hub
        .send(GetTransactions {
            limit: 1000,
            before: None,
            kind: Some(kind.into()),
        })
        .await
        .unwrap()
        .unwrap()
        .len()
}

fn bandwidth(
    contributor: &apn::identity::NodeId,
    beneficiary: &apn::identity::NodeId,
    bytes: u64,
    amount: Vibe,
) -> APNMessage {
    let now = chrono::Utc::now();
    APNMessage::BandwidthContribution(BandwidthContribution {
        contributor: contributor.clone(),
        beneficiary: beneficiary.clone(),
        purpose: BandwidthPurpose::LogStream,
        bytes,
        period_start: now - chrono::Duration::seconds(5),
        period_end: now,
        amount,
        payment_id: Some(Uuid::new_v4()),
    })
}

fn compute(
    contributor: &apn::identity::NodeId,
    cpu_seconds: f64,
    amount: Vibe,
    escrow_id: Option<Uuid>,
) -> APNMessage {
    APNMessage::ComputeContribution(ComputeContribution {
        task_id: Uuid::new_v4(),
        contributor: contributor.clone(),
        usage: ComputeUsage {
            cpu_seconds,
            memory_gb_seconds: 1.0,
            wall_seconds: 10.0,
        },
        amount,
        escrow_id,
    })
}

#[actix_rt::test]
async fn forged_and_unsolicited_contribution_records_are_dropped_counted_and_never_credited() {
    let dir = tempfile::tempdir().unwrap();
    let victim = node(test_config(dir.path())).await;
    let attacker = Attacker::attach(&victim).await;
    let before = victim.settler.send(GetBalance).await.unwrap().unwrap();
    let (own, evil, bystander) = (
        victim.identity.node_id().clone(),
        attacker.identity.node_id().clone(),
        apn::identity::Identity::ephemeral().node_id().clone(),
    );
    let forged = [
        // Wrong signer: a record only the bystander (the payer) may send.
        bandwidth(&own, &bystander, 1_000_000, Vibe::from_whole(1)),
        // Unsolicited: the attacker never paid the victim anything.
        bandwidth(&own, &evil, 1_000_000, Vibe::from_whole(1)),
        // Absurd: every byte there is, for the most VIBE an amount may hold.
        bandwidth(&own, &evil, u64::MAX, apn::messages::vibe::VIBE_MAX),
        // Wrong signer: claims the victim's own compute.
        compute(&own, 10.0, Vibe::from_whole(5), Some(Uuid::new_v4())),
        // Unknown task and escrow.
        compute(&evil, 10.0, Vibe::from_whole(5), Some(Uuid::new_v4())),
        // Absurd usage and amount.
        compute(
            &evil,
            1e300,
            apn::messages::vibe::VIBE_MAX,
            Some(Uuid::new_v4()),
        ),
        // Names no escrow at all.
        compute(&evil, 10.0, Vibe::from_whole(5), None),
    ];
    for record in &forged {
        attacker.send(record).await;
    }
    let expected = forged.len() as u64;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            victim.metrics.dropped(DropReason::BadContribution) >= expected
        })
        .await,
        "forged records not all dropped: {:?}",
        victim.metrics.dropped_by_reason()
    );
    assert_eq!(
        victim.metrics.dropped(DropReason::BadContribution),
        expected,
        "{:?}",
        victim.metrics.dropped_by_reason()
    );
    let contributions = victim
        .accountant
        .send(apn::actors::accountant::GetContributions)
        .await
        .unwrap();
    assert!(contributions.is_empty(), "{contributions:?}");
    assert_eq!(entries(&victim, "bandwidth_contributed").await, 0);
    assert_eq!(entries(&victim, "compute_contributed").await, 0);
    assert_eq!(entries(&victim, "vibe_earned").await, 0);
    let after = victim.settler.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(after, before, "a record credited the victim");
    // The victim still serves its peers.
    assert!(!peers(&victim).await.is_empty());
    attacker
        .swarm
        .shutdown(std::time::Duration::from_secs(2))
        .await;
    victim.shutdown().await;
}
