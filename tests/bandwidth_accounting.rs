//! Bytes sent between two real nodes show up in both nodes' bandwidth totals, within a few
//! percent of what the test sent. (CPU metering is tested in tests/agent_process.rs.)
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use apn::actors::accountant::GetResources;
use apn::actors::peer_manager::SendTo;
use apn::messages::{APNMessage, RepoChunk, Sealed};
use common::*;
use uuid::Uuid;

const MESSAGES: usize = 40;

/// What `node`'s accountant counted for `peer`.
async fn peer_bytes(
    node: &apn::actors::node::NodeHandle,
    peer: &str,
) -> apn::actors::accountant::PeerBytes {
    node.accountant
        .send(GetResources)
        .await
        .expect("accountant alive")
        .peers
        .get(peer)
        .copied()
        .unwrap_or_default()
}
const PAYLOAD_BYTES: usize = 100_000;

#[actix_rt::test]
async fn both_sides_account_the_bytes_sent() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (sender, receiver) =
        connected_pair(test_config(dirs[0].path()), test_config(dirs[1].path())).await;
    let (receiver_peer, sender_peer) = (
        receiver.identity.peer_id().to_string(),
        sender.identity.peer_id().to_string(),
    );
    let before_out = peer_bytes(&sender, &receiver_peer).await.bytes_out;
    let before_in = peer_bytes(&receiver, &sender_peer).await.bytes_in;
    for index in 0..MESSAGES {
        let message = APNMessage::RepoChunk(RepoChunk {
            task_id: Uuid::new_v4(),
            index: index as u32,
            total: MESSAGES as u32,
            data: Sealed {
                nonce: index as u64,
                ciphertext: serde_bytes::ByteBuf::from(vec![0x5a; PAYLOAD_BYTES]),
            },
        });
        sender
            .peer_manager
            .send(SendTo {
                peer: receiver.identity.peer_id(),
                message,
            })
            .await
            .unwrap()
            .unwrap();
    }
    let sent = (MESSAGES * PAYLOAD_BYTES) as f64;
    let within = |measured: u64| ((measured as f64 - sent) / sent).abs() < 0.05;
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            within(
                peer_bytes(&sender, &receiver_peer)
                    .await
                    .bytes_out
                    .saturating_sub(before_out),
            )
        })
        .await,
        "sender's account of bytes out is off: {:?}",
        sender.accountant.send(GetResources).await.unwrap().peers
    );
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            within(
                peer_bytes(&receiver, &sender_peer)
                    .await
                    .bytes_in
                    .saturating_sub(before_in),
            )
        })
        .await,
        "receiver's account of bytes in is off"
    );
    let snapshot = sender.accountant.send(GetResources).await.unwrap();
    assert!(
        snapshot
            .bytes_by_purpose
            .get("gitsync")
            .copied()
            .unwrap_or(0) as f64
            >= sent,
        "{:?}",
        snapshot.bytes_by_purpose
    );
    assert!(snapshot.upload_mbps > 0.0);
    sender.shutdown().await;
    receiver.shutdown().await;
}

