//! The executor's repository cache: one bare repository per originator and repository
//! (keyed by the originator's peer id and the repository's root commit), holding every
//! commit a run of theirs received, under `refs/apn/have/<commit>`.
//!
//! A run's handshake answer names the commits the cache holds ([`RepoCache::have`], from
//! memory: the executor's actor thread never waits for git), the originator sends a bundle
//! of only what they lack, [`RepoCache::store_bundle`] fetches it into the cache, and
//! [`RepoCache::checkout`] makes the workspace a fresh repository whose objects are the
//! cache's (git's `alternates`): nothing is copied, and the sandbox lets the agent read the
//! cache's objects only ([`RepoCache::objects_dir`]), never write them.
//!
//! Keyed by originator, so one originator's agent never reads another originator's commits
//! of the same repository. A [`CacheLease`] marks an entry in use from the handshake to the
//! run's end; [`RepoCache::evict`] removes the least recently used entries not in use
//! until the data dir fits `resources.storage_gb` ([`lru_victims`] chooses).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};

use super::git::{rev_parse_commit, run_git};
use super::repo::prepare_fresh_dir;
use super::{WorkspaceError, io_error};
use crate::messages::payloads::{REPO_HAVE_MAX, is_object_id};

/// Commits remembered per entry (most recently used first); the answer names the first
/// [`REPO_HAVE_MAX`].
const HAVE_KEPT_MAX: usize = 64;

/// One cached repository.
#[derive(Debug)]
struct Entry {
    /// Commits the cache holds, most recently used first.
    have: Vec<String>,
    /// A counter value: higher is more recent.
    last_used: u64,
    /// Runs holding a lease on it: never evicted while above 0.
    in_use: u32,
    /// Held while git writes into the entry (a fetch, the first `init`).
    writing: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    clock: u64,
}

/// The cache of one node, under `<data_dir>/repo-cache`.
#[derive(Debug)]
pub struct RepoCache {
    dir: PathBuf,
    state: Mutex<State>,
}

/// An entry of the cache in use by one run; released when dropped.
#[derive(Debug)]
pub struct CacheLease {
    cache: Arc<RepoCache>,
    key: String,
}

impl Drop for CacheLease {
    fn drop(&mut self) {
        let mut state = self.cache.lock();
        if let Some(entry) = state.entries.get_mut(&self.key) {
            entry.in_use = entry.in_use.saturating_sub(1);
        }
    }
}

impl CacheLease {
    /// The entry's key (a directory name under the cache).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Commits the entry holds, most recently used first, at most [`REPO_HAVE_MAX`].
    pub fn have(&self) -> Vec<String> {
        self.cache.have(&self.key)
    }

    /// The cache itself, for its blocking operations on this entry.
    pub fn cache(&self) -> Arc<RepoCache> {
        self.cache.clone()
    }
}

/// The key of the entry holding `root_commit`'s repository for the originator `origin`
/// (its peer id's bytes): hex SHA-256 of both, cut to 32 digits.
pub fn cache_key(origin: &[u8], root_commit: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"apn-repo-cache-v1");
    hasher.update((origin.len() as u64).to_be_bytes());
    hasher.update(origin);
    hasher.update(root_commit.as_bytes());
    let mut key = hex::encode(hasher.finalize());
    key.truncate(32);
    key
}

/// Which entries to evict to free `excess` bytes: the least recently used first, from
/// `candidates` (key, last used, bytes), until their bytes reach `excess`. Fewer than
/// needed when all of them together do not.
pub fn lru_victims(mut candidates: Vec<(String, u64, u64)>, excess: u64) -> Vec<String> {
    candidates.sort_by_key(|(_, last_used, _)| *last_used);
    let mut freed = 0u64;
    let mut victims = Vec::new();
    for (key, _, bytes) in candidates {
        if freed >= excess {
            break;
        }
        freed = freed.saturating_add(bytes);
        victims.push(key);
    }
    victims
}

