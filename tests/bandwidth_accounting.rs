//! Bytes sent between two real nodes show up in both nodes' bandwidth totals, within a few
//! percent of what the test sent; a log stream the originator asked for is paid in batches,
//! and each payment (a bandwidth share, and the escrow paying for the run) goes with a
//! signed contribution record the other node checks, so the panel's `bandwidth_contributed`
//! and `compute_contributed` entries show VIBE actually earned. (CPU metering is tested in
//! tests/agent_process.rs; forged records in tests/hostile_peer_contribution.rs.)
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use apn::actors::accountant::{GetResources, ReceivedContribution};
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
            bytes: (MESSAGES * PAYLOAD_BYTES) as u64,
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

/// The contribution records `node` received and verified.
async fn contributions(node: &apn::actors::node::NodeHandle) -> Vec<ReceivedContribution> {
    node.accountant
        .send(apn::actors::accountant::GetContributions)
        .await
        .expect("accountant alive")
}

/// The amounts (µVIBE) of `node`'s panel entries of `kind`.
async fn panel_amounts(node: &apn::actors::node::NodeHandle, kind: &str) -> Vec<u64> {
    node.panel_hub
        .send(apn::protocol::panel::GetTransactions {
            limit: 1000,
            before: None,
            kind: Some(kind.into()),
        })
        .await
        .expect("panel hub alive")
        .expect("transactions readable")
        .iter()
        .map(|entry| entry.amount().map_or(0, |a| a.micros()))
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

    // (b) Each bandwidth payment went with a BandwidthContribution the provider verified,
    // and its panel shows exactly what it was paid, never an estimate of its own.
    let provider_node = provider.identity.node_id().clone();
    let consumer_node = consumer.identity.node_id().clone();
    let verified_bandwidth = || async {
        contributions(&provider)
            .await
            .into_iter()
            .filter_map(|c| match c {
                ReceivedContribution::Bandwidth(record) => Some(record),
                ReceivedContribution::Compute(_) => None,
            })
            .collect::<Vec<_>>()
    };
    // More batches may still be settling: wait until every payment so far has its
    // verified record and its panel entry.
    let paid_to_provider = || async {
        bandwidth_transfers(&provider)
            .await
            .iter()
            .map(|t| t.amount.micros())
            .sum::<u64>()
    };
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            let paid = paid_to_provider().await;
            let recorded: u64 = verified_bandwidth()
                .await
                .iter()
                .map(|r| r.amount.micros())
                .sum();
            let shown: u64 = panel_amounts(&provider, "bandwidth_contributed")
                .await
                .iter()
                .sum();
            paid > 0 && recorded == paid && shown == paid
        })
        .await,
        "records {:?} and panel {:?} do not match the payments ({} µVIBE)",
        verified_bandwidth().await,
        panel_amounts(&provider, "bandwidth_contributed").await,
        paid_to_provider().await
    );
    let earned = paid_to_provider().await;
    let records = verified_bandwidth().await;
    assert_eq!(records.len(), bandwidth_transfers(&provider).await.len());
    for record in &records {
        assert_eq!(record.contributor, provider_node);
        assert_eq!(record.beneficiary, consumer_node);
        assert!(record.bytes > 0 && record.period_start <= record.period_end);
    }
    assert_eq!(
        records.iter().map(|r| r.amount.micros()).sum::<u64>(),
        earned,
        "the records are worth the payments"
    );
    let shown = panel_amounts(&provider, "bandwidth_contributed").await;
    assert_eq!(shown.len(), records.len(), "one panel entry per record");
    assert_eq!(shown.iter().sum::<u64>(), earned);
    assert!(
        panel_amounts(&consumer, "bandwidth_contributed")
            .await
            .is_empty(),
        "the payer contributed no bandwidth"
    );

    // (a) The escrow paid the executor; it sent the originator a ComputeContribution the
    // originator verified, and its panel shows compute_contributed at the price paid.
    let price = view.paid.expect("the executor was paid");
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            contributions(&consumer)
                .await
                .iter()
                .any(|c| matches!(c, ReceivedContribution::Compute(r) if r.task_id == id))
        })
        .await,
        "the originator never verified a ComputeContribution for the task"
    );
    let compute: Vec<_> = contributions(&consumer)
        .await
        .into_iter()
        .filter_map(|c| match c {
            ReceivedContribution::Compute(record) => Some(record),
            ReceivedContribution::Bandwidth(_) => None,
        })
        .collect();
    assert_eq!(compute.len(), 1, "{compute:?}");
    assert_eq!(compute[0].contributor, provider_node);
    assert_eq!(compute[0].amount, price);
    assert!(compute[0].escrow_id.is_some());
    assert!(
        compute[0].usage.wall_seconds > 0.0,
        "{:?}",
        compute[0].usage
    );
    assert_eq!(
        panel_amounts(&provider, "compute_contributed").await,
        vec![price.micros()]
    );
    assert!(
        panel_amounts(&consumer, "compute_contributed")
            .await
            .is_empty()
    );
    // Every honest record passed.
    use apn::messages::DropReason;
    assert_eq!(provider.metrics.dropped(DropReason::BadContribution), 0);
    assert_eq!(consumer.metrics.dropped(DropReason::BadContribution), 0);

    // A record sent again (a fresh envelope, so past the replay cache) counts once: the
    // copy is dropped and counted, and makes no second panel entry.
    let bandwidth_entries = panel_amounts(&provider, "bandwidth_contributed")
        .await
        .len();
    for (from, to, message) in [
        (
            &consumer,
            &provider,
            APNMessage::BandwidthContribution(records[0].clone()),
        ),
        (
            &provider,
            &consumer,
            APNMessage::ComputeContribution(compute[0].clone()),
        ),
    ] {
        from.peer_manager
            .send(SendTo {
                peer: to.identity.peer_id(),
                message,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(
            wait_until(EVENT_TIMEOUT, || async {
                to.metrics.dropped(DropReason::BadContribution) == 1
            })
            .await,
            "a repeated record was not dropped"
        );
    }
    assert_eq!(
        panel_amounts(&provider, "bandwidth_contributed")
            .await
            .len(),
        bandwidth_entries
    );
    assert_eq!(contributions(&consumer).await.len(), 1);
    provider.shutdown().await;
    consumer.shutdown().await;
}
