//! Results larger than one frame: a real executor's 20 MiB diff comes back in
//! `ResultChunk`s and applies byte for byte on a fresh clone; a hostile executor's chunks
//! that do not fit (another task, an index out of range, oversized) are dropped and counted
//! (`bad_result_chunk`), and a reassembled result whose hash is not the announced one is
//! refused: the assignment is withdrawn and nothing is paid.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::path::Path;
use std::time::Duration;

use apn::actors::distributor::TaskStatus;
use apn::market::{ExecutionResult, RESULT_CHUNK_BYTES, result_chunks};
use apn::messages::*;
use common::attacker::Attacker;
use common::*;
use uuid::Uuid;

/// A ~20 MiB file of varied lines, written with shell builtins only (the run is sandboxed).
const BIG_FILE_SCRIPT: &str = "i=0; while [ $i -lt 330000 ]; do \
     printf 'line %d of the big file: %x %o some varied text %d\\n' $i $((i * 7919)) $((i * 31)) $((i % 97)); \
     i=$((i + 1)); done > big.txt";

/// A large result's run, its transfer and its check take longer than one event.
const LARGE_TIMEOUT: Duration = Duration::from_secs(180);

fn run_git(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs")
}

#[actix_rt::test]
async fn a_20_mib_diff_comes_back_in_chunks_and_applies() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (originator, executor) =
        connected_pair(test_config(dir_a.path()), shell_config(dir_b.path())).await;
    let repo = git_repo(&[("README", "a repository\n")]);

    let id = originator
        .distributor
        .send(mesh_shell_task(
            repo.path(),
            "big file",
            BIG_FILE_SCRIPT,
            10,
        ))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&originator, id, LARGE_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Completed, "{:?}", view.error);
    assert!(view.paid.is_some());
    assert_eq!(view.files_modified, ["big.txt"]);
    let diff = view.diff.expect("a diff");
    assert!(
        diff.len() > 20 * 1024 * 1024,
        "diff of {} bytes",
        diff.len()
    );
    assert_eq!(
        originator.metrics.dropped(DropReason::BadResultChunk),
        0,
        "no chunk of an honest executor is refused"
    );

    // The same file, made here, is what the diff reproduces on a fresh clone.
    let expected_dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("sh")
        .args(["-c", BIG_FILE_SCRIPT])
        .current_dir(expected_dir.path())
        .status()
        .unwrap();
    assert!(made.success());
    let expected = std::fs::read(expected_dir.path().join("big.txt")).unwrap();
    assert!(expected.len() > 20 * 1024 * 1024);

    let clones = tempfile::tempdir().unwrap();
    let fresh = clones.path().join("fresh");
    let cloned = run_git(
        clones.path(),
        &["clone", "-q", &repo.path().display().to_string(), "fresh"],
    );
    assert!(cloned.status.success(), "{cloned:?}");
    let patch = clones.path().join("result.patch");
    std::fs::write(&patch, &diff).unwrap();
    let patch = patch.display().to_string();
    let check = run_git(&fresh, &["apply", "--check", &patch]);
    assert!(check.status.success(), "{check:?}");
    let apply = run_git(&fresh, &["apply", &patch]);
    assert!(apply.status.success(), "{apply:?}");
    assert!(
        std::fs::read(fresh.join("big.txt")).unwrap() == expected,
        "the applied file differs from the one the script makes"
    );
    drop(executor);
}

/// The originator's own cap holds whatever the executor's is: a result announced larger
/// fails the task, saying which key, and is not paid.
#[actix_rt::test]
async fn a_result_over_the_originators_cap_fails_the_task_by_name() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut originator = test_config(dir_a.path());
    originator.executor.result_bytes_max = apn::config::RESULT_BYTES_MAX_MIN;
    originator.market.reassignments_max = 0;
    let (a, b) = connected_pair(originator, shell_config(dir_b.path())).await;
    let repo = git_repo(&[("README", "a repository\n")]);
    let id = a
        .distributor
        .send(mesh_shell_task(
            repo.path(),
            "3 MiB",
            "head -c 2400000 /dev/zero | tr '\\0' 'a' | fold -w 80 > big.txt",
            10,
        ))
        .await
        .unwrap()
        .unwrap();
    let view = task_final(&a, id, LARGE_TIMEOUT).await;
    assert_eq!(view.status, TaskStatus::Failed, "{view:?}");
    let error = view.error.clone().unwrap_or_default();
    assert!(error.contains("executor.result_bytes_max"), "{error}");
    assert_eq!(view.paid, None);
    assert_eq!(view.diff, None);
    drop(b);
}

