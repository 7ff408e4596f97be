//! Issue 13, mesh side: an attacker built from the crate's own identity, envelope and
//! transport (see `common::attacker`) tries what an executor must refuse at admission:
//! an assignment it never bid for, one at another price, a repository "on a shared disk"
//! (`RepoDelivery::LocalPath`) from a peer, an assignment to a node whose disk is full, and
//! a flood of requests holding every slot: each refusal reaches the attacker at once as an
//! `ExecutionFailed`, is counted by reason, and starts nothing. Once a run is admitted, a
//! bundle announcing a chunk count its size does not imply, or past the storage cap, fails
//! the run at its first chunk (counted, nothing allocated by the peer's numbers).
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::actors::executor::GetExecutorStatus;
use apn::actors::node::NodeHandle;
use apn::market::{RepoDelivery, TaskPayload};
use apn::messages::*;
use common::attacker::Attacker;
use common::*;
use uuid::Uuid;

/// A victim that runs SHELL tasks for peers.
async fn victim(dir: &std::path::Path) -> NodeHandle {
    node(shell_config(dir)).await
}

/// An attacker connected to `victim` whose announcement (and Noise key) the victim knows.
async fn announced_attacker(victim: &NodeHandle) -> Attacker {
    let attacker = Attacker::attach(victim).await;
    attacker.announce_to(victim, &[]).await;
    attacker
}

fn payload(repo: RepoDelivery) -> TaskPayload {
    TaskPayload {
        title: "hostile".into(),
        prompt: "echo pwned > pwned".into(),
        executor_profile: "SHELL".into(),
        base_commit: "0".repeat(40),
        repo,
        timeout_s: 30,
    }
}

/// The task the attacker's requests commit to (the repository's delivery is not part of
/// the content hash).
fn any_payload() -> TaskPayload {
    payload(RepoDelivery::Bundle {
        root_commit: "0".repeat(40),
    })
}

/// Assign the bid's task, complete the handshake with the victim's answer, and send one
/// repository chunk announcing a bundle of `bytes` in `total` chunks; returns the reason
/// the run then failed for (the sealed failure detail, opened).
async fn admitted_then_chunk(
    attacker: &mut Attacker,
    victim: &NodeHandle,
    bid: &TaskBid,
    bytes: u64,
    total: u32,
) -> String {
    let (assignment, pending) =
        attacker.assignment_with_handshake(victim, bid.task_id, bid.price, &any_payload());
    attacker.send(&assignment).await;
    let APNMessage::ExecutionStarted(started) = answer(attacker, bid.task_id).await else {
        panic!("the assignment was refused");
    };
    let (mut session, _have) = pending
        .complete(&started.noise_handshake)
        .expect("the victim's answer completes the handshake");
    let data = session.seal(&[0u8; 1000]).unwrap();
    attacker
        .send(&APNMessage::RepoChunk(RepoChunk {
            task_id: bid.task_id,
            index: 0,
            total,
            bytes,
            data,
        }))
        .await;
    let APNMessage::ExecutionFailed(failed) = attacker
        .next(|m| matches!(m, APNMessage::ExecutionFailed(f) if f.task_id == bid.task_id))
        .await
    else {
        unreachable!("filtered to a failure");
    };
    let detail = session
        .open(&failed.detail.expect("a sealed detail"))
        .unwrap();
    let detail: apn::market::FailureDetail =
        apn::messages::codec::decode(&detail, 1 << 16).unwrap();
    detail.error
}

/// The run is over: its slot is free again.
async fn run_ends(victim: &NodeHandle) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while victim
        .executor
        .send(GetExecutorStatus)
        .await
        .unwrap()
        .active
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The victim's first answer to an assignment of `task_id`: its refusal, or its start.
async fn answer(attacker: &mut Attacker, task_id: Uuid) -> APNMessage {
    attacker
        .next(|m| match m {
            APNMessage::ExecutionFailed(f) => f.task_id == task_id,
            APNMessage::ExecutionStarted(s) => s.task_id == task_id,
            _ => false,
        })
        .await
}

fn refusal(message: APNMessage) -> String {
    match message {
        APNMessage::ExecutionFailed(failed) => failed.error,
        other => panic!("the assignment was not refused: {other:?}"),
    }
}

/// Nothing ran: no slot taken, no workspace created.
async fn nothing_started(victim: &NodeHandle) {
    let status = victim.executor.send(GetExecutorStatus).await.unwrap();
    assert_eq!(status.active, 0, "a run was started");
    let workspaces = victim.data_dir.join("workspaces");
    let entries = std::fs::read_dir(&workspaces)
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(entries, 0, "a workspace was created in {workspaces:?}");
}

