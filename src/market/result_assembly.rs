//! A result too large for one frame comes back in `ResultChunk`s: here the originator
//! collects them under limits the executor cannot choose, and checks the whole before it
//! is decoded.
//!
//! Every number in a chunk or in `ExecutionCompleted`'s `ResultDelivery::Chunked` comes
//! from the peer, so nothing is sized by one until it is checked against this node's own
//! `executor.result_bytes_max`: the chunk count must fit the cap, every chunk but the last
//! is exactly [`RESULT_CHUNK_BYTES`] (so what is buffered never passes the cap by more
//! than one chunk), and the announced size and count must agree with each other and with
//! what arrived. The reassembled bytes must hash to the announced SHA-256 before they are
//! decoded ([`finish`], meant to run off the actor thread: it hashes and decodes tens of
//! MiB).

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ExecutionResult, RESULT_CHUNK_BYTES, result_chunks};
use crate::messages::codec::{self, CodecError};

/// Why a chunk was refused (each is counted as `bad_result_chunk`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefused {
    /// The chunk belongs to another run than the one being collected.
    #[error("chunk of run {got}, the result being collected is run {expected}")]
    WrongRun {
        /// The run being collected.
        expected: Uuid,
        /// The run the chunk names.
        got: Uuid,
    },
    /// The chunk count is zero, past what the cap allows, or not the one already known.
    #[error("chunk count {total} does not fit (expected {expected})")]
    Total {
        /// The count the chunk names.
        total: u32,
        /// The count in force (or the most the cap allows).
        expected: u32,
    },
    /// The index is not below the chunk count.
    #[error("chunk index {index} is not below {total}")]
    Index {
        /// The chunk's index.
        index: u32,
        /// The chunk count.
        total: u32,
    },
    /// The chunk holds more than [`RESULT_CHUNK_BYTES`], or a chunk before the last holds
    /// less.
    #[error(
        "chunk {index} holds {bytes} bytes; chunks are {RESULT_CHUNK_BYTES} bytes but the last"
    )]
    Size {
        /// The chunk's index.
        index: u32,
        /// Its plaintext length.
        bytes: usize,
    },
    /// The same index arrived twice.
    #[error("chunk {index} arrived twice")]
    Duplicate {
        /// The chunk's index.
        index: u32,
    },
}

/// Why a collected result is refused (the run is a bad result, or over this node's cap).
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The announced result is larger than this node's `executor.result_bytes_max`.
    #[error("a result of {bytes} bytes is over this node's executor.result_bytes_max ({limit})")]
    TooLarge {
        /// The announced size.
        bytes: u64,
        /// This node's cap.
        limit: u64,
    },
    /// The announced chunk count is not the one the announced size implies, or not the
    /// one the chunks named.
    #[error("{total_chunks} chunks announced for {bytes} bytes (expected {expected})")]
    ChunkCount {
        /// The announced size.
        bytes: u64,
        /// The announced count.
        total_chunks: u32,
        /// The count the size implies.
        expected: u64,
    },
    /// The chunks hold another number of bytes than announced.
    #[error("the chunks hold {got} bytes, {announced} announced")]
    Size {
        /// What was announced.
        announced: u64,
        /// What arrived.
        got: u64,
    },
    /// The reassembled bytes do not hash to the announced SHA-256.
    #[error("the reassembled result does not match its hash")]
    HashMismatch,
    /// The result names another run than the one in force.
    #[error("the result is of run {0}, not the run in force")]
    WrongRun(Uuid),
    /// The announced chunk count does not fit (see [`ChunkRefused`]).
    #[error(transparent)]
    Chunk(#[from] ChunkRefused),
    /// The reassembled bytes are not an encoded result.
    #[error("the reassembled result does not decode: {0}")]
    Malformed(#[from] CodecError),
}

/// What `ExecutionCompleted` announced of a chunked result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// Size of the encoded result, in bytes.
    pub bytes: u64,
    /// SHA-256 (hex) of the encoded result.
    pub sha256: String,
    /// The signed `result_hash` the decoded result must have.
    pub result_hash: String,
}

/// The chunks of one run's result collected so far.
#[derive(Debug)]
pub struct ResultAssembly {
    execution_id: Uuid,
    total: u32,
    parts: Vec<Option<Vec<u8>>>,
    received: u32,
    bytes: u64,
    announced: Option<Announced>,
}

