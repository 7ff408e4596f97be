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
