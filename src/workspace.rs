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
//! - originator: [`resolve_commit`] (branch or commit → full id), [`create_bundle`] (the
//!   commit and its history, to send to the executor);
//! - executor: [`checkout_workspace`] (a fresh clone at the commit, from the bundle or a
//!   local path), the agent runs, [`diff_against_base`] (its work, new and deleted files
//!   included, bounded), [`result_hash`], [`remove_workspace`];
//! - originator again: [`apply_check`] ([`check_diff_paths`], then `git apply --check` in a
//!   scratch clone: the user's working tree is never touched), optionally
//!   [`apply_and_verify`] (the task's own verify command on the patched scratch checkout).
//!
//! [`check_diff_paths`] is pure and conservative: a diff from the network that could write
//! outside the repository, into a `.git` directory, or create or retarget a symbolic link or
//! a submodule is refused before git sees it (git's own checks are the second line).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::sandbox::{self, SandboxLimits, SandboxNetwork, SandboxPolicy};

/// Most stderr kept in an error message, in bytes.
pub const STDERR_BYTES_MAX: usize = 2048;
/// Most stdout kept from a git command whose output is not a diff (ids, ref names), in bytes.
const SMALL_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// Longest reference or commit name accepted, in bytes.
const REFERENCE_BYTES_MAX: usize = 256;
/// How often a verify command is polled for exit.
const VERIFY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Variables a verify command gets from the node's environment (the rest is cleared, so the
/// node's tokens and keys never reach code written by a remote agent).
const VERIFY_PASS_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "TERM",
];
/// The identity of the rare git command that records one.
const GIT_IDENTITY: [&str; 4] = [
    "user.name=APN executor",
    "user.email=executor@apn.invalid",
    "committer.name=APN executor",
    "committer.email=executor@apn.invalid",
];

