//! Unit tests of the peer manager's plain rules.

use super::*;

#[test]
fn assignments_results_and_payments_are_never_dropped_for_a_full_mailbox() {
    let every = crate::messages::samples::every_variant(&Identity::ephemeral(), Utc::now());
    let must: Vec<&str> = every
        .iter()
        .filter(|m| must_deliver(m))
        .map(|m| m.kind())
        .collect();
    for kind in [
        "task_assigned",
        "task_cancelled",
        "execution_started",
        "execution_completed",
        "execution_failed",
        "result_chunk",
        "vibe_transaction",
        "payment_receipt",
    ] {
        assert!(must.contains(&kind), "{kind} may be dropped");
    }
    // Streams and offers may be lost under load (and are counted when they are).
    for kind in [
        "execution_logs",
        "execution_progress",
        "task_distribution_request",
        "task_bid",
    ] {
        assert!(!must.contains(&kind), "{kind} bypasses the mailbox bound");
    }
}

#[test]
fn only_unknown_unconnected_peers_make_room() {
    let now = Instant::now();
    let later = now + Duration::from_secs(1);
    let entries = [
        ("announced", true, false, now),
        ("connected", false, true, now),
        ("fresh-old", false, false, now),
        ("fresh-new", false, false, later),
    ];
    assert_eq!(peer_to_evict(entries.into_iter()), Some("fresh-old"));
    assert_eq!(peer_to_evict(entries[..2].iter().copied()), None);
}
