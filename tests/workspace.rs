//! Workspace git operations on real repositories: resolve, bundle, checkout from the bundle
//! and from a path, the agent's diff (modified, added, deleted, binary, non-UTF-8 files)
//! applied back to the original, size limits, hostile diffs refused, the verify command.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use apn::workspace::{
    DiffResult, RepoSource, WorkspaceError, apply_and_verify, apply_check, check_diff_paths,
    checkout_workspace, create_bundle, diff_against_base, remove_workspace, resolve_commit,
};
use common::process::{gone_blocking, read_pid};

/// No test here should take this long; one that does has hung.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `body` on its own thread and fail the test if it does not finish in time.
fn with_timeout<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = sender.send(body());
    });
    match receiver.recv_timeout(TEST_TIMEOUT) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body sent nothing and did not panic"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test timed out after {TEST_TIMEOUT:?}"),
    }
}

/// Run git in `dir` for the test's own setup, isolated from any outer repository.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A repository with a few files in one commit on `main`; returns it and the commit id.
fn sample_repo(root: &Path) -> (PathBuf, String) {
    let repo = root.join("origin");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "--quiet"]);
    std::fs::write(repo.join("README.md"), "# Sample\n\nA line.\n").unwrap();
    std::fs::write(repo.join("src/lib.rs"), "pub fn one() -> u32 {\n    1\n}\n").unwrap();
    std::fs::write(repo.join("src/old.rs"), "// to be deleted\n").unwrap();
    std::fs::write(repo.join("logo.bin"), [0u8, 1, 2, 3, 255, 0, 7]).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "--quiet", "-m", "initial"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    (repo, commit)
}

/// What the agent does in the workspace: two files modified (one binary), one added, one
/// deleted.
fn agent_edits(workspace: &Path) {
    std::fs::write(
        workspace.join("README.md"),
        "# Sample\n\nA line.\nAnother line.\n",
    )
    .unwrap();
    std::fs::write(workspace.join("logo.bin"), [0u8, 1, 2, 9, 255, 0, 7, 8]).unwrap();
    std::fs::write(
        workspace.join("src/new.rs"),
        "pub fn two() -> u32 {\n    2\n}\n",
    )
    .unwrap();
    std::fs::remove_file(workspace.join("src/old.rs")).unwrap();
}

#[test]
fn bundle_checkout_diff_and_apply_back() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        assert_eq!(resolve_commit(&repo, "main").unwrap(), commit);
        assert_eq!(resolve_commit(&repo, &commit[..10]).unwrap(), commit);

        let bundle = root.path().join("task.bundle");
        let bytes = create_bundle(&repo, &commit, &bundle).unwrap();
        assert_eq!(bytes, std::fs::metadata(&bundle).unwrap().len());
        assert!(bytes > 0);
        assert_eq!(
            git(&repo, &["for-each-ref", "refs/apn"]),
            "",
            "the temporary ref was left behind"
        );

        let workspace = root.path().join("runs/one");
        checkout_workspace(RepoSource::Bundle(&bundle), &commit, &workspace).unwrap();
        assert_eq!(git(&workspace, &["rev-parse", "HEAD"]), commit);
        assert!(workspace.join("src/old.rs").exists());

        agent_edits(&workspace);
        let DiffResult {
            diff,
            files_modified,
            bytes,
        } = diff_against_base(&workspace, &commit, 1024 * 1024).unwrap();
        assert_eq!(bytes, diff.len());
        assert_eq!(
            files_modified,
            vec!["README.md", "logo.bin", "src/new.rs", "src/old.rs"]
        );
        assert!(diff.contains("+Another line."));
        assert!(diff.contains("GIT binary patch"));
        assert!(diff.contains("deleted file mode"));
        check_diff_paths(&diff).unwrap();

        // The original accepts it: through the module, and with plain `git apply --check`.
        apply_check(&repo, &commit, &diff).unwrap();
        let patch = root.path().join("result.patch");
        std::fs::write(&patch, &diff).unwrap();
        git(&repo, &["apply", "--check", patch.to_str().unwrap()]);
        // ...and its working tree was not touched.
        assert_eq!(git(&repo, &["status", "--porcelain"]), "");

        remove_workspace(&workspace);
        assert!(!workspace.exists());
        remove_workspace(&workspace); // a missing path is fine
    });
}