/// A git operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The `git` binary (or a verify shell) could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// git ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Git {
        command: String,
        status: String,
        stderr: String,
    },
    /// A reference or commit name that is not acceptable or does not resolve.
    #[error("invalid reference {reference:?}: {reason}")]
    BadReference { reference: String, reason: String },
    /// The commit is not in the cloned repository (or bundle).
    #[error("commit {commit} is not in {source_path}")]
    CommitMissing { commit: String, source_path: String },
    /// The workspace directory exists and is not empty.
    #[error("workspace {0} already exists and is not empty")]
    WorkspaceNotFresh(PathBuf),
    /// The diff is over the configured limit.
    #[error("diff of {bytes} bytes is over the {limit} byte limit")]
    DiffTooLarge { bytes: usize, limit: usize },
    /// The diff touches a path outside the repository, a `.git` directory, or creates a
    /// symbolic link or submodule.
    #[error("diff refused: {reason}: {line:?}")]
    UnsafeDiff { reason: &'static str, line: String },
    /// A file system operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
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
struct GitOutput {
    /// At most the requested number of bytes of stdout.
    stdout: Vec<u8>,
    /// Every byte git wrote to stdout, kept or not.
    stdout_bytes: u64,
}

/// Run `git <args>` in `dir`, feeding `stdin` if given, keeping at most `stdout_max` bytes of
/// stdout (the rest is read and counted so git never blocks) and a bounded stderr.
fn run_git_bounded(
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
fn run_git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, WorkspaceError> {
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

/// An absolute form of `path`, so git never reads it as an option.
fn absolute(path: &Path) -> Result<PathBuf, WorkspaceError> {
    std::path::absolute(path).map_err(io_error("resolve", path))
}

/// The full commit id `commit` names in `repo`, or `CommitMissing`.
fn rev_parse_commit(repo: &Path, commit: &str, source: &Path) -> Result<String, WorkspaceError> {
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

/// A commit or branch name → the full commit id (`git rev-parse --verify <base>^{commit}`).
pub fn resolve_commit(repo: &Path, base: &str) -> Result<String, WorkspaceError> {
    check_reference(base)?;
    rev_parse_commit(repo, base, repo).map_err(|e| match e {
        WorkspaceError::CommitMissing { .. } => WorkspaceError::BadReference {
            reference: base.to_string(),
            reason: format!("not a commit in {}", repo.display()),
        },
        other => other,
    })
}

/// Write a git bundle holding `commit` (a commit id or any name of one) and its history to
/// `bundle_path`; returns the bundle's size in bytes. A bundle needs a ref: a temporary
/// `refs/apn/bundle-<random>` points at the commit while the bundle is written and is
/// deleted afterwards, whatever happened.
pub fn create_bundle(repo: &Path, commit: &str, bundle_path: &Path) -> Result<u64, WorkspaceError> {
    let commit = resolve_commit(repo, commit)?;
    let bundle_path = absolute(bundle_path)?;
    let reference = format!("refs/apn/bundle-{}", uuid::Uuid::new_v4().simple());
    run_git(repo, &["update-ref", &reference, &commit])?;
    let path = bundle_path.to_string_lossy();
    let created = run_git(repo, &["bundle", "create", "--quiet", &path, &reference]);
    if let Err(e) = run_git(repo, &["update-ref", "-d", &reference]) {
        tracing::warn!(repo = %repo.display(), %reference, error = %e, "cannot delete a temporary ref");
    }
    created?;
    let metadata = std::fs::metadata(&bundle_path).map_err(io_error("read", &bundle_path))?;
    Ok(metadata.len())
}

/// Where a workspace is cloned from.
#[derive(Debug, Clone, Copy)]
pub enum RepoSource<'a> {
    /// A bundle file written by [`create_bundle`] (typically received from a peer).
    Bundle(&'a Path),
    /// A repository on a disk this node shares with the originator.
    LocalPath(&'a Path),
}

/// Refuse a workspace that exists and holds anything; create it (and its parents).
fn prepare_fresh_dir(workspace: &Path) -> Result<(), WorkspaceError> {
    match std::fs::read_dir(workspace) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(WorkspaceError::WorkspaceNotFresh(workspace.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(workspace).map_err(io_error("create", workspace))
        }
        Err(e) => Err(io_error("read", workspace)(e)),
    }
}

/// Clone `source` into the fresh directory `workspace` (created if missing, refused if not
/// empty) and check out `commit` detached, after verifying the commit is there.
///
/// A bundle is fetched into an empty repository (every ref of it, under `refs/apn-source/`,
/// since a bundle from [`create_bundle`] carries only its temporary ref). A local path is
/// cloned with `--no-hardlinks`: the agent then owns a private copy of the objects and can
/// never damage the source repository through a shared inode.
pub fn checkout_workspace(
    source: RepoSource<'_>,
    commit: &str,
    workspace: &Path,
) -> Result<(), WorkspaceError> {
    check_reference(commit)?;
    prepare_fresh_dir(workspace)?;
    let source_path = match source {
        RepoSource::Bundle(path) | RepoSource::LocalPath(path) => absolute(path)?,
    };
    let from = source_path.to_string_lossy();
    match source {
        RepoSource::Bundle(_) => {
            run_git(workspace, &["init", "--quiet"])?;
            run_git(
                workspace,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    &from,
                    "+refs/*:refs/apn-source/*",
                ],
            )?;
        }
        RepoSource::LocalPath(_) => {
            run_git(
                workspace,
                &[
                    "clone",
                    "--quiet",
                    "--no-checkout",
                    "--no-hardlinks",
                    &from,
                    ".",
                ],
            )?;
        }
    }
    let full = rev_parse_commit(workspace, commit, &source_path)?;
    run_git(workspace, &["checkout", "--quiet", "--detach", &full])?;
    Ok(())
}

/// The agent's work: its diff against the base, new and deleted files included.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffResult {
    /// `git diff --binary` text, applicable with `git apply` (`-p1`).
    pub diff: String,
    /// Every path added, modified or deleted, sorted as git lists them.
    pub files_modified: Vec<String>,
    /// `diff.len()`.
    pub bytes: usize,
}

/// `git diff --cached` of the staged workspace against `base`, at most `limit` bytes.
fn staged_diff(workspace: &Path, base: &str, limit: usize) -> Result<Vec<u8>, WorkspaceError> {
    let output = run_git_bounded(
        workspace,
        &[
            "diff",
            "--cached",
            "--binary",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--no-renames",
            "--unified=3",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            base,
            "--",
        ],
        None,
        limit,
    )?;
    if output.stdout_bytes > limit as u64 {
        return Err(WorkspaceError::DiffTooLarge {
            bytes: usize::try_from(output.stdout_bytes).unwrap_or(usize::MAX),
            limit,
        });
    }
    Ok(output.stdout)
}

/// Stage everything in `workspace` (new files and deletions too, `git add -A`) and diff it
/// against `base_commit`. At most `diff_bytes_max` bytes of diff are ever held; a larger
/// diff is `DiffTooLarge` with its exact size.
///
/// The format does not depend on the user's git config: three lines of context, `a/` and
/// `b/` prefixes, no colour, no external diff or textconv (and `git apply` here runs with
/// `--whitespace=nowarn`).
/// Renames are listed as a deletion and an addition (`--no-renames`), so `files_modified`
/// names both paths. A text file that is not UTF-8 would not survive the `String`: when
/// the diff is not UTF-8 it is made again with every file diffed as binary (a
/// `* -diff` line in the workspace's `.git/info/attributes`), which is ASCII and applies
/// the same way.
pub fn diff_against_base(
    workspace: &Path,
    base_commit: &str,
    diff_bytes_max: usize,
) -> Result<DiffResult, WorkspaceError> {
    check_reference(base_commit)?;
    run_git(workspace, &["add", "-A"])?;
    let diff = match String::from_utf8(staged_diff(workspace, base_commit, diff_bytes_max)?) {
        Ok(text) => text,
        Err(_) => binary_diff(workspace, base_commit, diff_bytes_max)?,
    };
    // Every name appears in the diff's headers, so the list is never longer than the diff;
    // the bound only guards against surprises.
    let names = run_git_bounded(
        workspace,
        &[
            "diff",
            "--cached",
            "--name-only",
            "-z",
            "--no-renames",
            base_commit,
            "--",
        ],
        None,
        diff_bytes_max,
    )?;
    if names.stdout_bytes > diff_bytes_max as u64 {
        return Err(WorkspaceError::DiffTooLarge {
            bytes: usize::try_from(names.stdout_bytes).unwrap_or(usize::MAX),
            limit: diff_bytes_max,
        });
    }
    let files_modified = names
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect();
    Ok(DiffResult {
        bytes: diff.len(),
        diff,
        files_modified,
    })
}

/// The staged diff with every file treated as binary (base85, so ASCII).
fn binary_diff(workspace: &Path, base: &str, limit: usize) -> Result<String, WorkspaceError> {
    let git_dir = PathBuf::from(
        String::from_utf8_lossy(&run_git(workspace, &["rev-parse", "--absolute-git-dir"])?).trim(),
    );
    let info = git_dir.join("info");
    let attributes = info.join("attributes");
    let previous = std::fs::read(&attributes).ok();
    std::fs::create_dir_all(&info).map_err(io_error("create", &info))?;
    std::fs::write(&attributes, b"* -diff\n").map_err(io_error("write", &attributes))?;
    let diff = staged_diff(workspace, base, limit);
    let restored = match previous {
        Some(bytes) => std::fs::write(&attributes, bytes),
        None => std::fs::remove_file(&attributes),
    };
    if let Err(e) = restored {
        tracing::warn!(path = %attributes.display(), error = %e, "cannot restore git attributes");
    }
    // Base85 and headers with quoted names: always ASCII.
    Ok(String::from_utf8_lossy(&diff?).into_owned())
}

/// Lines still expected in the current hunk, counted as `git apply` counts them.
#[derive(Default)]
struct HunkLines {
    old: u64,
    new: u64,
}

/// `@@ -12,3 +12,4 @@` → the line counts (a missing count is 1).
fn parse_hunk_header(line: &str) -> Option<HunkLines> {
    let rest = line.strip_prefix("@@ -")?;
    let (old_range, rest) = rest.split_once(" +")?;
    let (new_range, _) = rest.split_once(" @@")?;
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((start, count)) => {
                start.parse::<u64>().ok()?;
                count.parse().ok()
            }
            None => range.parse::<u64>().ok().map(|_| 1),
        }
    };
    Some(HunkLines {
        old: count(old_range)?,
        new: count(new_range)?,
    })
}

/// Decode a C-quoted git path (`"a/b\303\251"`, escapes `\a \b \t \n \v \f \r \" \\` and
/// octal `\ooo`), starting at the opening quote. Returns the bytes and the text after the
/// closing quote, or `None` if it is not well formed.
fn unquote_c_style(text: &str) -> Option<(Vec<u8>, &str)> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut index = 1;
    while index < bytes.len() {
        match bytes[index] {
            b'"' => return Some((out, &text[index + 1..])),
            b'\\' => {
                let escape = *bytes.get(index + 1)?;
                index += 2;
                let decoded = match escape {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 0x0b,
                    b'f' => 0x0c,
                    b'r' => b'\r',
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'0'..=b'3' => {
                        let digits = bytes.get(index - 1..index + 2)?;
                        if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                            return None;
                        }
                        index += 2;
                        digits.iter().fold(0u8, |value, d| value * 8 + (d - b'0'))
                    }
                    _ => return None,
                };
                out.push(decoded);
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    None
}

/// Why one path (as bytes) is unsafe, if it is: absolute, an empty, `..` or `.git`
/// component (any case), or a control character.
fn unsafe_path_reason(path: &[u8]) -> Option<&'static str> {
    if path == b"/dev/null" {
        return None;
    }
    if path.first() == Some(&b'/') {
        return Some("absolute path");
    }
    if path.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
        return Some("control character in a path");
    }
    // `a/` and `b/` are git's prefixes; an absolute path hides behind them as `a//etc`.
    let components: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
    for (index, component) in components.iter().enumerate() {
        if *component == b".." {
            return Some("path outside the repository");
        }
        if component.eq_ignore_ascii_case(b".git") {
            return Some("path into a .git directory");
        }
        if component.is_empty() && index + 1 < components.len() {
            return Some("empty path component");
        }
    }
    None
}

