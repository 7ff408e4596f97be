//! The git runner: every git command of this module is built by [`git_command`] (explicit
//! argv, no prompt, no system config, no hooks, no fsmonitor, a fixed identity) and run by
//! [`run_git_bounded`], which keeps a bounded stdout and stderr. Also the checks on the
//! reference and commit names handed to git.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{STDERR_BYTES_MAX, WorkspaceError, io_error, truncate_text};

/// Most stdout kept from a git command whose output is not a diff (ids, ref names), in bytes.
pub(super) const SMALL_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Longest reference or commit name accepted, in bytes.
const REFERENCE_BYTES_MAX: usize = 256;
/// The identity of the rare git command that records one.
const GIT_IDENTITY: [&str; 4] = [
    "user.name=APN executor",
    "user.email=executor@apn.invalid",
    "committer.name=APN executor",
    "committer.email=executor@apn.invalid",
];

/// A `git` command in `dir` with the hardening every call shares.
fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_NAMESPACE")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "advice.detachedHead=false",
        ]);
    for setting in GIT_IDENTITY {
        command.args(["-c", setting]);
    }
    command
}

/// What a bounded git run produced.
pub(super) struct GitOutput {
    /// At most the requested number of bytes of stdout.
    pub(super) stdout: Vec<u8>,
    /// Every byte git wrote to stdout, kept or not.
    pub(super) stdout_bytes: u64,
}

/// Run `git <args>` in `dir`, feeding `stdin` if given, keeping at most `stdout_max` bytes of
/// stdout (the rest is read and counted so git never blocks) and a bounded stderr.
pub(super) fn run_git_bounded(
    dir: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    stdout_max: usize,
) -> Result<GitOutput, WorkspaceError> {
    let command_text = format!("git {}", truncate_text(&args.join(" "), 512));
    let mut child = git_command(dir)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| WorkspaceError::Spawn {
            command: command_text.clone(),
            source,
        })?;
    let child_stdin = child.stdin.take();
    let child_stdout = child.stdout.take();
    let child_stderr = child.stderr.take();
    let (read, stderr) = std::thread::scope(|scope| {
        // stdin and stderr on their own threads: git may fill one pipe while we wait on
        // another.
        if let (Some(mut pipe), Some(bytes)) = (child_stdin, stdin) {
            scope.spawn(move || {
                // A git that exits early closes the pipe: its status says why.
                let _ = pipe.write_all(bytes);
            });
        }
        let stderr = scope.spawn(move || {
            let mut kept = Vec::new();
            if let Some(pipe) = child_stderr {
                let mut pipe = pipe;
                let _ = (&mut pipe)
                    .take(STDERR_BYTES_MAX as u64)
                    .read_to_end(&mut kept);
                let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            }
            kept
        });
        let read = child_stdout
            .map(|pipe| {
                let mut pipe = pipe;
                let mut kept = Vec::new();
                (&mut pipe).take(stdout_max as u64).read_to_end(&mut kept)?;
                let rest = std::io::copy(&mut pipe, &mut std::io::sink())?;
                Ok::<_, std::io::Error>((kept.len() as u64 + rest, kept))
            })
            .unwrap_or_else(|| Ok((0, Vec::new())));
        (read, stderr.join().unwrap_or_default())
    });
    if read.is_err() {
        // We stopped reading: git could block on a full pipe forever.
        let _ = child.kill();
    }
    let status = child.wait().map_err(|source| WorkspaceError::Spawn {
        command: command_text.clone(),
        source,
    })?;
    let (stdout_bytes, stdout) = read.map_err(io_error("read the output of git in", dir))?;
    if !status.success() {
        return Err(WorkspaceError::Git {
            command: command_text,
            status: status.to_string(),
            stderr: truncate_text(String::from_utf8_lossy(&stderr).trim(), STDERR_BYTES_MAX),
        });
    }
    Ok(GitOutput {
        stdout,
        stdout_bytes,
    })
}

/// Run a git command whose output is small (ids, names); returns its stdout.
pub(super) fn run_git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
    Ok(run_git_bounded(dir, args, None, SMALL_OUTPUT_BYTES_MAX)?.stdout)
}

/// Refuse names git could take for an option, and absurd ones.
pub fn check_reference(reference: &str) -> Result<(), WorkspaceError> {
    let reason = if reference.is_empty() {
        "empty"
    } else if reference.starts_with('-') {
        "starts with '-'"
    } else if reference.len() > REFERENCE_BYTES_MAX {
        "too long"
    } else if reference
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        "contains whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(WorkspaceError::BadReference {
        reference: truncate_text(reference, REFERENCE_BYTES_MAX),
        reason: reason.into(),
    })
}

/// The full commit id `commit` names in `repo`, or `CommitMissing`.
pub(super) fn rev_parse_commit(
    repo: &Path,
    commit: &str,
    source: &Path,
) -> Result<String, WorkspaceError> {
    let spec = format!("{commit}^{{commit}}");
    match run_git(repo, &["rev-parse", "--verify", "--quiet", &spec]) {
        Ok(out) => Ok(String::from_utf8_lossy(&out).trim().to_string()),
        Err(WorkspaceError::Git { .. }) => Err(WorkspaceError::CommitMissing {
            commit: commit.to_string(),
            source_path: source.display().to_string(),
        }),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_that_look_like_options_are_refused() {
        for bad in ["", "-n", "--upload-pack=evil", "a b", "main\n"] {
            assert!(check_reference(bad).is_err(), "{bad:?}");
        }
        check_reference("main").unwrap();
        check_reference("0123456789abcdef0123456789abcdef01234567").unwrap();
    }
}
