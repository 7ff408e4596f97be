//! Git operations for task execution, shelling out to the real `git` with explicit argv
//! (never a shell), hooks disabled and prompts off: resolving the base commit, bundling it
//! for transfer, checking it out into a fresh workspace, diffing the agent's work against
//! the base (new files included), and checking that a diff applies to the original.
//! `check_diff_paths` (pure) refuses diffs that reach outside the repository.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Most stderr kept in an error message.
const STDERR_BYTES_MAX: usize = 2048;

/// A git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("git {command} failed: {stderr}")]
    Git { command: String, stderr: String },
    #[error("invalid reference {0:?}")]
    BadReference(String),
    #[error("diff of {bytes} bytes is over the {limit} byte limit")]
    DiffTooLarge { bytes: usize, limit: usize },
    #[error("diff touches a path outside the repository: {0}")]
    UnsafePath(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "user.name=APN executor",
            "-c",
            "user.email=executor@apn.invalid",
            "-c",
            "advice.detachedHead=false",
        ])
        .stdin(Stdio::null());
    command
}

fn run_git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    let output = git_command(dir)
        .args(args)
        .output()
        .map_err(WorkspaceError::Spawn)?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        stderr.truncate(STDERR_BYTES_MAX);
        return Err(WorkspaceError::Git {
            command: args.join(" "),
            stderr,
        });
    }
    Ok(output.stdout)
}

/// A commit or branch name → the full commit id.
pub fn resolve_commit(repo: &Path, base: &str) -> Result<String, WorkspaceError> {
    if base.is_empty() || base.starts_with('-') || base.len() > 256 {
        return Err(WorkspaceError::BadReference(base.to_string()));
    }
    let spec = format!("{base}^{{commit}}");
    let out = run_git(repo, &["rev-parse", "--verify", "--quiet", &spec])
        .map_err(|_| WorkspaceError::BadReference(base.to_string()))?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
}

/// Write a git bundle holding `commit` and its history; returns its size in bytes.
pub fn create_bundle(repo: &Path, commit: &str, bundle_path: &Path) -> Result<u64, WorkspaceError> {
    let reference = format!("refs/apn/bundle-{}", uuid::Uuid::new_v4().simple());
    run_git(repo, &["update-ref", &reference, commit])?;
    let path = bundle_path.display().to_string();
    let result = run_git(repo, &["bundle", "create", "--quiet", &path, &reference]);
    let _ = run_git(repo, &["update-ref", "-d", &reference]);
    result?;
    Ok(std::fs::metadata(bundle_path)?.len())
}

/// Where a workspace is cloned from.
pub enum RepoSource<'a> {
    Bundle(&'a Path),
    LocalPath(&'a Path),
}

/// Clone into a fresh `workspace` at `commit` (detached).
pub fn checkout_workspace(
    source: RepoSource<'_>,
    commit: &str,
    workspace: &Path,
) -> Result<(), WorkspaceError> {
    if commit.starts_with('-') {
        return Err(WorkspaceError::BadReference(commit.to_string()));
    }
    let from = match source {
        RepoSource::Bundle(path) | RepoSource::LocalPath(path) => path.display().to_string(),
    };
    std::fs::create_dir_all(workspace)?;
    run_git(workspace, &["init", "--quiet"])?;
    // Every ref of the source (a bundle holds only its own `refs/apn/…` ref, which a plain
    // clone would not fetch), kept under a private namespace.
    run_git(
        workspace,
        &[
            "fetch",
            "--quiet",
            "--no-tags",
            &from,
            "+refs/*:refs/apn-source/*",
        ],
    )?;
    run_git(workspace, &["checkout", "--quiet", "--detach", commit])?;
    Ok(())
}

/// The agent's work: diff against the base including new and deleted files.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffResult {
    pub diff: String,
    pub files_modified: Vec<String>,
    pub bytes: usize,
}

fn read_capped(mut command: Command, limit: usize) -> Result<Vec<u8>, WorkspaceError> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(WorkspaceError::Spawn)?;
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        stdout.take(limit as u64 + 1).read_to_end(&mut out)?;
    }
    if out.len() > limit {
        let _ = child.kill();
        let _ = child.wait();
        return Err(WorkspaceError::DiffTooLarge {
            bytes: out.len(),
            limit,
        });
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        stderr.truncate(STDERR_BYTES_MAX);
        return Err(WorkspaceError::Git {
            command: "diff".into(),
            stderr,
        });
    }
    Ok(out)
}

/// Stage everything (new files too) and diff it against `base_commit`.
pub fn diff_against_base(
    workspace: &Path,
    base_commit: &str,
    diff_bytes_max: usize,
) -> Result<DiffResult, WorkspaceError> {
    run_git(workspace, &["add", "-A"])?;
    let mut command = git_command(workspace);
    command.args([
        "diff",
        "--cached",
        "--binary",
        "--no-color",
        "--no-ext-diff",
        base_commit,
    ]);
    let diff = read_capped(command, diff_bytes_max)?;
    let names = run_git(
        workspace,
        &["diff", "--cached", "--name-only", "-z", base_commit],
    )?;
    let files_modified = names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).to_string())
        .collect();
    let diff = String::from_utf8_lossy(&diff).to_string();
    Ok(DiffResult {
        bytes: diff.len(),
        diff,
        files_modified,
    })
}

