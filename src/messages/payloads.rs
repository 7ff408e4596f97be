//! The plaintext types that travel sealed end-to-end (inside the run's Noise session)
//! between originator and executor: the task, log batches, progress actions, the result
//! and a failure's detail. Each is decoded with its own named limit ([`SealedPayload`]),
//! never with the length of the input.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ExecutionStage;
use super::codec::{self, CodecError};

/// How the executor gets the repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RepoDelivery {
    /// A git bundle of the base commit follows in `total_chunks` sealed `RepoChunk`s.
    Bundle {
        /// Size of the whole bundle, in bytes.
        bytes: u64,
        /// Number of `RepoChunk`s the bundle is split into.
        total_chunks: u32,
    },
    /// The repository is at this path on a disk both nodes share.
    LocalPath(String),
}

/// The task as the executor receives it, inside the first Noise handshake message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPayload {
    /// Human-readable title the user gave the task attempt.
    pub title: String,
    /// The agent's instructions; only ever sent sealed to the assigned executor.
    pub prompt: String,
    /// Executor profile to run (must match the request the executor bid on).
    pub executor_profile: String,
    /// The git commit the run starts from; the result's diff is against it.
    pub base_commit: String,
    /// How the executor gets the repository.
    pub repo: RepoDelivery,
    /// Wall-clock limit for the run, in seconds.
    pub timeout_s: u64,
}

/// One log line from a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Where the line came from: `stdout`, `stderr`, or `apn` for the node's own notes.
    pub stream: String,
    /// The line's text, without its newline.
    pub line: String,
    /// When the line was read, milliseconds since the Unix epoch (the sender's clock).
    pub at_ms: i64,
}

/// The result, sealed inside `ExecutionCompleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionResult {
    /// What the agent says it did, for the user.
    pub summary: String,
    /// Repository paths the run changed.
    pub files_modified: Vec<String>,
    /// Git diff of the workspace against `base_commit`.
    pub diff: String,
}

/// Why a run failed, sealed inside `ExecutionFailed`: the stage and the error can name
/// files, commands and output of a private task, so they travel end-to-end encrypted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureDetail {
    /// The stage the run was in when it failed.
    pub stage: ExecutionStage,
    /// What went wrong, readable by the user.
    pub error: String,
}

/// Largest plaintext of a sealed [`TaskPayload`] (prompt and context), in bytes: it travels
/// in one frame.
pub const TASK_PAYLOAD_BYTES_MAX: usize = crate::messages::codec::FRAME_BYTES_MAX;
/// Largest plaintext of a sealed [`ExecutionResult`], in bytes (one frame).
pub const RESULT_BYTES_MAX: usize = crate::messages::codec::FRAME_BYTES_MAX;
/// Largest plaintext of a sealed log batch, in bytes (the executor sends at most 48 KiB of
/// lines a batch; the rest is framing).
pub const LOG_BATCH_BYTES_MAX: usize = 128 * 1024;
/// Largest plaintext of a sealed progress action, in bytes.
pub const PROGRESS_ACTION_BYTES_MAX: usize = 16 * 1024;
/// Largest plaintext of a sealed [`FailureDetail`], in bytes.
pub const FAILURE_DETAIL_BYTES_MAX: usize = 16 * 1024;

/// A progress report's plaintext action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressAction {
    /// The stage the run is in.
    pub stage: ExecutionStage,
    /// What the agent is doing now (may quote code, hence sealed).
    pub action: String,
}

/// A type that travels sealed, with the most plaintext bytes it may decode from.
pub trait SealedPayload: Sized + DeserializeOwned {
    /// Largest plaintext accepted, in bytes.
    const BYTES_MAX: usize;

    /// Decode an opened payload under [`SealedPayload::BYTES_MAX`].
    fn decode(plain: &[u8]) -> Result<Self, CodecError> {
        codec::decode(plain, Self::BYTES_MAX)
    }
}

impl SealedPayload for TaskPayload {
    const BYTES_MAX: usize = TASK_PAYLOAD_BYTES_MAX;
}

impl SealedPayload for ExecutionResult {
    const BYTES_MAX: usize = RESULT_BYTES_MAX;
}

/// A batch of log lines, as `ExecutionLogs` carries it.
impl SealedPayload for Vec<LogLine> {
    const BYTES_MAX: usize = LOG_BATCH_BYTES_MAX;
}

impl SealedPayload for ProgressAction {
    const BYTES_MAX: usize = PROGRESS_ACTION_BYTES_MAX;
}

impl SealedPayload for FailureDetail {
    const BYTES_MAX: usize = FAILURE_DETAIL_BYTES_MAX;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_payload_is_decoded_under_its_own_limit() {
        let action = ProgressAction {
            stage: ExecutionStage::Coding,
            action: "x".repeat(PROGRESS_ACTION_BYTES_MAX),
        };
        let encoded = codec::encode(&action).unwrap_or_default();
        assert!(encoded.len() > PROGRESS_ACTION_BYTES_MAX);
        assert!(ProgressAction::decode(&encoded).is_err());
        let small = codec::encode(&ProgressAction {
            stage: ExecutionStage::Coding,
            action: "Editing src/lib.rs".into(),
        })
        .unwrap_or_default();
        assert_eq!(
            ProgressAction::decode(&small).map(|a| a.action).ok(),
            Some("Editing src/lib.rs".to_string())
        );
        let lines = vec![
            LogLine {
                stream: "stdout".into(),
                line: "y".repeat(1024),
                at_ms: 0,
            };
            LOG_BATCH_BYTES_MAX / 1024 + 1
        ];
        let encoded = codec::encode(&lines).unwrap_or_default();
        assert!(<Vec<LogLine>>::decode(&encoded).is_err());
    }
}
