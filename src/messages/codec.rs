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
    /// The frame is larger than the caller's limit; refused before decoding.
    #[error("frame of {size} bytes is over the {limit} byte limit")]
    TooLarge {
        /// Length of the refused frame, in bytes.
        size: usize,
        /// The limit it exceeded, in bytes.
        limit: usize,
    },
    #[error("malformed frame: {0}")]
    /// The bytes are not valid CBOR of the expected type.
    Malformed(String),
    #[error("cannot encode: {0}")]
    /// The value could not be serialised (should not happen for wire types).
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

    #[test]
    fn every_variant_round_trips() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 12, 30, 15).unwrap();
        let messages = super::super::samples::every_variant(&Identity::ephemeral(), at);
        let kinds: HashSet<&str> = messages.iter().map(APNMessage::kind).collect();
        assert_eq!(kinds.len(), 19, "a variant is missing from this test");
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
    fn an_older_nodes_execution_completed_decodes_as_an_inline_result() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 12, 30, 15).unwrap();
        let Some(completed) = super::super::samples::every_variant(&Identity::ephemeral(), at)
            .into_iter()
            .find(|m| matches!(m, APNMessage::ExecutionCompleted(_)))
        else {
            panic!("the samples hold an ExecutionCompleted");
        };
        // The same message as a node before `delivery` existed writes it.
        let mut value = ciborium::Value::serialized(&completed).unwrap();
        if let ciborium::Value::Map(outer) = &mut value {
            for (_, body) in outer.iter_mut() {
                if let ciborium::Value::Map(fields) = body {
                    fields.retain(|(key, _)| key.as_text() != Some("delivery"));
                }
            }
        }
        let old = encode(&value).unwrap();
        let Ok(APNMessage::ExecutionCompleted(decoded)) = decode_message(&old) else {
            panic!("an older ExecutionCompleted decodes");
        };
        assert_eq!(decoded.delivery, ResultDelivery::Inline);
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