#[test]
fn checkout_from_a_local_path_at_an_older_commit() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, first) = sample_repo(root.path());
        std::fs::write(repo.join("README.md"), "changed on main\n").unwrap();
        git(&repo, &["commit", "--quiet", "-am", "second"]);
        let second = git(&repo, &["rev-parse", "HEAD"]);
        assert_ne!(first, second);

        let workspace = root.path().join("local");
        checkout_workspace(RepoSource::LocalPath(&repo), &first, &workspace).unwrap();
        assert_eq!(git(&workspace, &["rev-parse", "HEAD"]), first);
        assert_eq!(
            std::fs::read_to_string(workspace.join("README.md")).unwrap(),
            "# Sample\n\nA line.\n"
        );
        // Not hard-linked: the agent cannot reach the source's objects through an inode.
        let shared = Command::new("find")
            .args([
                workspace.join(".git/objects").to_str().unwrap(),
                "-type",
                "f",
                "-links",
                "+1",
            ])
            .output()
            .unwrap();
        assert!(
            shared.stdout.is_empty(),
            "hard-linked objects in the workspace"
        );
    });
}

#[test]
fn checkout_refuses_busy_dirs_and_missing_commits() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        let busy = root.path().join("busy");
        std::fs::create_dir_all(&busy).unwrap();
        std::fs::write(busy.join("x"), "x").unwrap();
        assert!(matches!(
            checkout_workspace(RepoSource::LocalPath(&repo), &commit, &busy),
            Err(WorkspaceError::WorkspaceNotFresh(_))
        ));

        let bundle = root.path().join("b.bundle");
        create_bundle(&repo, &commit, &bundle).unwrap();
        let missing = "0123456789abcdef0123456789abcdef01234567";
        let error = checkout_workspace(
            RepoSource::Bundle(&bundle),
            missing,
            &root.path().join("missing"),
        )
        .unwrap_err();
        assert!(
            matches!(error, WorkspaceError::CommitMissing { .. }),
            "{error}"
        );

        let error = checkout_workspace(
            RepoSource::Bundle(&root.path().join("no-such.bundle")),
            &commit,
            &root.path().join("nobundle"),
        )
        .unwrap_err();
        assert!(matches!(error, WorkspaceError::Git { .. }), "{error}");
        assert!(error.to_string().contains("git fetch"), "{error}");
    });
}

#[test]
fn bad_references_are_refused() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, _) = sample_repo(root.path());
        for bad in ["--output=/tmp/x", "-h", "no-such-branch", "main extra"] {
            assert!(
                matches!(
                    resolve_commit(&repo, bad),
                    Err(WorkspaceError::BadReference { .. })
                ),
                "{bad}"
            );
        }
    });
}

#[test]
fn a_diff_over_the_limit_is_refused_with_its_size() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        let workspace = root.path().join("ws");
        checkout_workspace(RepoSource::LocalPath(&repo), &commit, &workspace).unwrap();
        std::fs::write(workspace.join("big.txt"), "line of text\n".repeat(1000)).unwrap();
        match diff_against_base(&workspace, &commit, 4096) {
            Err(WorkspaceError::DiffTooLarge { bytes, limit }) => {
                assert_eq!(limit, 4096);
                assert!(bytes > 13_000, "{bytes}");
            }
            other => panic!("expected DiffTooLarge, got {other:?}"),
        }
        // The same work fits a larger limit.
        let result = diff_against_base(&workspace, &commit, 1024 * 1024).unwrap();
        assert_eq!(result.files_modified, vec!["big.txt"]);
    });
}