impl RepoCache {
    /// The cache under `dir`, with what an earlier run of the node left there (each
    /// entry's held commits read with git: call it off any actor thread).
    pub fn open(dir: &Path) -> Arc<Self> {
        let mut state = State::default();
        let mut found: Vec<(String, std::time::SystemTime)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(key) = name.strip_suffix(".git") else {
                    continue;
                };
                let modified = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                found.push((key.to_string(), modified));
            }
        }
        // Oldest first, so the clock orders them as their directories' times did.
        found.sort_by_key(|(_, modified)| *modified);
        for (key, _) in found {
            let repo = dir.join(format!("{key}.git"));
            let have = match run_git(
                &repo,
                &[
                    "for-each-ref",
                    "--sort=-committerdate",
                    "--format=%(objectname)",
                    "refs/apn/have/",
                ],
            ) {
                Ok(out) => String::from_utf8_lossy(&out)
                    .lines()
                    .filter(|c| is_object_id(c))
                    .take(HAVE_KEPT_MAX)
                    .map(str::to_string)
                    .collect(),
                Err(e) => {
                    tracing::warn!(repo = %repo.display(), error = %e, "unreadable repository cache entry; removing it");
                    super::remove_workspace(&repo);
                    continue;
                }
            };
            state.clock += 1;
            let last_used = state.clock;
            state.entries.insert(
                key,
                Entry {
                    have,
                    last_used,
                    in_use: 0,
                    writing: Arc::default(),
                },
            );
        }
        tracing::debug!(dir = %dir.display(), entries = state.entries.len(), "repository cache opened");
        Arc::new(RepoCache {
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn repo_dir(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.git"))
    }

    /// The objects directory of the entry `key`.
    pub fn objects_dir(&self, key: &str) -> PathBuf {
        self.repo_dir(key).join("objects")
    }

    /// Take a lease on the entry `key` (created empty if new) and mark it used now.
    pub fn lease(self: &Arc<Self>, key: &str) -> CacheLease {
        let mut state = self.lock();
        state.clock += 1;
        let now = state.clock;
        let entry = state
            .entries
            .entry(key.to_string())
            .or_insert_with(|| Entry {
                have: Vec::new(),
                last_used: now,
                in_use: 0,
                writing: Arc::default(),
            });
        entry.in_use += 1;
        entry.last_used = now;
        CacheLease {
            cache: self.clone(),
            key: key.to_string(),
        }
    }

    /// Commits the entry `key` holds, most recently used first, at most
    /// [`REPO_HAVE_MAX`]; none for an unknown key.
    pub fn have(&self, key: &str) -> Vec<String> {
        self.lock()
            .entries
            .get(key)
            .map(|e| e.have.iter().take(REPO_HAVE_MAX).cloned().collect())
            .unwrap_or_default()
    }

    /// Entries in the cache.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn note_held(&self, key: &str, commit: &str) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(key) {
            entry.have.retain(|c| c != commit);
            entry.have.insert(0, commit.to_string());
            entry.have.truncate(HAVE_KEPT_MAX);
        }
    }

    /// Fetch the bundle at `bundle_path` (its ref `reference`) into the entry `key`,
    /// recording `commit` as held; the entry's bare repository is created if new. Blocking
    /// (git); one writer per entry at a time.
    pub fn store_bundle(
        &self,
        key: &str,
        bundle_path: &Path,
        reference: &str,
        commit: &str,
    ) -> Result<(), WorkspaceError> {
        super::check_reference(reference)?;
        if !is_object_id(commit) {
            return Err(WorkspaceError::BadReference {
                reference: commit.to_string(),
                reason: "not a full commit id".into(),
            });
        }
        let writing = self
            .lock()
            .entries
            .get(key)
            .map(|e| e.writing.clone())
            .unwrap_or_default();
        let _writing = writing.lock().unwrap_or_else(|e| e.into_inner());
        let repo = self.repo_dir(key);
        if !repo.join("HEAD").exists() {
            std::fs::create_dir_all(&repo).map_err(io_error("create", &repo))?;
            run_git(&repo, &["init", "--quiet", "--bare"])?;
        }
        let bundle = super::absolute(bundle_path)?;
        let refspec = format!("+{reference}:refs/apn/have/{commit}");
        run_git(
            &repo,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                &bundle.to_string_lossy(),
                &refspec,
            ],
        )?;
        // The ref is named after the commit the task names; the object must be that commit.
        rev_parse_commit(&repo, commit, bundle_path)?;
        self.note_held(key, commit);
        Ok(())
    }

    /// A fresh workspace at `commit` whose objects are the entry's (git `alternates`):
    /// nothing is copied. Blocking (git).
    pub fn checkout(
        &self,
        key: &str,
        commit: &str,
        workspace: &Path,
    ) -> Result<(), WorkspaceError> {
        super::check_reference(commit)?;
        prepare_fresh_dir(workspace)?;
        let objects = super::absolute(&self.objects_dir(key))?;
        run_git(workspace, &["init", "--quiet"])?;
        let alternates = workspace.join(".git/objects/info/alternates");
        std::fs::write(&alternates, format!("{}\n", objects.display()))
            .map_err(io_error("write", &alternates))?;
        let full = rev_parse_commit(workspace, commit, &self.repo_dir(key))?;
        run_git(workspace, &["checkout", "--quiet", "--detach", &full])?;
        self.note_held(key, &full);
        Ok(())
    }

    /// Remove least recently used entries not in use until `used` bytes (the data dir's
    /// scratch usage, cache included) plus `need` fit `cap`; returns the bytes freed.
    /// Blocking (walks the candidates' directories).
    pub fn evict(&self, used: u64, need: u64, cap: u64) -> u64 {
        let Some(excess) = used.saturating_add(need).checked_sub(cap) else {
            return 0;
        };
        if excess == 0 {
            return 0;
        }
        let candidates: Vec<(String, u64)> = self
            .lock()
            .entries
            .iter()
            .filter(|(_, e)| e.in_use == 0)
            .map(|(key, e)| (key.clone(), e.last_used))
            .collect();
        let sized = candidates
            .into_iter()
            .map(|(key, last_used)| {
                let bytes = crate::storage::tree_usage(
                    &[self.repo_dir(&key)],
                    crate::storage::USAGE_ENTRIES_MAX,
                )
                .bytes;
                (key, last_used, bytes)
            })
            .collect::<Vec<_>>();
        let sizes: HashMap<String, u64> = sized.iter().map(|(k, _, b)| (k.clone(), *b)).collect();
        let mut freed = 0u64;
        for key in lru_victims(sized, excess) {
            {
                let mut state = self.lock();
                // Leased since it was chosen: it stays.
                if state.entries.get(&key).is_none_or(|e| e.in_use > 0) {
                    continue;
                }
                state.entries.remove(&key);
            }
            super::remove_workspace(&self.repo_dir(&key));
            freed = freed.saturating_add(sizes.get(&key).copied().unwrap_or(0));
            tracing::info!(entry = %key, "repository cache entry evicted (least recently used)");
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_are_the_least_recently_used_until_enough_is_freed() {
        let candidates = vec![
            ("new".to_string(), 9, 100),
            ("old".to_string(), 1, 30),
            ("middle".to_string(), 5, 50),
        ];
        assert_eq!(lru_victims(candidates.clone(), 0), Vec::<String>::new());
        assert_eq!(lru_victims(candidates.clone(), 30), vec!["old"]);
        assert_eq!(lru_victims(candidates.clone(), 31), vec!["old", "middle"]);
        assert_eq!(
            lru_victims(candidates, 1_000),
            vec!["old", "middle", "new"],
            "all of them when even that is not enough"
        );
    }

    #[test]
    fn keys_separate_originators_and_repositories() {
        let root = "0123456789abcdef0123456789abcdef01234567";
        assert_ne!(cache_key(b"peer a", root), cache_key(b"peer b", root));
        assert_ne!(
            cache_key(b"peer a", root),
            cache_key(b"peer a", "1123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(cache_key(b"peer a", root).len(), 32);
    }

    #[test]
    fn a_leased_entry_is_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = RepoCache::open(dir.path());
        let held = cache.lease("held");
        drop(cache.lease("free"));
        for key in ["held", "free"] {
            let repo = cache.repo_dir(key);
            std::fs::create_dir_all(&repo).unwrap();
            std::fs::write(repo.join("pack"), [0u8; 1000]).unwrap();
        }
        assert_eq!(cache.evict(2_000, 0, 10), 1000);
        assert!(cache.repo_dir("held").exists());
        assert!(!cache.repo_dir("free").exists());
        assert_eq!(cache.len(), 1);
        assert_eq!(held.key(), "held");
    }
}
