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
    /// A git bundle follows in sealed `RepoChunk`s (each names the bundle's size). The
    /// executor's handshake answer first says which commits of this repository its cache
    /// holds ([`RepoHave`]), and the bundle carries only what they lack: nothing at all
    /// (a zero-byte bundle) when the base commit is among them.
    Bundle {
        /// The repository's identity: its root commit (the smallest id when the base
        /// commit's history has several). The executor's cache is keyed by it.
        root_commit: String,
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

/// What kind of line a log line is, as the seed's `ExecutionLogs.log_type` names it: the
/// model's own text (`Agent`), or output of the agent process or its tools (`Stdout`,
/// `Stderr`). Serialized as the seed writes it: `"Stdout"`, `"Stderr"`, `"Agent"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum LogType {
    /// Output of the agent process or of a tool it ran (and the node's own notes).
    #[default]
    Stdout,
    /// The agent process's standard error.
    Stderr,
    /// What the model said (its text in a structured transcript).
    Agent,
}

impl LogType {
    /// The type a line of `stream` has: `agent` → `Agent`, `stderr` → `Stderr`, anything
    /// else (`stdout`, the node's `apn` notes) → `Stdout`. Used when a sender (an older
    /// node) or a stored line does not say.
    pub fn of_stream(stream: &str) -> Self {
        match stream {
            "agent" => LogType::Agent,
            "stderr" => LogType::Stderr,
            _ => LogType::Stdout,
        }
    }
}

/// One log line from a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "LogLineWire")]
pub struct LogLine {
    /// Where the line came from: `stdout`, `stderr`, `agent` (the model's text), or `apn`
    /// for the node's own notes.
    pub stream: String,
    /// The seed's classification of the line; derived from `stream` when the sender did
    /// not send it.
    pub log_type: LogType,
    /// The line's text, without its newline.
    pub line: String,
    /// When the line was read, milliseconds since the Unix epoch (the sender's clock).
    pub at_ms: i64,
}

impl LogLine {
    /// A line of `stream`, its `log_type` derived from the stream.
    pub fn new(stream: impl Into<String>, line: impl Into<String>, at_ms: i64) -> Self {
        let stream = stream.into();
        LogLine {
            log_type: LogType::of_stream(&stream),
            stream,
            line: line.into(),
            at_ms,
        }
    }
}

/// [`LogLine`] as it may arrive: `log_type` is optional (nodes before it was added do not
/// send it), and then derived from `stream`.
#[derive(Deserialize)]
struct LogLineWire {
    stream: String,
    #[serde(default)]
    log_type: Option<LogType>,
    line: String,
    at_ms: i64,
}

impl From<LogLineWire> for LogLine {
    fn from(wire: LogLineWire) -> Self {
        LogLine {
            log_type: wire
                .log_type
                .unwrap_or_else(|| LogType::of_stream(&wire.stream)),
            stream: wire.stream,
            line: wire.line,
            at_ms: wire.at_ms,
        }
    }
}

/// What the executor already has of a task's repository, sealed in its handshake answer
/// (`ExecutionStarted`): commits its repository cache holds for this originator and
/// repository, most recently used first, at most [`REPO_HAVE_MAX`]. Only a hint: the
/// originator builds the bundle against those of them it knows.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RepoHave {
    /// Full commit ids (40 or 64 hex digits).
    pub commits: Vec<String>,
}

/// Most commits a [`RepoHave`] names.
pub const REPO_HAVE_MAX: usize = 16;
/// Largest plaintext of a sealed [`RepoHave`], in bytes.
pub const REPO_HAVE_BYTES_MAX: usize = 4 * 1024;

impl RepoHave {
    /// The commits that are well-formed object ids, at most [`REPO_HAVE_MAX`]: what a peer
    /// says is never handed to git unchecked.
    pub fn checked_commits(&self) -> Vec<String> {
        self.commits
            .iter()
            .filter(|c| is_object_id(c))
            .take(REPO_HAVE_MAX)
            .cloned()
            .collect()
    }
}

/// A full git object id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
/// Largest plaintext of a sealed [`ExecutionResult`] travelling inline in
/// `ExecutionCompleted`, in bytes (one frame). A larger result travels in `ResultChunk`s,
/// bounded by the receiver's `executor.result_bytes_max`.
pub const RESULT_BYTES_MAX: usize = crate::messages::codec::FRAME_BYTES_MAX;
/// The largest encoded result the executor still sends inline: what is left of a frame
/// after the envelope, the signature, the hash and the seal's tags.
pub const RESULT_INLINE_BYTES_MAX: usize = 384 * 1024;
/// Plaintext bytes of encoded result per `ResultChunk` (the repository's chunk size: well
/// inside one frame once sealed and enveloped).
pub const RESULT_CHUNK_BYTES: usize = crate::market::REPO_CHUNK_BYTES;