#[actix_rt::test]
async fn an_unsolicited_assignment_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path()).await;
    let mut attacker = announced_attacker(&victim).await;
    let before = victim.metrics.dropped(DropReason::UnsolicitedAssignment);
    // No request, no bid: the victim owes this task nothing.
    let task_id = Uuid::new_v4();
    let assignment = attacker.assignment(&victim, task_id, Vibe::from_whole(1), &any_payload());
    attacker.send(&assignment).await;
    let error = refusal(answer(&mut attacker, task_id).await);
    assert!(error.contains("no live bid"), "{error}");
    assert_eq!(
        victim.metrics.dropped(DropReason::UnsolicitedAssignment),
        before + 1
    );
    nothing_started(&victim).await;
    victim.shutdown().await;
}

#[actix_rt::test]
async fn an_assignment_at_another_price_or_with_a_local_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path()).await;
    let mut attacker = announced_attacker(&victim).await;
    let repo = git_repo(&[("f", "x\n")]);
    let bid = attacker
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    // The agreed price must be the bid's.
    let cheaper = attacker.assignment(
        &victim,
        bid.task_id,
        Vibe::from_micros(bid.price.micros() - 1),
        &any_payload(),
    );
    attacker.send(&cheaper).await;
    let error = refusal(answer(&mut attacker, bid.task_id).await);
    assert!(error.contains("price"), "{error}");
    assert_eq!(victim.metrics.dropped(DropReason::UnsolicitedAssignment), 1);
    // The right price, but a path on the victim's own disk.
    let local = attacker.assignment(
        &victim,
        bid.task_id,
        bid.price,
        &payload(RepoDelivery::LocalPath(repo.path().display().to_string())),
    );
    attacker.send(&local).await;
    let error = refusal(answer(&mut attacker, bid.task_id).await);
    assert!(error.contains("local path"), "{error}");
    assert_eq!(victim.metrics.dropped(DropReason::LocalPathFromPeer), 1);
    nothing_started(&victim).await;
    assert!(!repo.path().join("pwned").exists());
    // Nothing more comes: no start after the refusal.
    assert!(
        attacker
            .next_within(Duration::from_secs(1), |m| matches!(
                m,
                APNMessage::ExecutionStarted(_)
            ))
            .await
            .is_none()
    );
    victim.shutdown().await;
}

#[actix_rt::test]
async fn an_assignment_whose_task_is_not_the_one_bid_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path()).await;
    let mut attacker = announced_attacker(&victim).await;
    // The request commits to a harmless task; the assignment seals another one.
    let offered = any_payload();
    let bid = attacker.request_bid(Vibe::from_whole(100), &offered).await;
    let mut switched = offered.clone();
    switched.prompt = "cat ~/.ssh/id_ed25519".into();
    let assignment = attacker.assignment(&victim, bid.task_id, bid.price, &switched);
    attacker.send(&assignment).await;
    let error = refusal(answer(&mut attacker, bid.task_id).await);
    assert!(error.contains("not the one this node bid on"), "{error}");
    assert_eq!(victim.metrics.dropped(DropReason::ContentMismatch), 1);
    nothing_started(&victim).await;
    victim.shutdown().await;
}

/// A victim with a 1 GB storage cap whose scratch dirs already hold `filled` bytes.
async fn victim_with_disk(dir: &std::path::Path, filled: u64) -> NodeHandle {
    let mut config = shell_config(dir);
    config.resources.storage_gb = 1;
    let victim = node(config).await;
    fill(&victim, filled);
    victim
}

/// Make the victim's scratch dirs hold `bytes` (a sparse file: its length counts). Written
/// after the start, which clears what a killed process left behind.
fn fill(victim: &NodeHandle, bytes: u64) {
    let bundles = victim.data_dir.join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::File::create(bundles.join("left.bundle"))
        .unwrap()
        .set_len(bytes)
        .unwrap();
}

#[actix_rt::test]
async fn an_assignment_to_a_full_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = victim_with_disk(dir.path(), 0).await;
    let mut attacker = announced_attacker(&victim).await;
    let bid = attacker
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    // The disk fills between the bid and the assignment, which measures it again.
    fill(&victim, 1_000_000_000);
    let assignment = attacker.assignment(&victim, bid.task_id, bid.price, &any_payload());
    attacker.send(&assignment).await;
    let error = refusal(answer(&mut attacker, bid.task_id).await);
    assert!(error.contains("resources.storage_gb"), "{error}");
    assert_eq!(victim.metrics.dropped(DropReason::StorageFull), 1);
    nothing_started(&victim).await;
    victim.shutdown().await;
}

