//! Issue 17, the repository cache: between two real nodes, the first task on a repository
//! ships its whole history (an 8 MB incompressible file: more chunks than the sender may
//! have unacknowledged, so the executor's progress reports pace it), the second task on
//! a newer commit ships only that commit, and a third on the same commit ships nothing.
//! The agent's workspace borrows the cache's objects: its own git works in the sandbox,
//! and it cannot plant anything in them.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::path::Path;
use std::time::Duration;

use apn::actors::distributor::{TaskStatus, TaskView};
use apn::actors::node::NodeHandle;
use common::*;

/// Several MB of transfer and three runs take longer than one event.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// `bytes` of pseudo-random (incompressible) data, the same for the same seed.
fn noise(bytes: usize, mut seed: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(bytes + 8);
    while data.len() < bytes {
        // xorshift64: fast, and git's zlib cannot shrink it.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        data.extend_from_slice(&seed.to_le_bytes());
    }
    data.truncate(bytes);
    data
}

async fn run(originator: &NodeHandle, repo: &Path, prompt: &str) -> TaskView {
    let id = originator
        .distributor
        .send(mesh_shell_task(repo, "repo cache", prompt, 10))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(originator, id, RUN_TIMEOUT).await;
    assert_eq!(
        view.status,
        TaskStatus::Completed,
        "{prompt}: {:?}",
        view.error
    );
    view
}

fn cache_entries(executor: &NodeHandle) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(executor.data_dir.join("repo-cache"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[actix_rt::test]
async fn a_repository_travels_once_then_only_its_new_commits() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (originator, executor) =
        connected_pair(test_config(dir_a.path()), shell_config(dir_b.path())).await;
    let repo = git_repo(&[("README", "one\n")]);
    std::fs::write(repo.path().join("big.bin"), noise(8_000_000, 17)).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "a big file"]);

    let first = run(&originator, repo.path(), "echo one > one.txt").await;
    assert!(
        first.repo_bytes_sent > 8_000_000,
        "the whole history travels first: {} bytes",
        first.repo_bytes_sent
    );
    assert!(first.diff.unwrap_or_default().contains("+one"));
    assert_eq!(cache_entries(&executor).len(), 1, "one cache entry");

    // A newer commit: only it travels. The agent's own git reads the cache's objects.
    std::fs::write(repo.path().join("README"), "two\n").unwrap();
    git(repo.path(), &["commit", "-q", "-am", "second"]);
    let second = run(
        &originator,
        repo.path(),
        "git log --oneline | wc -l | tr -d ' ' > commits.txt && git show HEAD~1:big.bin | wc -c | tr -d ' ' > size.txt",
    )
    .await;
    assert!(second.repo_bytes_sent > 0, "the new commit travels");
    assert!(
        second.repo_bytes_sent * 100 <= first.repo_bytes_sent,
        "the second task sent {} bytes, the first {}",
        second.repo_bytes_sent,
        first.repo_bytes_sent
    );
    let diff = second.diff.unwrap_or_default();
    assert!(
        diff.contains("+3"),
        "the agent's git sees 3 commits: {diff}"
    );
    assert!(diff.contains("+8000000"), "and reads old objects: {diff}");

    // The same commit again: nothing travels.
    let third = run(&originator, repo.path(), "echo three > three.txt").await;
    assert_eq!(third.repo_bytes_sent, 0, "the executor has the commit");
    assert!(third.diff.unwrap_or_default().contains("+three"));
    assert_eq!(cache_entries(&executor).len(), 1, "still one cache entry");

    originator.shutdown().await;
    executor.shutdown().await;
}

#[actix_rt::test]
async fn the_agent_reads_the_shared_objects_but_cannot_plant_any() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (originator, executor) =
        connected_pair(test_config(dir_a.path()), shell_config(dir_b.path())).await;
    let repo = git_repo(&[("README", "one\n")]);
    let view = run(
        &originator,
        repo.path(),
        "alt=$(cat .git/objects/info/alternates); \
         (touch \"$alt/planted\" 2>/dev/null && echo planted || echo refused) > attempt.txt; \
         (echo evil > .git/objects/info/alternates 2>/dev/null && echo rewrote || echo kept) >> attempt.txt; \
         ls \"$alt\" >/dev/null && echo listed >> attempt.txt",
    )
    .await;
    let diff = view.diff.unwrap_or_default();
    assert!(diff.contains("+refused"), "{diff}");
    assert!(diff.contains("+kept"), "{diff}");
    assert!(diff.contains("+listed"), "{diff}");
    let entries = cache_entries(&executor);
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].join("objects/planted").exists());
    originator.shutdown().await;
    executor.shutdown().await;
}