#[test]
fn a_non_utf8_text_file_still_gives_an_applicable_diff() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        let workspace = root.path().join("ws");
        checkout_workspace(RepoSource::LocalPath(&repo), &commit, &workspace).unwrap();
        std::fs::write(workspace.join("latin1.txt"), b"caf\xe9\nna\xefve\n").unwrap();
        std::fs::write(workspace.join("README.md"), "utf-8 é\n").unwrap();
        let result = diff_against_base(&workspace, &commit, 1024 * 1024).unwrap();
        assert_eq!(result.files_modified, vec!["README.md", "latin1.txt"]);
        apply_check(&repo, &commit, &result.diff).unwrap();
        assert!(
            !workspace.join(".git/info/attributes").exists(),
            "the temporary attributes were left behind"
        );
    });
}

#[test]
fn hostile_diffs_are_refused_before_git_sees_them() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        let new_file = |path: &str| {
            format!(
                "diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+owned\n"
            )
        };
        let symlink = "diff --git a/link b/link\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n";
        for diff in [
            new_file("../evil"),
            new_file("src/../../evil"),
            new_file("/etc/passwd"),
            "--- /dev/null\n+++ /etc/passwd\n@@ -0,0 +1 @@\n+root::0:0::/:/bin/sh\n".to_string(),
            new_file(".git/hooks/pre-commit"),
            new_file("src/.git/config"),
            symlink.to_string(),
        ] {
            let error = apply_check(&repo, &commit, &diff).unwrap_err();
            assert!(
                matches!(error, WorkspaceError::UnsafeDiff { .. }),
                "{diff}: {error}"
            );
        }
        assert!(!root.path().join("evil").exists());
    });
}

#[test]
fn a_diff_that_does_not_apply_is_reported() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        let stale = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1,3 +1,3 @@\n # Other\n \n-Not this line.\n+New.\n";
        let error = apply_check(&repo, &commit, stale).unwrap_err();
        assert!(matches!(error, WorkspaceError::Git { .. }), "{error}");
        assert!(error.to_string().contains("git apply"), "{error}");
        let garbage = "this is not a patch\n";
        assert!(apply_check(&repo, &commit, garbage).is_err());
        // An empty result (the agent changed nothing) applies trivially.
        apply_check(&repo, &commit, "").unwrap();
    });
}

#[test]
fn the_verify_command_runs_on_the_patched_copy_without_node_secrets() {
    with_timeout(|| {
        let root = tempfile::tempdir().unwrap();
        let (repo, commit) = sample_repo(root.path());
        let workspace = root.path().join("ws");
        checkout_workspace(RepoSource::LocalPath(&repo), &commit, &workspace).unwrap();
        agent_edits(&workspace);
        let diff = diff_against_base(&workspace, &commit, 1024 * 1024)
            .unwrap()
            .diff;
        let timeout = Duration::from_secs(30);
        assert!(
            apply_and_verify(
                &repo,
                &commit,
                &diff,
                "test -f src/new.rs && ! test -e src/old.rs",
                timeout,
                None
            )
            .unwrap()
        );
        assert!(!apply_and_verify(&repo, &commit, &diff, "exit 3", timeout, None).unwrap());
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("APN_SECRET_TOKEN_VERIFY_TEST", "hunter2") };
        assert!(
            apply_and_verify(
                &repo,
                &commit,
                &diff,
                "test -z \"$APN_SECRET_TOKEN_VERIFY_TEST\"",
                timeout,
                None
            )
            .unwrap(),
            "a node secret reached the verify command"
        );
        // Out of time: false, promptly, and its background child is gone too.
        let pid_file = root.path().join("verify.pid");
        let started = std::time::Instant::now();
        let script = format!("sleep 300 & echo $! > {}; sleep 300", pid_file.display());
        assert!(
            !apply_and_verify(
                &repo,
                &commit,
                &diff,
                &script,
                Duration::from_millis(500),
                None
            )
            .unwrap()
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(
            gone_blocking(read_pid(&pid_file), Duration::from_secs(5)),
            "the verify command's child survived"
        );
        // The user's repository is untouched.
        assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    });
}
