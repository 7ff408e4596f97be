//! Bytes sent between two real nodes show up in both nodes' bandwidth totals, within a few
//! percent of what the test sent. (CPU metering is tested in tests/agent_process.rs.)

mod common;

use apn::actors::accountant::GetResources;
use apn::actors::peer_manager::SendTo;
use apn::messages::{APNMessage, RepoChunk, Sealed};
use common::*;
use uuid::Uuid;

const MESSAGES: usize = 40;
const PAYLOAD_BYTES: usize = 100_000;

#[actix_rt::test]
async fn both_sides_account_the_bytes_sent() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let sender = node(test_config(dirs[0].path())).await;
    let mut config = test_config(dirs[1].path());
    config.node.bootstrap = vec![sender.dial_address().unwrap().to_string()];
    let receiver = node(config).await;
    let (only_receiver, only_sender) = ([&receiver], [&sender]);
    assert!(wait_until(EVENT_TIMEOUT, || knows_all(&sender, &only_receiver)).await);
    assert!(wait_until(EVENT_TIMEOUT, || knows_all(&receiver, &only_sender)).await);
    let before_out = sender
        .accountant
        .send(GetResources)
        .await
        .unwrap()
        .peers
        .get(&receiver.identity.peer_id().to_string())
        .map(|p| p.bytes_out)
        .unwrap_or(0);
    let before_in = receiver
        .accountant
        .send(GetResources)
        .await
        .unwrap()
        .peers
        .get(&sender.identity.peer_id().to_string())
        .map(|p| p.bytes_in)
        .unwrap_or(0);
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
    let receiver_peer = receiver.identity.peer_id().to_string();
    let sender_peer = sender.identity.peer_id().to_string();
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            let out = sender
                .accountant
                .send(GetResources)
                .await
                .unwrap()
                .peers
                .get(&receiver_peer)
                .map(|p| p.bytes_out)
                .unwrap_or(0);
            within(out - before_out)
        })
        .await,
        "sender's account of bytes out is off: {:?}",
        sender.accountant.send(GetResources).await.unwrap().peers
    );
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            let incoming = receiver
                .accountant
                .send(GetResources)
                .await
                .unwrap()
                .peers
                .get(&sender_peer)
                .map(|p| p.bytes_in)
                .unwrap_or(0);
            within(incoming - before_in)
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
