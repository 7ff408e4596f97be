//! Issue 13, ledger side: a peer's payment over real libp2p can neither take an id this
//! node needs for its own escrow release or refund, nor overflow a balance, nor credit this
//! node out of nowhere (a payer with no task or bandwidth relationship). Each refusal is
//! counted, the victim's balance and escrow stay whole, and it still restarts.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::actors::node::NodeHandle;
use apn::actors::settler::{GetBalance, HoldEscrow, RefundEscrow, ReleaseEscrow};
use apn::ledger::rules::settlement_id;
use apn::messages::*;
use common::attacker::Attacker;
use common::*;
use uuid::Uuid;

async fn hold(victim: &NodeHandle, escrow: Uuid, amount: Vibe) {
    victim
        .settler
        .send(HoldEscrow {
            transfer_id: escrow,
            task_id: escrow,
            amount,
            payee: None,
            deadline: chrono::Utc::now() + chrono::Duration::hours(1),
        })
        .await
        .unwrap()
        .expect("escrow held");
}

/// A 1 µVIBE payment from the attacker to the victim with the given id.
fn squat(attacker: &Attacker, victim: &NodeHandle, tx_id: Uuid) -> APNMessage {
    APNMessage::VibeTransaction(VibeTransaction::signed_with_id(
        &attacker.identity,
        tx_id,
        victim.identity.public_key(),
        Vibe::from_micros(1),
        TransactionReason::BandwidthShare,
        None,
        chrono::Utc::now(),
    ))
}

#[actix_rt::test]
async fn squatted_refund_and_release_ids_cannot_lock_an_escrow_or_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let victim = node(config.clone()).await;
    let mut attacker = Attacker::attach(&victim).await;
    let (refunded, released, left_open) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for escrow in [refunded, released, left_open] {
        hold(&victim, escrow, Vibe::from_whole(10)).await;
    }
    // The ids the victim will need to settle them, taken first by the attacker's payments
    // (an executor learns an escrow id from its TaskAssigned).
    let squatted = [
        settlement_id(&refunded, "refund"),
        settlement_id(&released, "release"),
        settlement_id(&left_open, "refund"),
    ];
    for tx_id in squatted {
        attacker.send(&squat(&attacker, &victim, tx_id)).await;
    }
    // Let the victim process them (a receipt comes back for each payment it records).
    for tx_id in squatted {
        let _ = attacker
            .next_within(
                Duration::from_secs(3),
                |m| matches!(m, APNMessage::PaymentReceipt(r) if r.tx_id == tx_id),
            )
            .await;
    }
    victim
        .settler
        .send(RefundEscrow { task_id: refunded })
        .await
        .unwrap()
        .expect("the refund is not blocked by a peer's payment");
    victim
        .settler
        .send(ReleaseEscrow {
            task_id: released,
            payee: [7u8; 32],
            amount: Vibe::from_whole(10),
        })
        .await
        .unwrap()
        .expect("the release is not blocked by a peer's payment");
    // A restart refunds what was left open, instead of failing to start.
    attacker.swarm.shutdown(Duration::from_secs(2)).await;
    victim.shutdown().await;
    let restarted = match apn::actors::node::start_node(config).await {
        Ok(handle) => handle,
        Err(e) => panic!("the node cannot restart: {e}"),
    };
    let summary = restarted.settler.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(summary.escrowed, Vibe::ZERO);
    // 1000 minted, 10 paid out by the release; at most the attacker's 3 µVIBE on top.
    assert!(
        summary.balance >= Vibe::from_whole(990)
            && summary.balance <= Vibe::from_micros(990_000_003),
        "{summary:?}"
    );
    restarted.shutdown().await;
}

/// A payment of `amount` from `payer` to the victim, with a fresh id.
fn payment(payer: &Attacker, victim: &NodeHandle, amount: Vibe) -> VibeTransaction {
    VibeTransaction::new_signed(
        &payer.identity,
        victim.identity.public_key(),
        amount,
        TransactionReason::BandwidthShare,
        None,
    )
}

async fn receipt_for(attacker: &mut Attacker, tx_id: Uuid, within: Duration) -> bool {
    attacker
        .next_within(
            within,
            |m| matches!(m, APNMessage::PaymentReceipt(r) if r.tx_id == tx_id),
        )
        .await
        .is_some()
}

async fn balance(victim: &NodeHandle) -> Vibe {
    victim
        .settler
        .send(GetBalance)
        .await
        .unwrap()
        .expect("the balance stays readable")
        .balance
}

#[actix_rt::test]
async fn unsolicited_and_overflowing_payments_are_refused_and_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = shell_config(dir.path());
    // As rich as a node can be told to start: a few large credits reach i64::MAX µVIBE.
    config.economics.initial_balance = apn::messages::vibe::VIBE_MAX;
    let victim = node(config).await;
    let start = balance(&victim).await;

    // A stranger, with no task of its own on the victim, pays it.
    let mut stranger = Attacker::attach(&victim).await;
    let gift = payment(&stranger, &victim, Vibe::from_whole(5));
    stranger
        .send(&APNMessage::VibeTransaction(gift.clone()))
        .await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            victim.metrics.dropped(DropReason::UnsolicitedPayment) == 1
        })
        .await,
        "the unsolicited payment was not refused: {:?}",
        victim.metrics.dropped_by_reason()
    );
    assert!(!receipt_for(&mut stranger, gift.tx_id, Duration::from_millis(500)).await);
    assert_eq!(balance(&victim).await, start);

    // A customer: the victim admitted its task, so its payments count, until one would
    // overflow the victim's balance.
    let mut customer = Attacker::attach(&victim).await;
    customer.announce_to(&victim, &[]).await;
    let task = apn::market::TaskPayload {
        title: "customer".into(),
        prompt: "true".into(),
        executor_profile: "SHELL".into(),
        base_commit: "0".repeat(40),
        repo: apn::market::RepoDelivery::Bundle {
            root_commit: "0".repeat(40),
        },
        timeout_s: 30,
    };
    let bid = customer.request_bid(Vibe::from_whole(100), &task).await;
    let assignment = customer.assignment(&victim, bid.task_id, bid.price, &task);
    customer.send(&assignment).await;
    customer
        .next(|m| matches!(m, APNMessage::ExecutionStarted(s) if s.task_id == bid.task_id))
        .await;
    let most = apn::messages::vibe::VIBE_MAX;
    for _ in 0..8 {
        let paid = payment(&customer, &victim, most);
        customer
            .send(&APNMessage::VibeTransaction(paid.clone()))
            .await;
        assert!(receipt_for(&mut customer, paid.tx_id, EVENT_TIMEOUT).await);
    }
    let rich = balance(&victim).await;
    assert_eq!(rich.micros(), start.micros() + 8 * most.micros());
    let overflowing = payment(&customer, &victim, most);
    customer
        .send(&APNMessage::VibeTransaction(overflowing.clone()))
        .await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            victim.metrics.dropped(DropReason::PaymentOverflow) == 1
        })
        .await,
        "the overflowing payment was not refused: {:?}",
        victim.metrics.dropped_by_reason()
    );
    assert!(!receipt_for(&mut customer, overflowing.tx_id, Duration::from_millis(500)).await);
    assert_eq!(balance(&victim).await, rich, "balance unchanged");
    victim.shutdown().await;
}