#[actix_rt::test]
async fn bad_result_chunks_are_dropped_and_a_result_not_matching_its_hash_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let victim = node(test_config(dir.path())).await;
    let mut attacker = Attacker::attach(&victim).await;
    attacker.announce_to(&victim, &["SHELL"]).await;

    let repo = git_repo(&[("f", "x\n")]);
    let id = victim
        .distributor
        .send(mesh_shell_task(repo.path(), "target", "echo hi", 10))
        .await
        .unwrap()
        .unwrap();
    let (mut session, execution_id) = attacker.win_and_start(&victim, id).await;
    let dropped_before = victim.metrics.dropped(DropReason::BadResultChunk);

    // A result of three chunks, well-formed and signed.
    let result = ExecutionResult {
        summary: "changed f".into(),
        files_modified: vec!["f".into()],
        diff: format!(
            "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\n+{}\n",
            "y".repeat(2 * RESULT_CHUNK_BYTES + 1000)
        ),
    };
    let encoded = apn::messages::codec::encode(&result).unwrap();
    let total = result_chunks(encoded.len() as u64) as u32;
    assert_eq!(total, 3);
    let mut chunk = |task_id: Uuid, index: u32, data: &[u8]| {
        APNMessage::ResultChunk(ResultChunk {
            task_id,
            execution_id,
            index,
            total,
            data: session.seal(data).unwrap(),
        })
    };
    let parts: Vec<&[u8]> = encoded.chunks(RESULT_CHUNK_BYTES).collect();
    // For a task the victim never assigned, past the count, more than a chunk holds.
    let unknown_task = chunk(Uuid::new_v4(), 0, parts[0]);
    let out_of_range = chunk(id, total, parts[2]);
    let oversized = chunk(id, 0, &vec![b'z'; RESULT_CHUNK_BYTES + 1]);
    let good: Vec<APNMessage> = parts
        .iter()
        .enumerate()
        .map(|(index, part)| chunk(id, index as u32, part))
        .collect();
    for message in [&unknown_task, &out_of_range, &oversized] {
        attacker.send(message).await;
    }
    for message in &good {
        attacker.send(message).await;
    }
    // Announced with the SHA-256 of other bytes: the chunks are not what was announced.
    let result_hash =
        apn::workspace::result_hash(&result.diff, &result.summary, &result.files_modified);
    let mut other = encoded.clone();
    other[10] ^= 1;
    attacker
        .send(&APNMessage::ExecutionCompleted(ExecutionCompleted {
            task_id: id,
            execution_id,
            result_signature: serde_bytes::ByteBuf::from(
                attacker.identity.sign(result_hash.as_bytes()),
            ),
            result_hash,
            result: session.seal(&[]).unwrap(),
            usage: ComputeUsage::default(),
            delivery: ResultDelivery::Chunked {
                bytes: encoded.len() as u64,
                total_chunks: total,
                sha256: apn::market::result_assembly::encoded_sha256(&other),
            },
        }))
        .await;

    // The victim withdraws the assignment, saying why; the frames before it were handled.
    let APNMessage::TaskCancelled(cancelled) = attacker
        .next(|m| matches!(m, APNMessage::TaskCancelled(c) if c.task_id == id))
        .await
    else {
        unreachable!("filtered to a cancellation");
    };
    assert!(
        cancelled.reason.contains("does not match its hash"),
        "{}",
        cancelled.reason
    );
    assert_eq!(
        victim.metrics.dropped(DropReason::BadResultChunk),
        dropped_before + 3
    );
    let view = task_view(&victim, id).await.unwrap();
    assert_ne!(view.status, TaskStatus::Completed);
    assert_eq!(view.paid, None);
    assert_eq!(view.diff, None);
}