/// Check every path-like token of a header line's `text`: quoted paths are decoded first;
/// unquoted text is split at whitespace (a name with spaces is checked piece by piece,
/// which can only refuse more).
fn check_header_paths(line: &str, text: &str) -> Result<(), WorkspaceError> {
    let refuse = |reason| WorkspaceError::UnsafeDiff {
        reason,
        line: truncate_text(line, 256),
    };
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(());
        }
        let token: Vec<u8>;
        if rest.starts_with('"') {
            let (decoded, after) =
                unquote_c_style(rest).ok_or_else(|| refuse("malformed quoted path"))?;
            token = decoded;
            rest = after;
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            token = rest.as_bytes()[..end].to_vec();
            rest = &rest[end..];
        }
        if let Some(reason) = unsafe_path_reason(&token) {
            return Err(refuse(reason));
        }
    }
}

/// Refuse a diff that could write outside the repository or plant something dangerous:
/// any path (in `diff --git`, `---`/`+++`, `rename`/`copy` headers) that is absolute, has a
/// `..`, `.git` (any case) or empty component; the creation of a symbolic link or submodule
/// (`new file mode 120000|160000`, `new mode …`) or a change to one (`index … 120000`).
///
/// Hunk bodies are skipped by their line counts exactly as `git apply` reads them, so file
/// content such as a removed line `-- ../x` is not taken for a header; any line inside a
/// hunk that git would not accept as hunk content is checked as a header. Pure: no I/O.
pub fn check_diff_paths(diff: &str) -> Result<(), WorkspaceError> {
    let mut hunk = HunkLines::default();
    for line in diff.split('\n') {
        if hunk.old > 0 || hunk.new > 0 {
            match line.as_bytes().first() {
                None | Some(b' ') => {
                    hunk.old = hunk.old.saturating_sub(1);
                    hunk.new = hunk.new.saturating_sub(1);
                    continue;
                }
                Some(b'-') => {
                    hunk.old = hunk.old.saturating_sub(1);
                    continue;
                }
                Some(b'+') => {
                    hunk.new = hunk.new.saturating_sub(1);
                    continue;
                }
                Some(b'\\') => continue,
                // git would call the patch corrupt; check the line as a header anyway.
                Some(_) => hunk = HunkLines::default(),
            }
        }
        if let Some(counts) = parse_hunk_header(line) {
            hunk = counts;
            continue;
        }
        check_header_line(line)?;
    }
    Ok(())
}