/// The most chunks a result within `bytes_max` is cut into.
pub fn chunks_max(bytes_max: u64) -> u32 {
    u32::try_from(result_chunks(bytes_max)).unwrap_or(u32::MAX)
}

impl ResultAssembly {
    /// Start collecting run `execution_id`'s result of `total` chunks (named by its first
    /// chunk or by `ExecutionCompleted`), refused past what `bytes_max` allows.
    pub fn new(execution_id: Uuid, total: u32, bytes_max: u64) -> Result<Self, ChunkRefused> {
        let most = chunks_max(bytes_max);
        if total == 0 || total > most {
            return Err(ChunkRefused::Total {
                total,
                expected: most,
            });
        }
        Ok(ResultAssembly {
            execution_id,
            total,
            parts: vec![None; total as usize],
            received: 0,
            bytes: 0,
            announced: None,
        })
    }

    /// The run being collected.
    pub fn execution_id(&self) -> Uuid {
        self.execution_id
    }

    /// Take chunk `index` of `total` of run `execution_id`, its plaintext `data`.
    pub fn accept(
        &mut self,
        execution_id: Uuid,
        index: u32,
        total: u32,
        data: Vec<u8>,
    ) -> Result<(), ChunkRefused> {
        if execution_id != self.execution_id {
            return Err(ChunkRefused::WrongRun {
                expected: self.execution_id,
                got: execution_id,
            });
        }
        if total != self.total {
            return Err(ChunkRefused::Total {
                total,
                expected: self.total,
            });
        }
        if index >= total {
            return Err(ChunkRefused::Index { index, total });
        }
        let last = index + 1 == total;
        if data.len() > RESULT_CHUNK_BYTES || (!last && data.len() != RESULT_CHUNK_BYTES) {
            return Err(ChunkRefused::Size {
                index,
                bytes: data.len(),
            });
        }
        let slot = &mut self.parts[index as usize];
        if slot.is_some() {
            return Err(ChunkRefused::Duplicate { index });
        }
        self.bytes += data.len() as u64;
        *slot = Some(data);
        self.received += 1;
        Ok(())
    }

    /// `ExecutionCompleted` announced the result: its size and count must agree with each
    /// other, with the chunks and with this node's cap.
    pub fn announce(
        &mut self,
        total_chunks: u32,
        announced: Announced,
        bytes_max: u64,
    ) -> Result<(), AssemblyError> {
        check_announcement(announced.bytes, total_chunks, bytes_max)?;
        if total_chunks != self.total {
            return Err(AssemblyError::ChunkCount {
                bytes: announced.bytes,
                total_chunks,
                expected: u64::from(self.total),
            });
        }
        if self.bytes > announced.bytes {
            return Err(AssemblyError::Size {
                announced: announced.bytes,
                got: self.bytes,
            });
        }
        self.announced = Some(announced);
        Ok(())
    }

    /// True once the result is announced and every chunk is in.
    pub fn is_complete(&self) -> bool {
        self.announced.is_some() && self.received == self.total
    }

    /// The whole encoded result and what was announced of it, once complete.
    pub fn into_bytes(self) -> Option<(Vec<u8>, Announced)> {
        let announced = self.announced?;
        if self.received != self.total {
            return None;
        }
        let mut bytes = Vec::with_capacity(self.bytes as usize);
        for part in self.parts.into_iter().flatten() {
            bytes.extend_from_slice(&part);
        }
        Some((bytes, announced))
    }
}

/// An announced size within `bytes_max`, and a chunk count the size implies.
pub fn check_announcement(
    bytes: u64,
    total_chunks: u32,
    bytes_max: u64,
) -> Result<(), AssemblyError> {
    if bytes > bytes_max {
        return Err(AssemblyError::TooLarge {
            bytes,
            limit: bytes_max,
        });
    }
    let expected = result_chunks(bytes);
    if u64::from(total_chunks) != expected {
        return Err(AssemblyError::ChunkCount {
            bytes,
            total_chunks,
            expected,
        });
    }
    Ok(())
}

