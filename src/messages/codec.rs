//! Bytes ⇄ values. CBOR (ciborium): binary-safe, self-describing, so a field added later is
//! read by older nodes as long as it has a default. Sizes are checked before decoding.

use serde::{Serialize, de::DeserializeOwned};

use super::APNMessage;

/// Largest frame (a whole encoded envelope) a node sends or accepts. Under the NATS default
/// max payload (1 MiB) so every frame fits the relay, and under gossipsub's transmit limit,
/// which the swarm sets to this value.
pub const FRAME_BYTES_MAX: usize = 512 * 1024;

/// Why bytes could not become a value or the other way round.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {size} bytes is over the {limit} byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Encode any wire value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(bytes)
}

/// Decode any wire value from at most `limit` bytes; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let value =
        ciborium::from_reader(&mut cursor).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if cursor.position() as usize != bytes.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes",
            bytes.len() - cursor.position() as usize
        )));
    }
    Ok(value)
}

/// Encode a message body.
pub fn encode_message(message: &APNMessage) -> Result<Vec<u8>, CodecError> {
    encode(message)
}

/// Decode a message body.
pub fn decode_message(bytes: &[u8]) -> Result<APNMessage, CodecError> {
    decode(bytes, FRAME_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use serde_bytes::ByteBuf;
    use uuid::Uuid;

    use super::*;
    use crate::identity::Identity;
    use crate::messages::*;

    fn sealed(seed: u8) -> Sealed {
        Sealed {
            nonce: u64::from(seed) * 1_000,
            ciphertext: ByteBuf::from(vec![seed; 48]),
        }
    }

    /// One value of every variant, with every field set to something other than a default.
    fn every_variant() -> Vec<APNMessage> {
        let identity = Identity::ephemeral();
        let node_id = identity.node_id().clone();
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 12, 30, 15).unwrap();
        let task_id = Uuid::new_v4();
        let execution_id = Uuid::new_v4();
        let usage = ComputeUsage {
            cpu_seconds: 1.25,
            memory_gb_seconds: 0.5,
            wall_seconds: 3.0,
        };
        vec![
            APNMessage::NodeAnnouncement(NodeAnnouncement {
                node_id: node_id.clone(),
                capabilities: vec!["rust".into()],
                executor_profiles: vec!["SHELL".into()],
                compute_rate_per_cpu_hour: Vibe::from_micros(10_500_000),
                min_task_reward: Vibe::from_whole(1),
                max_concurrent_tasks: 4,
                free_slots: 3,
                noise_static_key: ByteBuf::from(identity.noise_public().to_vec()),
                noise_key_signature: ByteBuf::from(identity.noise_binding().to_vec()),
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
                relay_only: true,
                version: "0.1.0".into(),
            }),
            APNMessage::TaskDistributionRequest(TaskDistributionRequest {
                task_id,
                executor_profile: "CLAUDE_CODE".into(),
                requirements: TaskRequirements {
                    capabilities: vec!["python".into()],
                    memory_mb: 2048,
                    timeout_s: 600,
                },
                reward: Vibe::from_micros(12_345_678),
                content_hash: "ab".repeat(32),
                bid_deadline: at,
            }),
            APNMessage::TaskBid(TaskBid {
                task_id,
                bidder: node_id.clone(),
                price: Vibe::from_whole(3),
                estimated_duration_s: 120,
                capabilities: vec!["rust".into()],
                valid_until: at,
            }),
            APNMessage::TaskAssigned(TaskAssigned {
                task_id,
                executor: node_id.clone(),
                agreed_price: Vibe::from_whole(3),
                escrow_id: Uuid::new_v4(),
                deadline: at,
                noise_handshake: ByteBuf::from(vec![1, 2, 3]),
            }),
            APNMessage::ExecutionStarted(ExecutionStarted {
                task_id,
                execution_id,
                executor: node_id.clone(),
                started_at: at,
                noise_handshake: ByteBuf::from(vec![4, 5, 6]),
            }),
            APNMessage::ExecutionProgress(ExecutionProgress {
                task_id,
                execution_id,
                stage: ExecutionStage::Testing,
                percent: 70,
                current_action: Some(sealed(1)),
            }),
            APNMessage::ExecutionLogs(ExecutionLogs {
                task_id,
                execution_id,
                sequence: 9,
                lines: sealed(2),
            }),
            APNMessage::ExecutionCompleted(ExecutionCompleted {
                task_id,
                execution_id,
                result_hash: "cd".repeat(32),
                result_signature: ByteBuf::from(vec![9; 64]),
                result: sealed(3),
                usage,
            }),
            APNMessage::ExecutionFailed(ExecutionFailed {
                task_id,
                execution_id,
                stage: ExecutionStage::Coding,
                error: "exit status 1".into(),
                usage,
            }),
            APNMessage::BandwidthContribution(BandwidthContribution {
                contributor: node_id.clone(),
                beneficiary: node_id.clone(),
                purpose: BandwidthPurpose::GitSync,
                bytes: 1 << 30,
                period_start: at,
                period_end: at,
                amount: Vibe::from_micros(1),
            }),
            APNMessage::ComputeContribution(ComputeContribution {
                task_id,
                contributor: node_id,
                usage,
                amount: Vibe::from_whole(2),
            }),
            APNMessage::VibeTransaction(VibeTransaction::signed_with_id(
                &identity,
                Uuid::new_v4(),
                Identity::ephemeral().public_key(),
                Vibe::from_whole(3),
                TransactionReason::TaskExecution,
                Some(task_id),
                at,
            )),
            APNMessage::RepoChunk(RepoChunk {
                task_id,
                index: 2,
                total: 5,
                data: sealed(4),
            }),
            APNMessage::TaskCancelled(TaskCancelled {
                task_id,
                reason: "cancelled by the user".into(),
            }),
            APNMessage::PaymentReceipt(PaymentReceipt { tx_id: task_id }),
            APNMessage::PingRequest(PingRequest { nonce: 42 }),
            APNMessage::PingReply(PingReply { nonce: 42 }),
        ]
    }

    #[test]
    fn every_variant_round_trips() {
        let messages = every_variant();
        let kinds: HashSet<&str> = messages.iter().map(APNMessage::kind).collect();
        assert_eq!(kinds.len(), 17, "a variant is missing from this test");
        for message in messages {
            let bytes = encode_message(&message).unwrap();
            assert_eq!(
                decode_message(&bytes).unwrap(),
                message,
                "{}",
                message.kind()
            );
        }
    }

    #[test]
    fn trailing_bytes_and_oversize_are_refused() {
        let mut bytes = encode_message(&APNMessage::PingReply(PingReply { nonce: 1 })).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_message(&bytes),
            Err(CodecError::Malformed(_))
        ));
        let big = vec![0u8; FRAME_BYTES_MAX + 1];
        assert!(matches!(
            decode_message(&big),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn vibe_transaction_signature_covers_every_field() {
        let payer = Identity::ephemeral();
        let payee = Identity::ephemeral();
        let transaction = VibeTransaction::new_signed(
            &payer,
            payee.public_key(),
            Vibe::from_whole(5),
            TransactionReason::BandwidthShare,
            None,
        );
        assert!(transaction.verify());
        let mut changed = transaction.clone();
        changed.amount = Vibe::from_whole(6);
        assert!(!changed.verify());
        let mut redirected = transaction.clone();
        redirected.to = ByteBuf::from(payer.public_key().to_vec());
        assert!(!redirected.verify());
        let mut reasoned = transaction;
        reasoned.reason = TransactionReason::Relay;
        assert!(!reasoned.verify());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_message(&bytes);
            let _ = decode::<crate::messages::Envelope>(&bytes, FRAME_BYTES_MAX);
        }

        #[test]
        fn task_requests_round_trip(
            profile in "[A-Z_]{1,16}",
            reward in 0u64..1_000_000_000_000,
            capabilities in proptest::collection::vec("[a-z0-9-]{1,12}", 0..5),
            memory_mb in any::<u64>(),
            timeout_s in any::<u64>(),
        ) {
            let message = APNMessage::TaskDistributionRequest(TaskDistributionRequest {
                task_id: Uuid::new_v4(),
                executor_profile: profile,
                requirements: TaskRequirements { capabilities, memory_mb, timeout_s },
                reward: Vibe::from_micros(reward),
                content_hash: String::new(),
                bid_deadline: Utc::now(),
            });
            let bytes = encode_message(&message).unwrap();
            prop_assert_eq!(decode_message(&bytes).unwrap(), message);
        }

        #[test]
        fn vibe_text_round_trips(micros in 0u64..=crate::messages::vibe::VIBE_MAX.micros()) {
            let vibe = Vibe::from_micros(micros);
            prop_assert_eq!(vibe.to_string().parse::<Vibe>().unwrap(), vibe);
        }
    }
}