#[actix_rt::test]
async fn a_bundle_past_the_storage_cap_fails_its_run_at_its_first_chunk() {
    let dir = tempfile::tempdir().unwrap();
    // Room for a small bundle, not for one of 1000 bytes.
    let victim = victim_with_disk(dir.path(), 1_000_000_000 - 500).await;
    let mut attacker = announced_attacker(&victim).await;
    let bid = attacker
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    let error = admitted_then_chunk(&mut attacker, &victim, &bid, 1000, 1).await;
    assert!(error.contains("resources.storage_gb"), "{error}");
    run_ends(&victim).await;
    nothing_started(&victim).await;
    victim.shutdown().await;
}

#[actix_rt::test]
async fn a_bundle_announcing_a_huge_chunk_count_fails_its_run_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let victim = victim(dir.path()).await;
    let mut attacker = announced_attacker(&victim).await;
    let bid = attacker
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    // 1000 bytes is one chunk; a peer-chosen u32 once sized a vector of options and
    // aborted the whole process.
    let error = admitted_then_chunk(&mut attacker, &victim, &bid, 1000, u32::MAX).await;
    assert!(error.contains("chunk"), "{error}");
    assert_eq!(victim.metrics.dropped(DropReason::BadChunkCount), 1);
    run_ends(&victim).await;
    nothing_started(&victim).await;
    // The victim is alive and still bids.
    let again = attacker
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    assert_ne!(again.task_id, bid.task_id);
    victim.shutdown().await;
}

