//! What an executor accepts as an assignment: only for a live bid it made, at its price
//! ([`admit_assignment`]); never a path on its own disk from a peer, and a repository only
//! named by its root commit's id ([`admit_payload`]); a bundle only with the chunk count
//! its size implies ([`check_bundle_shape`]) and only when it fits the node's storage cap
//! ([`check_storage`]). And how
//! long an assignment may last whatever heartbeats say ([`assignment_deadline_s`]).

use crate::messages::Vibe;
use crate::messages::payloads::{RepoDelivery, TaskPayload, is_object_id};

use super::REPO_CHUNK_BYTES;

/// A bid this node made, holding a slot until the assignment comes or the reservation
/// runs out. `P` names the originator the bid went to (a `PeerId` in the executor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveBid<P> {
    /// The originator the bid went to; only it may assign the task.
    pub origin: P,
    /// The price bid; an assignment must agree to it.
    pub price: Vibe,
    /// The request's `content_hash`: the task that arrives must be the one bid on.
    pub content_hash: String,
    /// An assignment for it was admitted (it is being decrypted or runs).
    pub claimed: bool,
}

/// Why an executor refuses a `TaskAssigned`. The text travels back to the originator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionRefusal {
    /// This node holds no live bid for the task (none made, or its reservation is gone).
    #[error("no live bid of this node for the task")]
    NoLiveBid,
    /// The bid went to another originator than the one assigning.
    #[error("this node bid for the task to another originator")]
    OtherOriginator,
    /// The assignment names another price than the bid.
    #[error("the agreed price {agreed} is not this node's bid price {bid}")]
    Price {
        /// The price the assignment names.
        agreed: Vibe,
        /// The price this node bid.
        bid: Vibe,
    },
    /// An assignment for the bid was already admitted.
    #[error("an assignment for this bid was already accepted")]
    AlreadyClaimed,
    /// A peer's task names a path on this node's disk instead of sending a bundle.
    #[error("a repository given as a local path is accepted only from this node itself")]
    LocalPath,
    /// The prompt and base commit do not hash to the `content_hash` the bid was made for.
    #[error("the task is not the one this node bid on (its content hash differs)")]
    ContentMismatch,
    /// The repository is not named by a full commit id (its root commit), or the base
    /// commit is not one.
    #[error("the repository's root or base commit is not a full commit id")]
    RepositoryId,
    /// The bundle's announced size or chunk count does not hold.
    #[error(transparent)]
    Bundle(#[from] BundleShapeError),
    /// The bundle would take this node's scratch storage past `resources.storage_gb`.
    #[error(
        "a bundle of {bundle} bytes would take this node's storage past its cap: \
         {used} of {cap} bytes in use (resources.storage_gb)"
    )]
    Storage {
        /// The bundle's announced size, in bytes.
        bundle: u64,
        /// Bytes the data dir's workspaces and bundles take now.
        used: u64,
        /// The cap, in bytes.
        cap: u64,
    },
}

/// Whether a peer's bundle of `bundle_bytes` fits: with `used_bytes` already taken by the
/// data dir's workspaces and bundles, it must not take them past `cap_bytes` (`None`: no
/// cap, `resources.storage_gb = 0`). The bundle's announced size is what is counted; the
/// checkout it grows into is not predicted.
pub fn check_storage(
    bundle_bytes: u64,
    used_bytes: u64,
    cap_bytes: Option<u64>,
) -> Result<(), AdmissionRefusal> {
    let Some(cap) = cap_bytes else {
        return Ok(());
    };
    if used_bytes
        .checked_add(bundle_bytes)
        .is_none_or(|total| total > cap)
    {
        return Err(AdmissionRefusal::Storage {
            bundle: bundle_bytes,
            used: used_bytes,
            cap,
        });
    }
    Ok(())
}

/// A bundle's announced shape that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleShapeError {
    /// The announced size is over the limit.
    #[error("bundle of {bytes} bytes is over the {limit} byte limit")]
    TooLarge {
        /// The announced size, in bytes.
        bytes: u64,
        /// The largest bundle accepted, in bytes.
        limit: u64,
    },
    /// The announced chunk count is not the one the size implies.
    #[error("{announced} chunks announced; {bytes} bytes make {expected} chunk(s)")]
    ChunkCount {
        /// The chunk count announced.
        announced: u32,
        /// The announced size, in bytes.
        bytes: u64,
        /// The chunk count that size implies ([`bundle_chunks`]).
        expected: u64,
    },
}

/// Chunks a bundle of `bytes` travels in: `bytes / REPO_CHUNK_BYTES` rounded up, at least 1.
pub fn bundle_chunks(bytes: u64) -> u64 {
    bytes.div_ceil(REPO_CHUNK_BYTES as u64).max(1)
}