/// One line outside any hunk.
fn check_header_line(line: &str) -> Result<(), WorkspaceError> {
    let trimmed = line.trim_end_matches('\r');
    for prefix in [
        "diff --git ",
        "--- ",
        "+++ ",
        "rename from ",
        "rename to ",
        "copy from ",
        "copy to ",
        "rename old ",
        "rename new ",
    ] {
        if let Some(paths) = trimmed.strip_prefix(prefix) {
            return check_header_paths(line, paths);
        }
    }
    let special_mode = |mode: &str| mode == "120000" || mode == "160000";
    let refuse = |reason| {
        Err(WorkspaceError::UnsafeDiff {
            reason,
            line: truncate_text(line, 256),
        })
    };
    if let Some(mode) = trimmed
        .strip_prefix("new file mode ")
        .or_else(|| trimmed.strip_prefix("new mode "))
    {
        if special_mode(mode.trim()) {
            return refuse("creates a symbolic link or submodule");
        }
    } else if let Some(index) = trimmed.strip_prefix("index ")
        && index.split_whitespace().nth(1).is_some_and(special_mode)
    {
        return refuse("changes a symbolic link or submodule");
    }
    Ok(())
}

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

/// SHA-256 (lowercase hex) of a result, over this exact byte encoding:
/// `b"apn-result-v1"`, then `u64` big-endian byte length + UTF-8 bytes of `diff`, the same
/// for `summary`, then the number of files as `u64` big-endian, then each file as length +
/// bytes. Every part is length-prefixed, so two different results never share an encoding.
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