fn unsafe_path(path: &str) -> bool {
    let path = path.trim();
    let path = path
        .strip_prefix("a/")
        .or_else(|| path.strip_prefix("b/"))
        .unwrap_or(path);
    path.starts_with('/')
        || path.split('/').any(|part| part == ".." || part == ".git")
        || path.starts_with(".git")
}

/// Refuse diffs that write outside the repository, into `.git`, or create symlinks.
pub fn check_diff_paths(diff: &str) -> Result<(), WorkspaceError> {
    for line in diff.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            for part in rest.split(' ') {
                if unsafe_path(part) {
                    return Err(WorkspaceError::UnsafePath(part.to_string()));
                }
            }
        } else if let Some(path) = line
            .strip_prefix("+++ ")
            .or_else(|| line.strip_prefix("--- "))
        {
            if path != "/dev/null" && unsafe_path(path) {
                return Err(WorkspaceError::UnsafePath(path.to_string()));
            }
        } else if let Some(path) = line
            .strip_prefix("rename to ")
            .or_else(|| line.strip_prefix("rename from "))
            .or_else(|| line.strip_prefix("copy to "))
            .or_else(|| line.strip_prefix("copy from "))
        {
            if unsafe_path(path) {
                return Err(WorkspaceError::UnsafePath(path.to_string()));
            }
        } else if line.starts_with("new file mode 120000") || line.starts_with("new mode 120000") {
            return Err(WorkspaceError::UnsafePath("symbolic link".into()));
        }
    }
    Ok(())
}

fn scratch_checkout(repo: &Path, base_commit: &str) -> Result<tempfile::TempDir, WorkspaceError> {
    let scratch = tempfile::Builder::new().prefix("apn-verify-").tempdir()?;
    let target = scratch.path().join("repo");
    checkout_workspace(RepoSource::LocalPath(repo), base_commit, &target)?;
    Ok(scratch)
}

fn apply(dir: &Path, diff: &str, check_only: bool) -> Result<(), WorkspaceError> {
    let mut command = git_command(dir);
    command.arg("apply");
    if check_only {
        command.arg("--check");
    }
    command.arg("-");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(WorkspaceError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(diff.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        stderr.truncate(STDERR_BYTES_MAX);
        return Err(WorkspaceError::Git {
            command: "apply".into(),
            stderr,
        });
    }
    Ok(())
}

/// Check the paths, then that the diff applies cleanly to `base_commit` of `repo` (in a
/// scratch checkout: the user's working tree is never touched).
pub fn apply_check(repo: &Path, base_commit: &str, diff: &str) -> Result<(), WorkspaceError> {
    check_diff_paths(diff)?;
    if diff.trim().is_empty() {
        return Ok(());
    }
    let scratch = scratch_checkout(repo, base_commit)?;
    apply(&scratch.path().join("repo"), diff, true)
}

/// Apply the diff to a scratch checkout and run `verify_command` there with `sh -c` (the
/// command is the originator's own, from its task, never from the network). True when it
/// exits 0 within `timeout`.
pub fn apply_and_verify(
    repo: &Path,
    base_commit: &str,
    diff: &str,
    verify_command: &str,
    timeout: Duration,
) -> Result<bool, WorkspaceError> {
    check_diff_paths(diff)?;
    let scratch = scratch_checkout(repo, base_commit)?;
    let dir = scratch.path().join("repo");
    if !diff.trim().is_empty() {
        apply(&dir, diff, false)?;
    }
    let mut child = Command::new("sh")
        .args(["-c", verify_command])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(WorkspaceError::Spawn)?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SHA-256 (hex) of a result: each part length-prefixed, so no two results share a hash.
pub fn result_hash(diff: &str, summary: &str, files: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"apn-result-v1");
    for part in [diff, summary] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.update((files.len() as u64).to_be_bytes());
    for file in files {
        hasher.update((file.len() as u64).to_be_bytes());
        hasher.update(file.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Remove a workspace or file, best effort.
pub fn remove_workspace(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove workspace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_diffs_are_refused() {
        let ok = "diff --git a/src/x.rs b/src/x.rs\n--- a/src/x.rs\n+++ b/src/x.rs\n@@ -1 +1 @@\n-a\n+b\n";
        assert!(check_diff_paths(ok).is_ok());
        for bad in [
            "diff --git a/../evil b/../evil\n",
            "--- /dev/null\n+++ b/../../etc/passwd\n",
            "diff --git a//etc/passwd b//etc/passwd\n",
            "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\n",
            "diff --git a/link b/link\nnew file mode 120000\n",
            "rename to ../outside\n",
        ] {
            assert!(check_diff_paths(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn result_hash_separates_fields() {
        assert_ne!(result_hash("ab", "c", &[]), result_hash("a", "bc", &[]));
        assert_ne!(
            result_hash("", "", &["a".into(), "b".into()]),
            result_hash("", "", &["ab".into()])
        );
    }
}
