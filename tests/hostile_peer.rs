//! A hostile peer built on the project's own libraries (a raw swarm sending signed frames of
//! its choosing) against a real node: lies are refused, counted, and cost the victim nothing.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use actix::Actor;
use apn::actors::distributor::TaskStatus;
use apn::actors::settler::GetBalance;
use apn::messages::*;
use common::attacker::Attacker;
use common::*;
use uuid::Uuid;

#[actix_rt::test]
async fn lies_are_refused_counted_and_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = shell_config(dir.path());
    config.market.bid_window_ms = 1500;
    config.market.requests_per_peer_per_minute = 5;
    let victim = node(config).await;
    let mut attacker = Attacker::attach(&victim).await;
    // The attacker announces a profile it will lie about.
    attacker.announce(&["CODEX"]).await;

    // The victim offers a task for a profile the attacker does not advertise (SHELL runs on
    // no other node), so only lies could win it.
    let repo = git_repo(&[("f", "x\n")]);
    let task = mesh_shell_task(repo.path(), "target", "echo hi", 3);
    let id = victim.distributor.send(task).await.unwrap().unwrap();
    // The attacker reads the request from gossip (or the direct offer) to learn the task id.
    attacker
        .next(|m| matches!(m, APNMessage::TaskDistributionRequest(r) if r.task_id == id))
        .await;
    let unauthorized_before = victim.metrics.dropped(DropReason::Unauthorized);
    let bid = |bidder: apn::identity::NodeId, price: Vibe| {
        APNMessage::TaskBid(TaskBid {
            task_id: id,
            bidder,
            price,
            estimated_duration_s: 1,
            capabilities: vec![],
            valid_until: chrono::Utc::now(),
            free_slots: None,
        })
    };
    // 1. A bid above the reward, for a profile it lacks. 2. A bid in another node's name.
    attacker
        .send(&bid(
            attacker.identity.node_id().clone(),
            Vibe::from_whole(30),
        ))
        .await;
    attacker
        .send(&bid(victim.identity.node_id().clone(), Vibe::from_whole(1)))
        .await;
    // 3. A result for a task it was never assigned.
    let fake_result = APNMessage::ExecutionCompleted(ExecutionCompleted {
        task_id: id,
        execution_id: Uuid::new_v4(),
        result_hash: "00".repeat(32),
        result_signature: serde_bytes::ByteBuf::from(vec![0u8; 64]),
        result: Sealed {
            nonce: 0,
            ciphertext: serde_bytes::ByteBuf::from(vec![1u8; 32]),
        },
        usage: ComputeUsage::default(),
        delivery: ResultDelivery::Inline,
    });
    attacker.send(&fake_result).await;
    // 4. A payment "from" the victim to the attacker, signed by the attacker.
    let forged = VibeTransaction::signed_with_id(
        &attacker.identity,
        Uuid::new_v4(),
        attacker.identity.public_key(),
        Vibe::from_whole(50),
        TransactionReason::TaskExecution,
        Some(id),
        chrono::Utc::now(),
    );
    let mut claimed = forged.clone();
    claimed.from = serde_bytes::ByteBuf::from(victim.identity.public_key().to_vec());
    attacker.send(&APNMessage::VibeTransaction(claimed)).await;
    // 5. A flood of task requests: past the per-peer limit they are dropped.
    for _ in 0..20 {
        let request = APNMessage::TaskDistributionRequest(TaskDistributionRequest {
            task_id: Uuid::new_v4(),
            executor_profile: "SHELL".into(),
            requirements: Default::default(),
            reward: Vibe::from_whole(100),
            content_hash: String::new(),
            bid_deadline: chrono::Utc::now(),
        });
        attacker.send(&request).await;
    }

    let view = task_final(&victim, id, EVENT_TIMEOUT).await;
    // Nobody honest bid: the task fails, the liar got nothing.
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    assert_eq!(view.assigned_node, None);
    assert_eq!(
        victim
            .settler
            .send(GetBalance)
            .await
            .unwrap()
            .unwrap()
            .balance,
        Vibe::from_whole(1000)
    );
    assert_eq!(
        victim
            .settler
            .send(GetBalance)
            .await
            .unwrap()
            .unwrap()
            .escrowed,
        Vibe::ZERO
    );
    // Each lie was counted: the impersonating bid, the unassigned result, the bad bid.
    assert!(
        victim.metrics.dropped(DropReason::Unauthorized) >= unauthorized_before + 3,
        "{:?}",
        victim.metrics.dropped_by_reason()
    );
    assert!(
        victim.metrics.dropped(DropReason::RateLimited) >= 10,
        "{:?}",
        victim.metrics.dropped_by_reason()
    );
    attacker.swarm.shutdown(Duration::from_secs(2)).await;
    victim.shutdown().await;
}

