//! Git operations for task execution.
//!
//! Every operation shells out to the real `git` binary with an explicit argv (never a
//! shell), with `GIT_TERMINAL_PROMPT=0` (never ask for credentials), the system config
//! ignored, `core.hooksPath=/dev/null` (repository hooks never run), `core.fsmonitor=false`
//! (no configured monitor command runs) and a fixed identity for the rare command that
//! needs one. Output read from git is bounded: stderr is cut to [`STDERR_BYTES_MAX`] for
//! error messages, and a diff is read only up to its limit (the rest is counted, not kept).
//!
//! The life of a task's repository:
//! - originator: [`resolve_commit`] (branch or commit → full id), [`root_commit`] (the
//!   repository's identity), [`create_bundle_missing`] (the commit and the history the
//!   executor lacks, to send to it);
//! - executor: the [`RepoCache`] (`cache.rs`: what it has of each originator's
//!   repositories, the bundle fetched into it, a workspace borrowing its objects), or
//!   [`checkout_workspace`] (a fresh clone from a bundle or a local path), the agent runs, [`diff_against_base`] (its work, new and deleted files
//!   included, bounded), [`result_hash`], [`remove_workspace`];
//! - originator again: [`apply_check`] ([`check_diff_paths`], then `git apply --check` in a
//!   scratch clone: the user's working tree is never touched), optionally
//!   [`apply_and_verify`] (the task's own verify command on the patched scratch checkout).
//!
//! [`check_diff_paths`] is pure and conservative: a diff from the network that could write
//! outside the repository, into a `.git` directory, or create or retarget a symbolic link or
//! a submodule is refused before git sees it (git's own checks are the second line).
//!
//! Layout: `git.rs` runs git (hardening, bounded output, reference checks), `repo.rs` holds
//! the repository operations of a run, `cache.rs` the executor's repository cache,
//! `diff_paths.rs` the pure path checker of a diff from
//! the network, `verify.rs` the scratch clones that check and verify a diff, `status.rs`
//! what a run has changed so far (the executor's workspace watcher).

mod cache;
mod diff_paths;
mod git;
mod repo;
pub mod status;
mod verify;

use std::path::{Path, PathBuf};

pub use cache::{CacheLease, RepoCache, cache_key, lru_victims};
pub use diff_paths::check_diff_paths;
pub use git::check_reference;
pub use repo::{
    DiffResult, RepoSource, checkout_workspace, create_bundle, create_bundle_missing,
    diff_against_base, remove_workspace, resolve_commit, result_hash, root_commit,
};
pub use verify::{apply_and_verify, apply_check};

/// Most stderr kept in an error message, in bytes.
pub const STDERR_BYTES_MAX: usize = 2048;

/// A git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The `git` binary (or a verify shell) could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line tried, e.g. `git clone`.
        command: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// git ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Git {
        /// The git command line that failed.
        command: String,
        /// Its exit status as text, e.g. `exit status: 128`.
        status: String,
        /// Its stderr, cut at [`STDERR_BYTES_MAX`] bytes.
        stderr: String,
    },
    /// A reference or commit name that is not acceptable or does not resolve.
    #[error("invalid reference {reference:?}: {reason}")]
    BadReference {
        /// The name as given (truncated if long).
        reference: String,
        /// Why it was refused, e.g. starts with `-` or does not resolve.
        reason: String,
    },
    /// The commit is not in the cloned repository (or bundle).
    #[error("commit {commit} is not in {source_path}")]
    CommitMissing {
        /// The commit asked for.
        commit: String,
        /// The repository or bundle that was searched.
        source_path: String,
    },
    /// The workspace directory exists and is not empty.
    #[error("workspace {0} already exists and is not empty")]
    WorkspaceNotFresh(PathBuf),
    /// The diff is over the configured limit.
    #[error(
        "diff of {bytes} bytes is over the {limit} byte limit (executor.diff_bytes_max, within executor.result_bytes_max)"
    )]
    DiffTooLarge {
        /// Size of the diff (or name list) git produced, in bytes.
        bytes: usize,
        /// The limit in bytes (`executor.diff_bytes_max`, at most `result_bytes_max` less
        /// room for the summary and file list).
        limit: usize,
    },
    /// The diff touches a path outside the repository, a `.git` directory, or creates a
    /// symbolic link or submodule.
    #[error("diff refused: {reason}: {line:?}")]
    UnsafeDiff {
        /// Which rule the diff broke, e.g. `creates a symbolic link or submodule`.
        reason: &'static str,
        /// The offending diff line, cut at 256 bytes.
        line: String,
    },
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted, e.g. `create` or `read`.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError {
    let path = path.to_path_buf();
    move |source| WorkspaceError::Io {
        action,
        path,
        source,
    }
}

/// `text` cut to at most `bytes_max` bytes on a character boundary, with a marker.
fn truncate_text(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_string();
    }
    let mut end = bytes_max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

/// An absolute form of `path`, so git never reads it as an option.
fn absolute(path: &Path) -> Result<PathBuf, WorkspaceError> {
    std::path::absolute(path).map_err(io_error("resolve", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_text("abc", 3), "abc");
        assert!(truncate_text("ééé", 3).starts_with("é…"));
    }
}