/// Check the reassembled `bytes` against what was announced and decode them (under
/// `bytes_max`). Hashes and decodes the whole result: run it off the actor thread.
pub fn finish(
    bytes: &[u8],
    announced: &Announced,
    bytes_max: u64,
) -> Result<ExecutionResult, AssemblyError> {
    if bytes.len() as u64 != announced.bytes {
        return Err(AssemblyError::Size {
            announced: announced.bytes,
            got: bytes.len() as u64,
        });
    }
    if hex::encode(Sha256::digest(bytes)) != announced.sha256.to_ascii_lowercase() {
        return Err(AssemblyError::HashMismatch);
    }
    let limit = usize::try_from(bytes_max).unwrap_or(usize::MAX);
    Ok(codec::decode(bytes, limit)?)
}

/// SHA-256 (hex) of an encoded result, as `ResultDelivery::Chunked` announces it.
pub fn encoded_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 4 * RESULT_CHUNK_BYTES as u64;

    fn encoded() -> Vec<u8> {
        let result = ExecutionResult {
            summary: "done".into(),
            files_modified: vec!["big.txt".into()],
            diff: "+line\n".repeat(100_000),
        };
        codec::encode(&result).unwrap_or_default()
    }

    fn announced(bytes: &[u8]) -> Announced {
        Announced {
            bytes: bytes.len() as u64,
            sha256: encoded_sha256(bytes),
            result_hash: String::new(),
        }
    }

    #[test]
    fn chunks_in_any_order_reassemble_and_decode() {
        let bytes = encoded();
        let run = Uuid::new_v4();
        let total = result_chunks(bytes.len() as u64) as u32;
        let mut assembly = ResultAssembly::new(run, total, CAP).unwrap_or_else(|e| panic!("{e}"));
        let parts: Vec<&[u8]> = bytes.chunks(RESULT_CHUNK_BYTES).collect();
        for (index, part) in parts.iter().enumerate().rev() {
            assert_eq!(
                assembly.accept(run, index as u32, total, part.to_vec()),
                Ok(())
            );
        }
        assert!(!assembly.is_complete());
        assert!(assembly.announce(total, announced(&bytes), CAP).is_ok());
        assert!(assembly.is_complete());
        let Some((whole, what)) = assembly.into_bytes() else {
            panic!("every chunk is in and announced");
        };
        let result = finish(&whole, &what, CAP).map(|r| r.diff.len()).ok();
        assert_eq!(result, Some(600_000));
    }

    #[test]
    fn peer_chosen_numbers_are_checked_before_anything_is_sized_by_them() {
        let run = Uuid::new_v4();
        assert!(matches!(
            ResultAssembly::new(run, u32::MAX, CAP),
            Err(ChunkRefused::Total { .. })
        ));
        assert!(ResultAssembly::new(run, 0, CAP).is_err());
        let mut assembly = ResultAssembly::new(run, 3, CAP).unwrap_or_else(|e| panic!("{e}"));
        let full = vec![7u8; RESULT_CHUNK_BYTES];
        assert!(matches!(
            assembly.accept(run, 3, 3, full.clone()),
            Err(ChunkRefused::Index { .. })
        ));
        assert!(matches!(
            assembly.accept(run, 0, 4, full.clone()),
            Err(ChunkRefused::Total { .. })
        ));
        assert!(matches!(
            assembly.accept(Uuid::new_v4(), 0, 3, full.clone()),
            Err(ChunkRefused::WrongRun { .. })
        ));
        assert!(matches!(
            assembly.accept(run, 2, 3, vec![0; RESULT_CHUNK_BYTES + 1]),
            Err(ChunkRefused::Size { .. })
        ));
        assert!(matches!(
            assembly.accept(run, 0, 3, vec![0; 10]),
            Err(ChunkRefused::Size { .. })
        ));
        assert_eq!(assembly.accept(run, 0, 3, full.clone()), Ok(()));
        assert!(matches!(
            assembly.accept(run, 0, 3, full),
            Err(ChunkRefused::Duplicate { index: 0 })
        ));
        // Over the cap, or a count that is not the one the size implies.
        assert!(matches!(
            check_announcement(CAP + 1, 5, CAP),
            Err(AssemblyError::TooLarge { .. })
        ));
        assert!(matches!(
            check_announcement(10, 2, CAP),
            Err(AssemblyError::ChunkCount { .. })
        ));
    }

    #[test]
    fn a_result_that_does_not_hash_to_the_announcement_is_refused() {
        let mut bytes = encoded();
        let what = announced(&bytes);
        bytes[100] ^= 1;
        assert!(matches!(
            finish(&bytes, &what, CAP),
            Err(AssemblyError::HashMismatch)
        ));
    }
}