/// Chunks an encoded result of `bytes` travels in: `bytes / RESULT_CHUNK_BYTES` rounded
/// up, at least 1.
pub fn result_chunks(bytes: u64) -> u64 {
    bytes.div_ceil(RESULT_CHUNK_BYTES as u64).max(1)
}
/// Largest plaintext of a sealed log batch, in bytes (the executor sends at most 48 KiB of
/// lines a batch; the rest is framing).
pub const LOG_BATCH_BYTES_MAX: usize = 128 * 1024;
/// Largest plaintext of a sealed progress action, in bytes: the action and up to
/// [`PROGRESS_FILES_MAX`] paths of [`PROGRESS_FILE_BYTES_MAX`] bytes, with room for framing.
pub const PROGRESS_ACTION_BYTES_MAX: usize = 64 * 1024;
/// Most paths one progress report names; the rest are counted in `files_omitted`.
pub const PROGRESS_FILES_MAX: usize = 100;
/// Longest path a progress report names, in bytes; a longer one is cut (ending in `…`).
pub const PROGRESS_FILE_BYTES_MAX: usize = 512;
/// Largest plaintext of a sealed [`FailureDetail`], in bytes.
pub const FAILURE_DETAIL_BYTES_MAX: usize = 16 * 1024;

/// A progress report's plaintext action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressAction {
    /// The stage the run is in.
    pub stage: ExecutionStage,
    /// What the agent is doing now (may quote code, hence sealed).
    pub action: String,
    /// Workspace paths the run has changed so far (what the agent reported and what the
    /// executor's workspace watcher saw), at most [`PROGRESS_FILES_MAX`] of at most
    /// [`PROGRESS_FILE_BYTES_MAX`] bytes each. Absent from older nodes' reports.
    #[serde(default)]
    pub files_modified: Vec<String>,
    /// How many more changed paths there are than `files_modified` names (cut at
    /// [`PROGRESS_FILES_MAX`]).
    #[serde(default)]
    pub files_omitted: u64,
    /// While the repository arrives: how many of its chunks the executor has written. The
    /// originator's sender keeps only a bounded number of chunks beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_chunks_received: Option<u32>,
}

/// A progress report names more files, or longer paths, than a report may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressLimitError {
    /// More than [`PROGRESS_FILES_MAX`] paths.
    #[error("progress names {count} files; at most {PROGRESS_FILES_MAX} are allowed")]
    TooManyFiles {
        /// Paths in the report.
        count: usize,
    },
    /// A path longer than [`PROGRESS_FILE_BYTES_MAX`] bytes.
    #[error(
        "progress names a path of {bytes} bytes; at most {PROGRESS_FILE_BYTES_MAX} are allowed"
    )]
    PathTooLong {
        /// Length of the path, in bytes.
        bytes: usize,
    },
}

impl ProgressAction {
    /// A report of `files` changed so far, cut to the limits a receiver enforces: at most
    /// [`PROGRESS_FILES_MAX`] paths (the rest counted in `files_omitted`), each cut to
    /// [`PROGRESS_FILE_BYTES_MAX`] bytes ending in `…`.
    pub fn bounded(stage: ExecutionStage, action: String, files: &[String]) -> Self {
        ProgressAction {
            stage,
            action,
            files_modified: files
                .iter()
                .take(PROGRESS_FILES_MAX)
                .map(|path| cut_path(path))
                .collect(),
            files_omitted: files.len().saturating_sub(PROGRESS_FILES_MAX) as u64,
            repo_chunks_received: None,
        }
    }

    /// Refuse a report (from a peer) over the limits [`ProgressAction::bounded`] keeps to.
    pub fn check(&self) -> Result<(), ProgressLimitError> {
        if self.files_modified.len() > PROGRESS_FILES_MAX {
            return Err(ProgressLimitError::TooManyFiles {
                count: self.files_modified.len(),
            });
        }
        match self
            .files_modified
            .iter()
            .find(|path| path.len() > PROGRESS_FILE_BYTES_MAX)
        {
            Some(path) => Err(ProgressLimitError::PathTooLong { bytes: path.len() }),
            None => Ok(()),
        }
    }
}

