//! Disk the node's scratch data takes: agent workspaces, repository bundles and the
//! executor's repository cache in the data dir (`resources.storage_gb` caps it; [`crate::market::check_storage`] decides). The
//! measure is a bounded directory walk: symbolic links are not followed, at most
//! [`USAGE_ENTRIES_MAX`] entries are visited, and what cannot be read counts as empty.

use std::path::Path;

use crate::actors::node::{REPO_CACHE_DIR, SCRATCH_DIRS};

/// Most directory entries one measure visits; past it the measure stops and says so.
pub const USAGE_ENTRIES_MAX: usize = 200_000;

/// What a measure found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes of the regular files seen (their lengths).
    pub bytes: u64,
    /// False when the walk stopped at [`USAGE_ENTRIES_MAX`]: `bytes` is then a lower bound.
    pub complete: bool,
}

/// Bytes the data dir's scratch directories (`workspaces`, `bundles`, `repo-cache`) take.
pub fn scratch_usage(data_dir: &Path) -> Usage {
    let roots: Vec<_> = SCRATCH_DIRS
        .iter()
        .chain(std::iter::once(&REPO_CACHE_DIR))
        .map(|name| data_dir.join(name))
        .collect();
    tree_usage(&roots, USAGE_ENTRIES_MAX)
}

/// Bytes of the regular files under `roots`, visiting at most `entries_max` entries.
/// Symbolic links count as themselves (never followed); a missing or unreadable directory
/// counts as empty.
pub fn tree_usage(roots: &[impl AsRef<Path>], entries_max: usize) -> Usage {
    let mut usage = Usage {
        bytes: 0,
        complete: true,
    };
    let mut pending: Vec<std::path::PathBuf> =
        roots.iter().map(|r| r.as_ref().to_path_buf()).collect();
    let mut visited = 0usize;
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if visited >= entries_max {
                usage.complete = false;
                tracing::debug!(
                    entries_max,
                    bytes = usage.bytes,
                    "storage measure stopped at its entry limit"
                );
                return usage;
            }
            visited += 1;
            let Ok(metadata) = entry.path().symlink_metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            } else if metadata.is_file() {
                usage.bytes = usage.bytes.saturating_add(metadata.len());
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_files_under_the_scratch_dirs_and_stops_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(scratch_usage(dir.path()).bytes, 0, "missing dirs are empty");
        let nested = dir.path().join("workspaces").join("run").join("src");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("a"), [0u8; 1000]).unwrap();
        std::fs::create_dir_all(dir.path().join("bundles")).unwrap();
        std::fs::write(dir.path().join("bundles").join("b"), [0u8; 24]).unwrap();
        std::fs::write(dir.path().join("ledger.db"), [0u8; 5000]).unwrap();
        std::os::unix::fs::symlink(dir.path().join("ledger.db"), nested.join("link")).unwrap();
        let usage = scratch_usage(dir.path());
        assert_eq!(
            usage,
            Usage {
                bytes: 1024,
                complete: true
            }
        );
        let bounded = tree_usage(&[dir.path().join("workspaces")], 1);
        assert!(!bounded.complete);
    }
}