/// Transfers in `node`'s ledger whose reason is a bandwidth share.
async fn bandwidth_transfers(
    node: &apn::actors::node::NodeHandle,
) -> Vec<apn::ledger::TransferRecord> {
    node.settler
        .send(apn::actors::settler::GetHistory(
            apn::ledger::HistoryQuery {
                limit: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("settler alive")
        .expect("history")
        .into_iter()
        .filter(|t| {
            t.reason
                .as_deref()
                .is_some_and(|r| r.to_lowercase().contains("bandwidth"))
        })
        .collect()
}

fn bandwidth_config(dir: &std::path::Path, executor: bool) -> apn::config::Config {
    use apn::messages::Vibe;
    let mut config = test_config(dir);
    config.economics.bandwidth_settle_bytes = 200_000;
    config.economics.bandwidth_settle_interval_s = 1;
    config.economics.bandwidth_rate_per_gb = Vibe::from_whole(1000);
    config.market.bid_window_ms = 300;
    if executor {
        config
            .executor
            .profiles
            .insert("SHELL".into(), shell_profile());
    } else if let Some(shell) = config.executor.profiles.get_mut("SHELL") {
        shell.enabled = false;
    }
    config
}

#[actix_rt::test]
async fn a_log_stream_nobody_asked_for_is_not_paid() {
    use apn::actors::settler::GetBalance;
    use apn::messages::ExecutionLogs;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (pusher, victim) = connected_pair(
        bandwidth_config(dirs[0].path(), true),
        bandwidth_config(dirs[1].path(), false),
    )
    .await;
    let before = victim.settler.send(GetBalance).await.unwrap().unwrap();
    // 300 kB of "log stream" for tasks the victim never assigned: over the threshold.
    for sequence in 0..3u64 {
        let message = APNMessage::ExecutionLogs(ExecutionLogs {
            task_id: Uuid::new_v4(),
            execution_id: Uuid::new_v4(),
            sequence,
            lines: Sealed {
                nonce: sequence,
                ciphertext: serde_bytes::ByteBuf::from(vec![1u8; 100_000]),
            },
        });
        pusher
            .peer_manager
            .send(SendTo {
                peer: victim.identity.peer_id(),
                message,
            })
            .await
            .unwrap()
            .unwrap();
    }
    // The bytes are counted, refused as unauthorized, and never billed: past several
    // settlement intervals the victim has paid nothing.
    let pusher_peer = pusher.identity.peer_id().to_string();
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            peer_bytes(&victim, &pusher_peer).await.bytes_in >= 300_000
        })
        .await
    );
    // A negative window, kept on purpose: "never billed" has no event to wait for, so the
    // test lets three settlement intervals (1 s each, see `bandwidth_config`) pass.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let after = victim.settler.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(
        after.balance, before.balance,
        "the victim paid for pushed bytes"
    );
    assert!(bandwidth_transfers(&victim).await.is_empty());
    pusher.shutdown().await;
    victim.shutdown().await;
}

#[actix_rt::test]
async fn the_log_stream_of_an_assigned_task_is_paid_in_batches_with_signed_transactions() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (provider, consumer) = connected_pair(
        bandwidth_config(dirs[0].path(), true),
        bandwidth_config(dirs[1].path(), false),
    )
    .await;
    let repo = git_repo(&[("README.md", "hello\n")]);
    // About 400 kB of output: 400 lines of 1000 characters, streamed as sealed log batches.
    let prompt =
        "i=0; while [ $i -lt 400 ]; do head -c 1000 /dev/zero | tr '\\0' x; echo; i=$((i+1)); done";
    let id = consumer
        .distributor
        .send(mesh_shell_task(repo.path(), "talkative", prompt, 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&consumer, id, EVENT_TIMEOUT * 3).await;
    assert_eq!(
        view.status,
        apn::actors::distributor::TaskStatus::Completed,
        "{view:?}"
    );
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            !bandwidth_transfers(&provider).await.is_empty()
        })
        .await,
        "the provider was never paid for the log stream"
    );
    let earned: u64 = bandwidth_transfers(&provider)
        .await
        .iter()
        .map(|t| t.amount.micros())
        .sum();
    let spent: u64 = bandwidth_transfers(&consumer)
        .await
        .iter()
        .map(|t| t.amount.micros())
        .sum();
    assert_eq!(earned, spent, "each payment credited once and debited once");
    // At least the 200 kB threshold at 1000 VIBE/GB (0.2 VIBE), at most the whole stream
    // with its framing.
    assert!(
        (200_000..=600_000).contains(&earned),
        "paid {earned} micro-VIBE"
    );
    provider.shutdown().await;
    consumer.shutdown().await;
}