#[actix_rt::test]
async fn a_zero_bid_is_refused_and_the_task_goes_to_an_honest_bidder() {
    use apn::actors::distributor::TaskStatus;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut originator = test_config(dir_a.path());
    originator.market.bid_window_ms = 1500;
    let (a, b) = connected_pair(originator, shell_config(dir_b.path())).await;
    let mut attacker = Attacker::attach(&a).await;
    attacker.announce_to(&a, &["SHELL"]).await;
    let repo = git_repo(&[("f", "x\n")]);
    let id = a
        .distributor
        .send(mesh_shell_task(repo.path(), "zero", "echo y >> f", 3))
        .await
        .unwrap()
        .unwrap();
    attacker
        .next(|m| matches!(m, APNMessage::TaskDistributionRequest(r) if r.task_id == id))
        .await;
    // Free work, the best score there is: once it won, held a zero escrow, and failed the task.
    attacker
        .send(&APNMessage::TaskBid(TaskBid {
            task_id: id,
            bidder: attacker.identity.node_id().clone(),
            price: Vibe::ZERO,
            estimated_duration_s: 1,
            capabilities: vec![],
            valid_until: chrono::Utc::now() + chrono::Duration::seconds(30),
            free_slots: None,
        }))
        .await;
    let view = task_final(&a, id, Duration::from_secs(60)).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(
        view.assigned_node.as_deref(),
        Some(b.identity.node_id().as_str())
    );
    assert_eq!(a.metrics.dropped(DropReason::BidBelowMinimum), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn an_escrow_that_cannot_be_held_moves_on_to_the_next_bidder() {
    use apn::actors::distributor::TaskStatus;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut originator = test_config(dir_a.path());
    originator.market.bid_window_ms = 1500;
    // Enough for the honest bid (17 VIBE/h for 10 min: 2.833333), not for the reward.
    originator.economics.initial_balance = Vibe::from_micros(2_900_000);
    let (a, b) = connected_pair(originator, {
        let mut executor = shell_config(dir_b.path());
        executor.economics.compute_rate_per_cpu_hour = Vibe::from_whole(17);
        executor
    })
    .await;
    let mut attacker = Attacker::attach(&a).await;
    attacker.announce_to(&a, &["SHELL"]).await;
    let repo = git_repo(&[("f", "x\n")]);
    let id = a
        .distributor
        .send(mesh_shell_task(repo.path(), "broke", "echo y >> f", 3))
        .await
        .unwrap()
        .unwrap();
    attacker
        .next(|m| matches!(m, APNMessage::TaskDistributionRequest(r) if r.task_id == id))
        .await;
    // The whole reward, "in one second": it ranks first, and the originator cannot hold it.
    attacker
        .send(&APNMessage::TaskBid(TaskBid {
            task_id: id,
            bidder: attacker.identity.node_id().clone(),
            price: Vibe::from_whole(3),
            estimated_duration_s: 1,
            capabilities: vec![],
            valid_until: chrono::Utc::now() + chrono::Duration::seconds(30),
            free_slots: None,
        }))
        .await;
    let view = task_final(&a, id, Duration::from_secs(60)).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    assert_eq!(
        view.assigned_node.as_deref(),
        Some(b.identity.node_id().as_str())
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn one_peer_cannot_hold_every_slot_with_a_stream_of_requests() {
    use apn::actors::distributor::TaskStatus;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut originator = test_config(dir_a.path());
    originator.market.bid_window_ms = 300;
    let mut executor = shell_config(dir_b.path());
    // Two slots, and reservations that last (the bidder's window sets their length).
    executor.resources.max_concurrent_tasks = 2;
    executor.market.bid_window_ms = 20_000;
    let (a, b) = connected_pair(originator, executor).await;
    let mut attacker = Attacker::attach(&b).await;
    // The attacker asks for bids on task after task, each reserving a slot if it can.
    attacker
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    for _ in 0..5 {
        let task_id = Uuid::new_v4();
        attacker
            .send(&APNMessage::TaskDistributionRequest(
                TaskDistributionRequest {
                    task_id,
                    executor_profile: "SHELL".into(),
                    requirements: Default::default(),
                    reward: Vibe::from_whole(100),
                    content_hash: String::new(),
                    bid_deadline: chrono::Utc::now(),
                },
            ))
            .await;
    }
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            b.metrics.dropped(DropReason::ReservationLimit) == 5
        })
        .await,
        "{:?}",
        b.metrics.dropped_by_reason()
    );
    assert!(
        attacker
            .next_within(Duration::from_millis(500), |m| matches!(
                m,
                APNMessage::TaskBid(_)
            ))
            .await
            .is_none(),
        "one reservation per requesting peer"
    );
    // An honest originator still finds the other slot.
    let repo = git_repo(&[("f", "x\n")]);
    let id = a
        .distributor
        .send(mesh_shell_task(repo.path(), "honest", "echo y >> f", 3))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&a, id, Duration::from_secs(60)).await;
    assert_eq!(view.status, TaskStatus::Completed, "{view:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[actix_rt::test]
async fn a_withdrawn_bid_gives_its_slot_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = shell_config(dir.path());
    // Reservations that would last 22 s if nobody withdrew them.
    config.market.bid_window_ms = 20_000;
    let victim = node(config).await;
    let mut originator = Attacker::attach(&victim).await;
    let first = originator
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    // Another bid now would pass this originator's share of one reservation: the originator
    // says the first one lost, and its slot comes back.
    originator
        .send(&APNMessage::TaskCancelled(TaskCancelled {
            task_id: first.task_id,
            reason: "another bid won".into(),
        }))
        .await;
    let second = originator
        .request_bid(Vibe::from_whole(100), &any_payload())
        .await;
    assert_ne!(second.task_id, first.task_id);
    assert_eq!(victim.metrics.dropped(DropReason::ReservationLimit), 0);
    // Someone else's withdrawal of the second bid changes nothing.
    let stranger = Attacker::attach(&victim).await;
    stranger
        .send(&APNMessage::TaskCancelled(TaskCancelled {
            task_id: second.task_id,
            reason: "not mine".into(),
        }))
        .await;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            victim.metrics.dropped(DropReason::Unauthorized) >= 1
        })
        .await
    );
    let refused = attacker_third_bid(&mut originator).await;
    assert!(refused, "the second reservation still holds the share");
    victim.shutdown().await;
}

/// A third request from the same originator gets no bid while its reservation holds.
async fn attacker_third_bid(originator: &mut Attacker) -> bool {
    let task_id = Uuid::new_v4();
    originator
        .send(&APNMessage::TaskDistributionRequest(
            TaskDistributionRequest {
                task_id,
                executor_profile: "SHELL".into(),
                requirements: Default::default(),
                reward: Vibe::from_whole(100),
                content_hash: String::new(),
                bid_deadline: chrono::Utc::now(),
            },
        ))
        .await;
    originator
        .next_within(
            Duration::from_millis(800),
            |m| matches!(m, APNMessage::TaskBid(b) if b.task_id == task_id),
        )
        .await
        .is_none()
}