/// Remove a workspace directory (or a file such as a bundle), best effort: a failure is
/// logged as a warning, a missing path is fine. A symbolic link is removed, not followed.
pub fn remove_workspace(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove workspace");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAFE: &str = "diff --git a/src/x.rs b/src/x.rs\n\
        index 1111111..2222222 100644\n\
        --- a/src/x.rs\n\
        +++ b/src/x.rs\n\
        @@ -1,2 +1,2 @@\n\
        -- ../removed line of a Lua comment\n\
        +++ /etc/added line that looks like a header\n \
        context\n\
        diff --git a/new file.txt b/new file.txt\n\
        new file mode 100644\n\
        index 0000000..3333333\n\
        --- /dev/null\n\
        +++ b/new file.txt\n\
        @@ -0,0 +1 @@\n\
        +hello\n\
        \\ No newline at end of file\n\
        diff --git a/gone b/gone\n\
        deleted file mode 120000\n\
        index 4444444..0000000\n\
        --- a/gone\n\
        +++ /dev/null\n\
        @@ -1 +0,0 @@\n\
        -target\n";

    #[test]
    fn a_normal_diff_passes() {
        check_diff_paths(SAFE).unwrap();
        check_diff_paths("").unwrap();
        check_diff_paths("diff --git a/.github/x b/.github/x\n--- a/..x\n+++ b/..x\n").unwrap();
    }

    #[test]
    fn unsafe_diffs_are_refused() {
        for bad in [
            "diff --git a/../evil b/../evil\n",
            "--- /dev/null\n+++ b/../../etc/passwd\n",
            "--- /dev/null\n+++ /etc/passwd\n",
            "diff --git a//etc/passwd b//etc/passwd\n",
            "diff --git a/.git/hooks/pre-commit b/.git/hooks/pre-commit\n",
            "diff --git a/sub/.GIT/config b/sub/.GIT/config\n",
            "diff --git a/link b/link\nnew file mode 120000\n",
            "diff --git a/link b/link\nold mode 100644\nnew mode 120000\n",
            "diff --git a/link b/link\nindex 1111111..2222222 120000\n",
            "diff --git a/mod b/mod\nnew file mode 160000\n",
            "rename to ../outside\n",
            "copy from /etc/shadow\n",
            // Octal escapes hide a slash: "..\057evil" is "../evil".
            "diff --git \"a/..\\057evil\" \"b/..\\057evil\"\n",
            "rename to \"\\056\\056/x\"\n",
            "diff --git \"a/unterminated b/x\n",
            // A header after a hunk whose counts are used up.
            "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n--- a/y\n+++ b/../y\n",
            // A line git would not accept inside a hunk is checked as a header.
            "--- a/x\n+++ b/x\n@@ -1,5 +1,5 @@\n-a\ndiff --git a/../z b/../z\n",
        ] {
            assert!(
                matches!(
                    check_diff_paths(bad),
                    Err(WorkspaceError::UnsafeDiff { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn quoted_paths_decode() {
        assert_eq!(
            unquote_c_style("\"a\\303\\251 b\\\"c\" rest"),
            Some(("aé b\"c".as_bytes().to_vec(), " rest"))
        );
        assert_eq!(unquote_c_style("\"a\\9\""), None);
        assert_eq!(unquote_c_style("\"open"), None);
    }

    #[test]
    fn hunk_headers_parse() {
        let lines = parse_hunk_header("@@ -3,4 +3 @@ fn main").unwrap();
        assert_eq!((lines.old, lines.new), (4, 1));
        assert!(parse_hunk_header("@@ -x +1 @@").is_none());
    }

    #[test]
    fn references_that_look_like_options_are_refused() {
        for bad in ["", "-n", "--upload-pack=evil", "a b", "main\n"] {
            assert!(check_reference(bad).is_err(), "{bad:?}");
        }
        check_reference("main").unwrap();
        check_reference("0123456789abcdef0123456789abcdef01234567").unwrap();
    }

    #[test]
    fn result_hash_separates_fields() {
        assert_ne!(result_hash("ab", "c", &[]), result_hash("a", "bc", &[]));
        assert_ne!(
            result_hash("", "", &["a".into(), "b".into()]),
            result_hash("", "", &["ab".into()])
        );
        assert_eq!(result_hash("d", "s", &[]).len(), 64);
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_text("abc", 3), "abc");
        assert!(truncate_text("ééé", 3).starts_with("é…"));
    }
}