/// `path` cut to [`PROGRESS_FILE_BYTES_MAX`] bytes on a character boundary, `…` marking a cut.
fn cut_path(path: &str) -> String {
    if path.len() <= PROGRESS_FILE_BYTES_MAX {
        return path.to_string();
    }
    let mut end = PROGRESS_FILE_BYTES_MAX - '…'.len_utf8();
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
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

impl SealedPayload for RepoHave {
    const BYTES_MAX: usize = REPO_HAVE_BYTES_MAX;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_payload_is_decoded_under_its_own_limit() {
        let action = ProgressAction::bounded(
            ExecutionStage::Coding,
            "x".repeat(PROGRESS_ACTION_BYTES_MAX),
            &[],
        );
        let encoded = codec::encode(&action).unwrap_or_default();
        assert!(encoded.len() > PROGRESS_ACTION_BYTES_MAX);
        assert!(ProgressAction::decode(&encoded).is_err());
        let small = codec::encode(&ProgressAction::bounded(
            ExecutionStage::Coding,
            "Editing src/lib.rs".into(),
            &["src/lib.rs".to_string()],
        ))
        .unwrap_or_default();
        assert_eq!(
            ProgressAction::decode(&small).map(|a| a.action).ok(),
            Some("Editing src/lib.rs".to_string())
        );
        let lines =
            vec![LogLine::new("stdout", "y".repeat(1024), 0); LOG_BATCH_BYTES_MAX / 1024 + 1];
        let encoded = codec::encode(&lines).unwrap_or_default();
        assert!(<Vec<LogLine>>::decode(&encoded).is_err());
    }

    #[test]
    fn a_full_progress_report_fits_its_limit_and_says_what_it_cut() {
        let files: Vec<String> = (0..PROGRESS_FILES_MAX + 7)
            .map(|i| format!("{i}/{}", "é".repeat(PROGRESS_FILE_BYTES_MAX)))
            .collect();
        let action = ProgressAction::bounded(
            ExecutionStage::Coding,
            "a".repeat(crate::agent_process::structured::ACTION_BYTES_MAX),
            &files,
        );
        assert_eq!(action.files_modified.len(), PROGRESS_FILES_MAX);
        assert_eq!(action.files_omitted, 7);
        assert!(action.files_modified.iter().all(|p| p.ends_with('…')));
        assert_eq!(action.check(), Ok(()));
        let encoded = codec::encode(&action).unwrap_or_default();
        assert_eq!(ProgressAction::decode(&encoded).ok(), Some(action.clone()));

        let mut too_many = action.clone();
        too_many.files_modified.push("one more".into());
        assert_eq!(
            too_many.check(),
            Err(ProgressLimitError::TooManyFiles {
                count: PROGRESS_FILES_MAX + 1
            })
        );
        let mut too_long = action;
        too_long.files_modified[0] = "x".repeat(PROGRESS_FILE_BYTES_MAX + 1);
        assert!(matches!(
            too_long.check(),
            Err(ProgressLimitError::PathTooLong { .. })
        ));
    }

    #[test]
    fn older_senders_reports_decode_with_defaults() {
        #[derive(Serialize)]
        struct OldAction {
            stage: ExecutionStage,
            action: String,
        }
        #[derive(Serialize)]
        struct OldLine {
            stream: &'static str,
            line: &'static str,
            at_ms: i64,
        }
        let old = codec::encode(&OldAction {
            stage: ExecutionStage::Testing,
            action: "Running cargo test".into(),
        })
        .unwrap_or_default();
        let action = ProgressAction::decode(&old).ok();
        assert_eq!(
            action.map(|a| (a.files_modified, a.files_omitted)),
            Some((vec![], 0))
        );
        let old_lines = codec::encode(&vec![
            OldLine {
                stream: "agent",
                line: "I will",
                at_ms: 1,
            },
            OldLine {
                stream: "stderr",
                line: "warning",
                at_ms: 2,
            },
            OldLine {
                stream: "stdout",
                line: "ok",
                at_ms: 3,
            },
        ])
        .unwrap_or_default();
        let types: Vec<LogType> = <Vec<LogLine>>::decode(&old_lines)
            .unwrap_or_default()
            .iter()
            .map(|l| l.log_type)
            .collect();
        assert_eq!(types, [LogType::Agent, LogType::Stderr, LogType::Stdout]);
        // As the seed writes them.
        assert_eq!(
            serde_json::to_string(&[LogType::Stdout, LogType::Stderr, LogType::Agent]).ok(),
            Some(r#"["Stdout","Stderr","Agent"]"#.to_string())
        );
    }
}