/// A bundle's size within `bytes_max` and its chunk count the one the size implies: checked
/// before anything is sized by these peer-chosen numbers.
pub fn check_bundle_shape(
    bytes: u64,
    total_chunks: u32,
    bytes_max: u64,
) -> Result<(), BundleShapeError> {
    if bytes > bytes_max {
        return Err(BundleShapeError::TooLarge {
            bytes,
            limit: bytes_max,
        });
    }
    let expected = bundle_chunks(bytes);
    if u64::from(total_chunks) != expected {
        return Err(BundleShapeError::ChunkCount {
            announced: total_chunks,
            bytes,
            expected,
        });
    }
    Ok(())
}

/// Admit an assignment from `from` at `agreed_price` only for `bid`, a live bid this node
/// made for the same task (expired reservations are gone before this is asked).
pub fn admit_assignment<P: PartialEq>(
    bid: Option<&LiveBid<P>>,
    from: &P,
    agreed_price: Vibe,
) -> Result<(), AdmissionRefusal> {
    let bid = bid.ok_or(AdmissionRefusal::NoLiveBid)?;
    if bid.origin != *from {
        return Err(AdmissionRefusal::OtherOriginator);
    }
    if bid.price != agreed_price {
        return Err(AdmissionRefusal::Price {
            agreed: agreed_price,
            bid: bid.price,
        });
    }
    if bid.claimed {
        return Err(AdmissionRefusal::AlreadyClaimed);
    }
    Ok(())
}

/// Admit a peer's decrypted task: the repository must come as a bundle, never as a path on
/// this node's disk (that is for this node's own tasks only), named by its root commit;
/// the base commit must be a full commit id (the repository cache names refs after it).
/// The task must also be the one the request described: its prompt and base commit hash to
/// the request's `content_hash` the bid was made for (no bait and switch).
pub fn admit_payload(
    payload: &TaskPayload,
    bid_content_hash: &str,
) -> Result<(), AdmissionRefusal> {
    match &payload.repo {
        RepoDelivery::LocalPath(_) => return Err(AdmissionRefusal::LocalPath),
        RepoDelivery::Bundle { root_commit } => {
            if !is_object_id(root_commit) || !is_object_id(&payload.base_commit) {
                return Err(AdmissionRefusal::RepositoryId);
            }
        }
    }
    if content_hash(&payload.prompt, &payload.base_commit) != bid_content_hash {
        return Err(AdmissionRefusal::ContentMismatch);
    }
    Ok(())
}

/// What a `TaskDistributionRequest` commits to: SHA-256 (hex) of the prompt, a zero byte and
/// the base commit. The executor checks the sealed task against it before running.
pub fn content_hash(prompt: &str, base_commit: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(prompt.as_bytes());
    hasher.update([0]);
    hasher.update(base_commit.as_bytes());
    hex::encode(hasher.finalize())
}

