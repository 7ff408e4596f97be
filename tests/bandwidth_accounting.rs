//! Bytes sent between two real nodes show up in both nodes' bandwidth totals, within a few
//! percent of what the test sent. (CPU metering is tested in tests/agent_process.rs.)

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

#[actix_rt::test]
async fn log_stream_bandwidth_is_paid_in_batches_with_signed_transactions() {
    use apn::actors::settler::GetBalance;
    use apn::messages::{ExecutionLogs, Vibe};
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let configure = |dir: &std::path::Path| {
        let mut config = test_config(dir);
        config.economics.bandwidth_settle_bytes = 200_000;
        config.economics.bandwidth_rate_per_gb = Vibe::from_whole(1000);
        config
    };
    let (provider, consumer) =
        connected_pair(configure(dirs[0].path()), configure(dirs[1].path())).await;
    // The provider runs the consumer's tasks (its executor admitted one): the consumer's
    // payments are welcome on the provider.
    provider
        .settler
        .send(apn::actors::settler::RecordCounterparty {
            peer: consumer.identity.public_key(),
        })
        .await
        .unwrap();
    // 300 kB of log stream from the provider to the consumer: over the 200 kB threshold.
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
        provider
            .peer_manager
            .send(SendTo {
                peer: consumer.identity.peer_id(),
                message,
            })
            .await
            .unwrap()
            .unwrap();
    }
    let initial = Vibe::from_whole(1000);
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            provider
                .settler
                .send(GetBalance)
                .await
                .unwrap()
                .unwrap()
                .balance
                > initial
        })
        .await,
        "the provider was never paid"
    );
    let earned = provider
        .settler
        .send(GetBalance)
        .await
        .unwrap()
        .unwrap()
        .balance
        .micros()
        - initial.micros();
    let spent = initial.micros()
        - consumer
            .settler
            .send(GetBalance)
            .await
            .unwrap()
            .unwrap()
            .balance
            .micros();
    assert_eq!(earned, spent, "one payment, credited once and debited once");
    // About 300 kB at 1000 VIBE/GB: 0.3 VIBE (frames carry a little overhead).
    assert!(
        (300_000..=320_000).contains(&earned),
        "paid {earned} micro-VIBE"
    );
    provider.shutdown().await;
    consumer.shutdown().await;
}
