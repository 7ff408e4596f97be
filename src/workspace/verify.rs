//! Checking a diff against the user's repository without touching it: [`apply_check`]
//! (`git apply --check` in a scratch clone sharing the objects) and [`apply_and_verify`]
//! (the diff applied to a scratch checkout with its own objects, and the task's verify
//! command run there, optionally sandboxed, in its own process group, with a timeout).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::sandbox::{self, SandboxLimits, SandboxNetwork, SandboxPolicy};

use super::diff_paths::check_diff_paths;
use super::git::{
    SMALL_OUTPUT_BYTES_MAX, check_reference, rev_parse_commit, run_git, run_git_bounded,
};
use super::repo::prepare_fresh_dir;
use super::{WorkspaceError, absolute, io_error};

/// How often a verify command is polled for exit.
const VERIFY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Variables a verify command gets from the node's environment (the rest is cleared, so the
/// node's tokens and keys never reach code written by a remote agent).
const VERIFY_PASS_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TERM",
];

/// How a scratch clone gets its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScratchObjects {
    /// Borrowed from the source through `alternates`: only for git's own checks, which
    /// never write an object.
    Shared,
    /// Copied (`--no-hardlinks`): for running code a remote agent wrote, which must not
    /// reach the user's object store through a shared file or inode.
    Copied,
}

/// A scratch clone of `repo`, with the index (and, if `with_files`, the working tree) at
/// `base_commit`.
fn scratch_clone(
    repo: &Path,
    base_commit: &str,
    with_files: bool,
    objects: ScratchObjects,
) -> Result<(tempfile::TempDir, PathBuf), WorkspaceError> {
    check_reference(base_commit)?;
    let scratch = tempfile::Builder::new()
        .prefix("apn-scratch-")
        .tempdir()
        .map_err(io_error(
            "create a scratch directory in",
            &std::env::temp_dir(),
        ))?;
    let dir = scratch.path().join("repo");
    prepare_fresh_dir(&dir)?;
    let source = absolute(repo)?;
    let from = source.to_string_lossy();
    let sharing = match objects {
        ScratchObjects::Shared => "--shared",
        ScratchObjects::Copied => "--no-hardlinks",
    };
    run_git(
        &dir,
        &["clone", "--quiet", "--no-checkout", sharing, &from, "."],
    )?;
    let full = rev_parse_commit(&dir, base_commit, &source)?;
    if with_files {
        run_git(&dir, &["checkout", "--quiet", "--detach", &full])?;
    } else {
        run_git(&dir, &["read-tree", &full])?;
    }
    Ok((scratch, dir))
}

/// Check the paths ([`check_diff_paths`]), then that the diff applies cleanly to
/// `base_commit` of `repo` (`git apply --check --cached`, the diff on stdin, in a scratch
/// clone whose index is at the base: the user's repository and working tree are never
/// touched). An empty diff applies.
pub fn apply_check(repo: &Path, base_commit: &str, diff: &str) -> Result<(), WorkspaceError> {
    check_diff_paths(diff)?;
    if diff.trim().is_empty() {
        return Ok(());
    }
    let (_scratch, dir) = scratch_clone(repo, base_commit, false, ScratchObjects::Shared)?;
    run_git_bounded(
        &dir,
        &["apply", "--check", "--cached", "--whitespace=nowarn", "-"],
        Some(diff.as_bytes()),
        SMALL_OUTPUT_BYTES_MAX,
    )?;
    Ok(())
}

/// Apply the diff to a scratch checkout of `base_commit` and run `verify_command` there.
/// True when it exits 0 within `timeout`; false when it fails or runs out of time.
///
/// The command runs with `sh -c` (it is a shell line the task's own originator wrote, e.g.
/// `cargo test && ./check.sh`, never text from the network), but it runs code a remote
/// agent wrote (`build.rs`, `conftest.py`, npm scripts). So the scratch checkout has its
/// own copy of the objects (nothing writable is shared with the user's repository), and
/// with `sandbox` limits the command runs in [`crate::sandbox`]: the scratch checkout, a
/// fresh `HOME` and temp dir writable, its `.git` read-only, no network. It runs in its own
/// process group that is killed when it ends or times out, with stdin and output
/// discarded and an environment cleared down to [`VERIFY_PASS_ENV`].
/// Blocking: call it from a blocking thread.
pub fn apply_and_verify(
    repo: &Path,
    base_commit: &str,
    diff: &str,
    verify_command: &str,
    timeout: Duration,
    sandbox: Option<SandboxLimits>,
) -> Result<bool, WorkspaceError> {
    check_diff_paths(diff)?;
    let (scratch, dir) = scratch_clone(repo, base_commit, true, ScratchObjects::Copied)?;
    if !diff.trim().is_empty() {
        run_git_bounded(
            &dir,
            &["apply", "--whitespace=nowarn", "-"],
            Some(diff.as_bytes()),
            SMALL_OUTPUT_BYTES_MAX,
        )?;
    }
    let mut command = Command::new("sh");
    command
        .args(["-c", verify_command])
        .current_dir(&dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    for name in VERIFY_PASS_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    if let Some(limits) = sandbox {
        let home = scratch.path().join("home");
        let tmp = scratch.path().join("tmp");
        for private in [&home, &tmp] {
            std::fs::create_dir(private).map_err(io_error("create", private))?;
        }
        command.env("HOME", &home).env("TMPDIR", &tmp);
        let policy = SandboxPolicy {
            writable_dirs: vec![dir.clone(), home, tmp],
            read_only_paths: Vec::new(),
            read_only_binds: vec![dir.join(".git")],
            network: SandboxNetwork::None,
            limits,
        };
        sandbox::apply(&mut command, &policy).map_err(|e| WorkspaceError::Spawn {
            command: "sh -c <verify command> in the sandbox".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    let mut child = command.spawn().map_err(|source| WorkspaceError::Spawn {
        command: "sh -c <verify command>".into(),
        source,
    })?;
    let group = child.id() as i32;
    let kill_group = || {
        // SAFETY: killpg only sends a signal; the group is the child's own (process_group(0)),
        // whose id stays reserved until the child is reaped below.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    };
    // A timeout too large for the clock never expires.
    let deadline = Instant::now().checked_add(timeout);
    let passed = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.success(),
            Ok(None) if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                tracing::info!(?timeout, "verify command timed out");
                break false;
            }
            Ok(None) => std::thread::sleep(VERIFY_POLL_INTERVAL),
            Err(e) => {
                kill_group();
                let _ = child.wait();
                return Err(io_error("wait for the verify command in", &dir)(e));
            }
        }
    };
    // Stray background processes of the verify command do not outlive it. The group id is
    // still ours: try_wait reaped the leader only if it exited, and then every process left
    // in the group keeps the id reserved.
    kill_group();
    let _ = child.wait();
    Ok(passed)
}