/// How long an executor may hold an assignment, in seconds: the task's own timeout (capped
/// at `run_deadline_s`) plus `grace_s` for the result to travel back, or `run_deadline_s`
/// when the task names none. Heartbeats do not extend it: an executor that reports progress
/// forever cannot hold the escrow forever.
pub fn assignment_deadline_s(requested_timeout_s: u64, run_deadline_s: u64, grace_s: u64) -> u64 {
    match requested_timeout_s {
        0 => run_deadline_s,
        requested => requested.min(run_deadline_s).saturating_add(grace_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_past_the_storage_cap_is_refused() {
        const GB: u64 = 1_000_000_000;
        assert_eq!(check_storage(u64::MAX, u64::MAX, None), Ok(()), "no cap");
        assert_eq!(
            check_storage(GB, 49 * GB, Some(50 * GB)),
            Ok(()),
            "exactly full"
        );
        assert_eq!(check_storage(0, 50 * GB, Some(50 * GB)), Ok(()));
        let refusal = check_storage(GB + 1, 49 * GB, Some(50 * GB)).unwrap_err();
        assert_eq!(
            refusal,
            AdmissionRefusal::Storage {
                bundle: GB + 1,
                used: 49 * GB,
                cap: 50 * GB
            }
        );
        assert!(
            refusal.to_string().contains("resources.storage_gb"),
            "{refusal}"
        );
        assert!(
            check_storage(1, u64::MAX, Some(u64::MAX)).is_err(),
            "no overflow"
        );
        assert!(
            check_storage(1, 60 * GB, Some(50 * GB)).is_err(),
            "already over"
        );
    }

    #[test]
    fn assignments_have_a_deadline_heartbeats_cannot_extend() {
        assert_eq!(assignment_deadline_s(0, 3600, 30), 3600);
        assert_eq!(assignment_deadline_s(60, 3600, 30), 90);
        assert_eq!(assignment_deadline_s(100_000, 3600, 30), 3630);
        assert_eq!(assignment_deadline_s(u64::MAX, u64::MAX, 30), u64::MAX);
    }

    #[test]
    fn assignments_are_admitted_only_for_a_live_bid_at_its_price() {
        let bid = LiveBid {
            origin: "origin",
            price: Vibe::from_whole(2),
            content_hash: String::new(),
            claimed: false,
        };
        assert_eq!(
            admit_assignment(Some(&bid), &"origin", Vibe::from_whole(2)),
            Ok(())
        );
        assert_eq!(
            admit_assignment(None, &"origin", Vibe::from_whole(2)),
            Err(AdmissionRefusal::NoLiveBid)
        );
        assert_eq!(
            admit_assignment(Some(&bid), &"other", Vibe::from_whole(2)),
            Err(AdmissionRefusal::OtherOriginator)
        );
        assert!(matches!(
            admit_assignment(Some(&bid), &"origin", Vibe::from_micros(1_999_999)),
            Err(AdmissionRefusal::Price { .. })
        ));
        assert!(matches!(
            admit_assignment(Some(&bid), &"origin", Vibe::from_whole(3)),
            Err(AdmissionRefusal::Price { .. })
        ));
        let claimed = LiveBid {
            claimed: true,
            ..bid
        };
        assert_eq!(
            admit_assignment(Some(&claimed), &"origin", Vibe::from_whole(2)),
            Err(AdmissionRefusal::AlreadyClaimed)
        );
    }

    #[test]
    fn a_peer_cannot_name_a_path_on_this_nodes_disk_nor_a_repository_by_another_name() {
        let commit = "c".repeat(40);
        let mut payload = TaskPayload {
            title: String::new(),
            prompt: "p".into(),
            executor_profile: "SHELL".into(),
            base_commit: commit.clone(),
            repo: RepoDelivery::LocalPath("/etc".into()),
            timeout_s: 0,
        };
        let hash = content_hash("p", &commit);
        assert_eq!(
            admit_payload(&payload, &hash),
            Err(AdmissionRefusal::LocalPath)
        );
        payload.repo = RepoDelivery::Bundle {
            root_commit: "r".repeat(40),
        };
        assert_eq!(
            admit_payload(&payload, &hash),
            Err(AdmissionRefusal::RepositoryId)
        );
        payload.repo = RepoDelivery::Bundle {
            root_commit: "0".repeat(40),
        };
        assert_eq!(admit_payload(&payload, &hash), Ok(()));
        payload.base_commit = "main".into();
        assert_eq!(
            admit_payload(&payload, &content_hash("p", "main")),
            Err(AdmissionRefusal::RepositoryId)
        );
    }

    #[test]
    fn the_task_must_be_the_one_the_bid_was_for() {
        let payload = TaskPayload {
            title: "t".into(),
            prompt: "fix the typo".into(),
            executor_profile: "SHELL".into(),
            base_commit: "a".repeat(40),
            repo: RepoDelivery::Bundle {
                root_commit: "0".repeat(40),
            },
            timeout_s: 0,
        };
        let bid_for = content_hash("fix the typo", &"a".repeat(40));
        assert_eq!(admit_payload(&payload, &bid_for), Ok(()));
        for other in [
            content_hash("rm -rf ~", &"a".repeat(40)),
            content_hash("fix the typo", &"b".repeat(40)),
            // The separator keeps prompt and commit from sliding into each other.
            content_hash("fix the typoa", &"a".repeat(39)),
            String::new(),
        ] {
            assert_eq!(
                admit_payload(&payload, &other),
                Err(AdmissionRefusal::ContentMismatch)
            );
        }
        assert_eq!(bid_for.len(), 64);
    }

    #[test]
    fn a_bundles_chunk_count_is_the_one_its_size_implies() {
        let chunk = REPO_CHUNK_BYTES as u64;
        assert_eq!(bundle_chunks(0), 1);
        assert_eq!(bundle_chunks(1), 1);
        assert_eq!(bundle_chunks(chunk), 1);
        assert_eq!(bundle_chunks(chunk + 1), 2);
        assert_eq!(check_bundle_shape(0, 1, 10), Ok(()));
        assert_eq!(check_bundle_shape(chunk * 3, 3, chunk * 3), Ok(()));
        for (bytes, total) in [(1000, 0), (1000, 2), (1000, u32::MAX), (chunk + 1, 1)] {
            assert!(
                matches!(
                    check_bundle_shape(bytes, total, u64::MAX),
                    Err(BundleShapeError::ChunkCount { .. })
                ),
                "{bytes} bytes in {total} chunks"
            );
        }
        assert!(matches!(
            check_bundle_shape(11, 1, 10),
            Err(BundleShapeError::TooLarge { .. })
        ));
        // The largest size a u64 can say does not overflow the count.
        assert!(check_bundle_shape(u64::MAX, u32::MAX, u64::MAX).is_err());
    }
}
