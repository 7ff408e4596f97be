//! What a run has changed in its workspace so far, for the executor's workspace watcher:
//! `git status` (tracked changes, deletions and new files, ignored files left out) read
//! with a bounded output and a bounded number of paths.
//!
//! The watcher polls while the agent runs, so the command must not get in the agent's way:
//! `--no-optional-locks` keeps git from taking the index lock to refresh its stat cache
//! (an agent running git itself never finds `index.lock` held by the node), and
//! submodules are not entered. Renames are listed as a deletion and an addition
//! (`--no-renames`), as the result's `files_modified` lists them, so the count the
//! originator sees while the run goes matches the one it gets at the end.

use std::path::Path;

use super::WorkspaceError;
use super::git::run_git_bounded;

/// Most bytes of `git status` output read; the rest is counted, not kept.
pub const STATUS_OUTPUT_BYTES_MAX: usize = 256 * 1024;
/// Most changed paths listed; past it the list is marked incomplete.
pub const CHANGED_FILES_MAX: usize = 1000;

/// The paths changed in a workspace, relative to its root, in git's (sorted) order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedFiles {
    /// At most [`CHANGED_FILES_MAX`] paths.
    pub files: Vec<String>,
    /// False when there are more changed paths than `files` holds (the output or the
    /// path count was cut): `files.len()` is then a lower bound.
    pub complete: bool,
}

/// The changed paths of the git work tree at `workspace` (see the module docs).
pub fn changed_files(workspace: &Path) -> Result<ChangedFiles, WorkspaceError> {
    let output = run_git_bounded(
        workspace,
        &[
            "--no-optional-locks",
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
            "--ignore-submodules=all",
        ],
        None,
        STATUS_OUTPUT_BYTES_MAX,
    )?;
    let mut changed = parse_porcelain_z(&output.stdout, CHANGED_FILES_MAX);
    if output.stdout_bytes > output.stdout.len() as u64 {
        // When the parser got to the end of what was kept, its last entry may be a cut
        // path: drop it rather than report half a name.
        if changed.complete && output.stdout.last() != Some(&0) {
            changed.files.pop();
        }
        changed.complete = false;
    }
    Ok(changed)
}

/// The paths of `git status --porcelain=v1 -z --no-renames` output: entries `XY <path>`
/// separated by NUL, at most `files_max` of them. An entry too short to hold a path is
/// skipped (git never writes one); a path that is not UTF-8 is decoded lossily.
pub fn parse_porcelain_z(output: &[u8], files_max: usize) -> ChangedFiles {
    let mut changed = ChangedFiles {
        files: Vec::new(),
        complete: true,
    };
    for entry in output.split(|byte| *byte == 0) {
        // Two status letters and a space, then the path.
        let Some(path) = entry.get(3..).filter(|path| !path.is_empty()) else {
            continue;
        };
        if changed.files.len() >= files_max {
            changed.complete = false;
            break;
        }
        changed
            .files
            .push(String::from_utf8_lossy(path).into_owned());
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_entries_become_paths() {
        let output = b"D  a\0A  b\0 M src/lib.rs\0?? d/e/f\0?? sp ace\0";
        let changed = parse_porcelain_z(output, 10);
        assert_eq!(changed.files, ["a", "b", "src/lib.rs", "d/e/f", "sp ace"]);
        assert!(changed.complete);
        assert_eq!(
            parse_porcelain_z(b"", 10),
            ChangedFiles {
                files: vec![],
                complete: true
            }
        );
        // Malformed entries (never written by git) are skipped, not fatal.
        assert_eq!(parse_porcelain_z(b"M\0??\0?? \0?? x\0", 10).files, ["x"]);
    }

    #[test]
    fn past_the_path_limit_the_list_says_it_is_incomplete() {
        let output: Vec<u8> = (0..5)
            .flat_map(|i| format!("?? f{i}\0").into_bytes())
            .collect();
        let changed = parse_porcelain_z(&output, 3);
        assert_eq!(changed.files, ["f0", "f1", "f2"]);
        assert!(!changed.complete);
        assert!(parse_porcelain_z(&output, 5).complete);
    }

    fn git(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(status.is_ok_and(|s| s.success()), "git {args:?}");
    }

    #[test]
    fn a_work_tree_lists_edits_deletions_and_new_files_but_not_ignored_ones() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let root = dir.path();
        git(root, &["init", "-q"]);
        for (name, text) in [
            ("kept", "1\n"),
            ("edited", "1\n"),
            ("gone", "1\n"),
            (".gitignore", "*.log\n"),
        ] {
            assert!(std::fs::write(root.join(name), text).is_ok());
        }
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "base"]);
        assert_eq!(
            changed_files(root).ok(),
            Some(ChangedFiles {
                files: vec![],
                complete: true
            })
        );

        assert!(std::fs::write(root.join("edited"), "2\n").is_ok());
        assert!(std::fs::remove_file(root.join("gone")).is_ok());
        assert!(std::fs::create_dir_all(root.join("new/dir")).is_ok());
        assert!(std::fs::write(root.join("new/dir/file.rs"), "x").is_ok());
        assert!(std::fs::write(root.join("noise.log"), "x").is_ok());
        let changed = changed_files(root).ok().map(|c| c.files);
        assert_eq!(
            changed,
            Some(vec![
                "edited".to_string(),
                "gone".into(),
                "new/dir/file.rs".into()
            ])
        );
        // The watcher never leaves the index lock behind for the agent to trip on.
        assert!(!root.join(".git/index.lock").exists());
    }

    #[test]
    fn a_directory_that_is_not_a_repository_is_an_error() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        assert!(matches!(
            changed_files(dir.path()),
            Err(WorkspaceError::Git { .. })
        ));
    }
}