#[actix_rt::test]
async fn a_replayed_payment_is_credited_once() {
    let dir = tempfile::tempdir().unwrap();
    let victim = node(test_config(dir.path())).await;
    let mut attacker = Attacker::attach(&victim).await;
    let victim_peer = victim.identity.peer_id();
    // The victim ran a task for the attacker: its payments are accepted (a stranger's are
    // not: see hostile_peer_ledger.rs).
    victim
        .settler
        .send(apn::actors::settler::RecordCounterparty {
            peer: attacker.identity.public_key(),
        })
        .await
        .unwrap();
    // A real payment, attacker to victim, then the same frame again, then the same payment
    // in a fresh envelope (which passes the replay cache and must meet the ledger's dedupe).
    let payment = VibeTransaction::signed_with_id(
        &attacker.identity,
        Uuid::new_v4(),
        victim.identity.public_key(),
        Vibe::from_whole(2),
        TransactionReason::BandwidthShare,
        None,
        chrono::Utc::now(),
    );
    let message = APNMessage::VibeTransaction(payment.clone());
    let first = attacker::frame(&attacker.identity, &victim_peer, &message);
    let replayed_before = victim.metrics.dropped(DropReason::Replayed);
    for bytes in [
        first.clone(),
        first,
        attacker::frame(&attacker.identity, &victim_peer, &message),
    ] {
        attacker
            .swarm
            .send_direct(victim_peer, bytes)
            .await
            .unwrap();
    }
    // The victim answers each payment it accepts (new or already recorded) with a receipt:
    // two receipts mean both distinct envelopes were processed.
    for _ in 0..2 {
        attacker
            .next(|m| matches!(m, APNMessage::PaymentReceipt(r) if r.tx_id == payment.tx_id))
            .await;
    }
    assert_eq!(
        victim.metrics.dropped(DropReason::Replayed),
        replayed_before + 1,
        "the byte-identical frame is dropped as a replay"
    );
    let summary = victim.settler.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(summary.balance, Vibe::from_whole(1002), "credited once");
    attacker.swarm.shutdown(Duration::from_secs(2)).await;
    victim.shutdown().await;
}

#[actix_rt::test]
async fn an_executors_log_flood_is_capped_at_the_originator() {
    use apn::actors::relay::{
        ExecutionEvent, ExecutionRelay, GetExecutionLogs, LOG_LINES_PER_TASK_MAX, RecordUpdate,
    };
    use apn::market::LogLine;
    let dir = tempfile::tempdir().unwrap();
    let relay = ExecutionRelay::with_store(None, &dir.path().join("logs.sqlite3"))
        .unwrap()
        .start();
    let task_id = Uuid::new_v4();
    let flood = LOG_LINES_PER_TASK_MAX + 2_500;
    for n in 0..flood {
        relay.do_send(RecordUpdate(ExecutionEvent::Log {
            task_id,
            line: LogLine::new("stdout", format!("line {n}"), n as i64),
            task_attempt_id: None,
        }));
    }
    let stored = relay.send(GetExecutionLogs(task_id)).await.unwrap();
    assert_eq!(
        stored.len(),
        LOG_LINES_PER_TASK_MAX,
        "the store keeps at most the cap"
    );
    assert_eq!(
        stored[0].line, "line 0",
        "the first lines are kept, the flood's tail is cut"
    );
}

/// Results the originator must refuse, produced by a hostile agent on an honest executor:
/// a symlink out of the tree, and a diff far over the size limit. Neither is paid.
#[actix_rt::test]
async fn unsafe_or_oversized_results_are_refused_and_not_paid() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut originator = test_config(dir_a.path());
    originator.market.bid_window_ms = 300;
    originator.market.reassignments_max = 0;
    // The executor's smallest result cap: a diff of at most 1 MiB.
    let mut executor = shell_config(dir_b.path());
    executor.executor.result_bytes_max = apn::config::RESULT_BYTES_MAX_MIN;
    let (a, b) = connected_pair(originator, executor).await;
    let repo = git_repo(&[("f", "x\n")]);
    for (prompt, expected) in [
        ("ln -s /etc/passwd leak; echo y >> f", "symbolic link"),
        (
            "head -c 1200000 /dev/urandom | base64 > big.txt",
            "byte limit",
        ),
    ] {
        let id = a
            .distributor
            .send(mesh_shell_task(
                repo.path(),
                &format!("hostile: {prompt}"),
                prompt,
                3,
            ))
            .await
            .unwrap()
            .unwrap();
        let view = task_final(&a, id, Duration::from_secs(60)).await;
        assert_eq!(view.status, TaskStatus::Failed, "{prompt}: {view:?}");
        let error = view.error.clone().unwrap_or_default();
        assert!(error.contains(expected), "{prompt}: {error}");
        assert_eq!(view.paid, None);
    }
    for (node, name) in [(&a, "originator"), (&b, "executor")] {
        let summary = node.settler.send(GetBalance).await.unwrap().unwrap();
        assert_eq!(summary.balance, Vibe::from_whole(1000), "{name} balance");
        assert_eq!(summary.escrowed, Vibe::ZERO, "{name} escrow");
    }
    assert!(!repo.path().join("leak").exists() && !repo.path().join("big.txt").exists());
    a.shutdown().await;
    b.shutdown().await;
}
