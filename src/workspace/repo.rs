//! The repository operations of a task's run: on the originator, resolving the base and
//! bundling it; on the executor, checking out a fresh workspace, taking the agent's diff
//! (bounded, with a binary fallback for non-UTF-8 text), hashing the result and removing
//! the workspace.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::git::{check_reference, rev_parse_commit, run_git, run_git_bounded};
use super::{WorkspaceError, absolute, io_error};

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

/// The repository's identity as the executor's cache keys it: the root commit of
/// `commit`'s history (`git rev-list --max-parents=0`), the smallest id when there are
/// several (histories merged from unrelated roots).
pub fn root_commit(repo: &Path, commit: &str) -> Result<String, WorkspaceError> {
    check_reference(commit)?;
    let roots = run_git(repo, &["rev-list", "--max-parents=0", commit, "--"])?;
    String::from_utf8_lossy(&roots)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .min()
        .map(str::to_string)
        .ok_or_else(|| WorkspaceError::BadReference {
            reference: commit.to_string(),
            reason: "its history has no root commit".into(),
        })
}

/// Write a git bundle holding `commit` (a commit id or any name of one) and its history to
/// `bundle_path`; returns the bundle's size in bytes. See [`create_bundle_missing`].
pub fn create_bundle(repo: &Path, commit: &str, bundle_path: &Path) -> Result<u64, WorkspaceError> {
    let reference = format!("refs/apn/bundle-{}", uuid::Uuid::new_v4().simple());
    create_bundle_missing(repo, commit, &[], &reference, bundle_path)?.ok_or_else(|| {
        WorkspaceError::BadReference {
            reference: commit.to_string(),
            reason: "nothing to bundle".into(),
        }
    })
}

/// Write a git bundle of `commit` without what `have` (commits the receiver holds) already
/// brings, under the ref `reference`, to `bundle_path`. Returns its size in bytes, or
/// `None` when the receiver has everything (`commit` is in or below `have`): nothing need
/// travel. Commits of `have` this repository does not know are ignored.
///
/// A bundle needs a ref: `reference` points at the commit while the bundle is written and
/// is deleted afterwards, whatever happened. The receiver fetches it by that name.
pub fn create_bundle_missing(
    repo: &Path,
    commit: &str,
    have: &[String],
    reference: &str,
    bundle_path: &Path,
) -> Result<Option<u64>, WorkspaceError> {
    check_reference(reference)?;
    let commit = resolve_commit(repo, commit)?;
    let have: Vec<&str> = have
        .iter()
        .map(String::as_str)
        .filter(|c| crate::messages::payloads::is_object_id(c))
        .collect();
    if have.contains(&commit.as_str()) {
        return Ok(None);
    }
    if !have.is_empty() {
        // Whether anything is missing at all: git refuses to write an empty bundle.
        let mut args = vec!["rev-list", "--count", "--ignore-missing", &commit, "--not"];
        args.extend(have.iter().copied());
        let missing = run_git(repo, &args)?;
        if String::from_utf8_lossy(&missing).trim() == "0" {
            return Ok(None);
        }
    }
    let bundle_path = absolute(bundle_path)?;
    run_git(repo, &["update-ref", reference, &commit])?;
    let path = bundle_path.to_string_lossy();
    let mut args = vec!["bundle", "create", "--quiet", &path, reference];
    if !have.is_empty() {
        args.extend(["--ignore-missing", "--not"]);
        args.extend(have.iter().copied());
    }
    let created = run_git(repo, &args);
    if let Err(e) = run_git(repo, &["update-ref", "-d", reference]) {
        tracing::warn!(repo = %repo.display(), %reference, error = %e, "cannot delete a temporary ref");
    }
    created?;
    let metadata = std::fs::metadata(&bundle_path).map_err(io_error("read", &bundle_path))?;
    Ok(Some(metadata.len()))
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
pub(super) fn prepare_fresh_dir(workspace: &Path) -> Result<(), WorkspaceError> {
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

    #[test]
    fn result_hash_separates_fields() {
        assert_ne!(result_hash("ab", "c", &[]), result_hash("a", "bc", &[]));
        assert_ne!(
            result_hash("", "", &["a".into(), "b".into()]),
            result_hash("", "", &["ab".into()])
        );
        assert_eq!(result_hash("d", "s", &[]).len(), 64);
    }
}
