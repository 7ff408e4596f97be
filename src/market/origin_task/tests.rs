//! Every transition of the originator's state machine, with injected time.

use std::time::Duration;

use super::*;

const WINDOW: Duration = Duration::from_millis(300);
const HEARTBEAT: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(600);

fn limits() -> OriginLimits {
    OriginLimits {
        bid_window: WINDOW,
        bid_rounds_max: 2,
        reassignments_max: 1,
        bids_per_task_max: 3,
        bids_enough: 10,
        min_task_reward: Vibe::from_whole(1),
        heartbeat_timeout: HEARTBEAT,
        run_deadline: DEADLINE,
    }
}

fn wall(seconds: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
}

fn offer(price: u64, valid_until_s: i64) -> BidOffer {
    BidOffer {
        node_id: format!("apn_{price}"),
        price: Vibe::from_whole(price),
        estimated_duration_s: 60,
        valid_until: wall(valid_until_s),
        free_slots: Some(1),
    }
}

/// A task in its first bid round, offered.
fn bidding() -> OriginTask<u32> {
    let mut task = OriginTask::new(limits());
    assert_eq!(task.bundled(), vec![Effect::Offer { round: 1 }]);
    assert_eq!(
        task.offered(1, vec![]),
        vec![Effect::CloseBiddingAfter {
            round: 1,
            after: WINDOW
        }]
    );
    task
}

/// The escrow id of a `HoldAndSeal` for `peer`.
fn hold_for(effects: &[Effect<u32>], expected_peer: u32) -> Uuid {
    match effects.last() {
        Some(Effect::HoldAndSeal {
            peer, escrow_id, ..
        }) if *peer == expected_peer => *escrow_id,
        other => panic!("expected HoldAndSeal for {expected_peer}, got {other:?} in {effects:?}"),
    }
}

/// A task with bids from 1 (best) and 2, judged, escrowing for 1.
fn escrowing() -> (OriginTask<u32>, Uuid) {
    let mut task = bidding();
    task.bid(1, offer(5, 100)).unwrap();
    task.bid(2, offer(6, 100)).unwrap();
    let judge = task.close_bidding(1);
    assert!(matches!(&judge[..], [Effect::JudgeBids { round: 1, bids }] if bids.len() == 2));
    let escrow = hold_for(&task.judged(1, vec![1, 2], wall(0)), 1);
    assert_eq!(task.phase(), Phase::Escrowing);
    (task, escrow)
}

/// A task assigned to 1 and delivered.
fn assigned() -> (OriginTask<u32>, Uuid, Instant) {
    let (mut task, escrow) = escrowing();
    let t0 = Instant::now();
    assert_eq!(
        task.prepared(escrow, t0),
        vec![Effect::SendAssignment {
            peer: 1,
            escrow_id: escrow
        }]
    );
    assert_eq!(task.phase(), Phase::Assigned);
    // The losing bidder's slot is given back once the assignment is delivered.
    assert_eq!(
        task.assignment_sent(escrow, Ok(()), wall(1)),
        vec![Effect::WithdrawBids { peers: vec![2] }]
    );
    (task, escrow, t0)
}

#[test]
fn stale_round_events_change_nothing() {
    let mut task = bidding();
    assert!(task.offered(0, vec![]).is_empty());
    assert!(task.close_bidding(7).is_empty());
    assert_eq!(task.phase(), Phase::Bidding);
    assert!(task.bundled().is_empty(), "bundled twice opens no round");
}

#[test]
fn bids_are_refused_outside_the_window_twice_past_the_limit_and_below_the_minimum() {
    let mut fresh = OriginTask::<u32>::new(limits());
    assert_eq!(fresh.bid(1, offer(5, 100)), Err(BidRefused::NotBidding));
    let mut task = bidding();
    assert_eq!(task.bid(1, offer(0, 100)), Err(BidRefused::BelowMinimum));
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    assert_eq!(task.bid(1, offer(4, 100)), Err(BidRefused::Duplicate));
    task.bid(2, offer(5, 100)).unwrap();
    task.bid(3, offer(5, 100)).unwrap();
    assert_eq!(task.bid(4, offer(5, 100)), Err(BidRefused::TooMany));
    assert_eq!(task.bids_received(), 3);
    task.close_bidding(1);
    assert_eq!(task.bid(5, offer(5, 100)), Err(BidRefused::Late));
    // A bidder of this round bidding again after the window is a copy, never withdrawn.
    assert_eq!(task.bid(2, offer(5, 100)), Err(BidRefused::Duplicate));
}

fn limits_enough(bids_enough: usize) -> OriginLimits {
    OriginLimits {
        bids_enough,
        ..limits()
    }
}

#[test]
fn the_window_closes_at_the_enough_th_bid() {
    let mut task = OriginTask::<u32>::new(limits_enough(2));
    task.bundled();
    // Five peers known to run the profile: two bids are enough.
    assert_eq!(
        task.offered(1, vec![1, 2, 3, 4, 5]),
        vec![Effect::CloseBiddingAfter {
            round: 1,
            after: WINDOW
        }]
    );
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    let effects = task.bid(2, offer(6, 100)).unwrap();
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { round: 1, bids }] if bids.len() == 2),
        "{effects:?}"
    );
    assert_eq!(task.phase(), Phase::Judging);
    // The timer that fires later changes nothing; a third bid is late.
    assert!(task.close_bidding(1).is_empty());
    assert_eq!(task.bid(3, offer(5, 100)), Err(BidRefused::Late));
}

#[test]
fn the_window_closes_once_every_known_bidder_bid() {
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled();
    task.offered(1, vec![1, 2]);
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    let effects = task.bid(2, offer(6, 100)).unwrap();
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { .. }]),
        "{effects:?}"
    );
    // Bids that came before the request was out count when it is: one known peer, one bid.
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled();
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    let effects = task.offered(1, vec![1]);
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { .. }]),
        "{effects:?}"
    );
    // No peer known: only enough bids close early; otherwise the whole window runs.
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled();
    task.offered(1, vec![]);
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    assert_eq!(task.bid(2, offer(5, 100)), Ok(vec![]));
    assert_eq!(task.phase(), Phase::Bidding);
    // A new round forgets the known peers of the last one.
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled();
    task.offered(1, vec![1]);
    task.close_bidding(1);
    task.judged(1, vec![], wall(0));
    task.offer_again(1);
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    assert_eq!(task.phase(), Phase::Bidding);
}

#[test]
fn the_window_closes_once_every_eligible_executor_bid_or_refused() {
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled();
    task.offered(1, vec![1, 2, 3]);
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    assert!(task.declined(2).is_empty());
    // A refusal twice, or from a stranger, answers for nobody else.
    assert!(task.declined(2).is_empty());
    assert!(task.declined(9).is_empty());
    assert_eq!(task.phase(), Phase::Bidding);
    let effects = task.declined(3);
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { round: 1, bids }] if bids.len() == 1),
        "{effects:?}"
    );
    // A bidder cannot also refuse; a refusal after the window changes nothing.
    assert!(task.declined(1).is_empty());

    // Everyone eligible refused, before the request was even out: the window closes empty
    // at once, and the task is offered again after a pause.
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled();
    assert!(task.declined(1).is_empty());
    let effects = task.offered(1, vec![1]);
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { round: 1, bids }] if bids.is_empty()),
        "{effects:?}"
    );
    assert_eq!(
        task.judged(1, vec![], wall(0)),
        vec![Effect::OfferAgainAfter {
            round: 1,
            after: WINDOW
        }]
    );
    // The next round forgets the refusals of the last.
    task.offer_again(1);
    assert_eq!(
        task.offered(2, vec![1]),
        vec![Effect::CloseBiddingAfter {
            round: 2,
            after: WINDOW
        }]
    );
}

#[test]
fn refusals_are_bounded_per_round() {
    let mut task = OriginTask::<u32>::new(OriginLimits {
        bids_per_task_max: 2,
        ..limits_enough(3)
    });
    task.bundled();
    task.offered(1, vec![1, 2, 3]);
    assert!(task.declined(1).is_empty());
    assert!(task.declined(2).is_empty());
    // The third refusal is past the bound: not counted, so the window stays open.
    assert!(task.declined(3).is_empty());
    assert_eq!(task.phase(), Phase::Bidding);
}

#[test]
fn empty_rounds_are_offered_again_then_the_task_fails() {
    let mut task = bidding();
    // Two rounds in all: the first empty one is offered again once.
    for round in 1..2 {
        task.close_bidding(round);
        assert_eq!(
            task.judged(round, vec![], wall(0)),
            vec![Effect::OfferAgainAfter {
                round,
                after: WINDOW
            }]
        );
        assert_eq!(
            task.offer_again(round),
            vec![Effect::Offer { round: round + 1 }]
        );
        task.offered(round + 1, vec![]);
    }
    task.close_bidding(2);
    let effects = task.judged(2, vec![], wall(0));
    assert!(
        matches!(&effects[..], [Effect::Failed { reason }] if reason.contains("no node bid after 2 round(s)")),
        "{effects:?}"
    );
    assert_eq!(task.phase(), Phase::Failed);
}

#[test]
fn an_escrow_that_cannot_be_held_moves_on_to_the_next_bid() {
    let (mut task, escrow) = escrowing();
    let next = hold_for(&task.escrow_failed(escrow, "balance".into(), wall(0)), 2);
    assert_ne!(next, escrow);
    // A late answer about the first escrow changes nothing.
    assert!(
        task.escrow_failed(escrow, "late".into(), wall(0))
            .is_empty()
    );
    let effects = task.escrow_failed(next, "balance".into(), wall(0));
    assert!(
        matches!(&effects[..], [Effect::Failed { reason }] if reason.contains("gave up after 2 attempt(s)")),
        "{effects:?}"
    );
}

#[test]
fn a_held_escrow_whose_task_cannot_be_sealed_is_refunded_before_the_next_bid() {
    let (mut task, escrow) = escrowing();
    let effects = task.prepare_failed(escrow, "no key".into(), wall(0));
    assert_eq!(effects[0], Effect::Refund { escrow_id: escrow });
    hold_for(&effects, 2);
}

#[test]
fn a_full_run_verifies_then_pays_then_completes() {
    let (mut task, escrow, t0) = assigned();
    assert!(task.heard_from(1, t0 + Duration::from_secs(1)));
    assert!(
        !task.heard_from(2, t0),
        "only the assigned executor is heard"
    );
    assert_eq!(task.started(), vec![Effect::SendBundle { peer: 1 }]);
    assert_eq!(task.phase(), Phase::Running);
    assert_eq!(
        task.result_arrived(),
        vec![Effect::Verify { escrow_id: escrow }]
    );
    assert_eq!(
        task.verified(escrow),
        vec![Effect::Release {
            peer: 1,
            price: Vibe::from_whole(5),
            escrow_id: escrow
        }]
    );
    assert!(
        task.tick(t0 + DEADLINE * 2, wall(10_000)).is_empty(),
        "settling is not overdue"
    );
    assert_eq!(
        task.released(Vibe::from_whole(5)),
        vec![Effect::Completed {
            price: Vibe::from_whole(5)
        }]
    );
    assert!(task.phase().is_final());
    assert!(
        task.cancel().is_empty(),
        "a finished task cannot be cancelled"
    );
}

#[test]
fn a_refusal_costs_no_reputation_and_a_failure_does() {
    let (mut task, escrow, _) = assigned();
    let effects = task.executor_gave_up(None, "no live bid".into(), wall(2));
    assert_eq!(effects[0], Effect::Refund { escrow_id: escrow });
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::RecordOutcome { .. }))
    );
    assert!(effects.contains(&Effect::CancelAssignment {
        peer: 1,
        reason: "no live bid".into()
    }));
    // Bidder 2's bid was withdrawn when 1 won: nothing live is left, so the task is offered
    // again.
    assert_eq!(effects.last(), Some(&Effect::Offer { round: 2 }));
    assert_eq!(task.last_failure(), Some("apn_5: no live bid"));

    let (mut task, _, _) = assigned();
    let effects = task.executor_gave_up(Some(Outcome::Failed), "exit 1".into(), wall(2));
    assert!(effects.contains(&Effect::RecordOutcome {
        peer: 1,
        outcome: Outcome::Failed
    }));
}

#[test]
fn an_undelivered_assignment_is_refunded_and_the_next_bid_tried() {
    let (mut task, escrow) = escrowing();
    task.prepared(escrow, Instant::now());
    let effects = task.assignment_sent(escrow, Err("unreachable".into()), wall(1));
    assert_eq!(effects[0], Effect::Refund { escrow_id: escrow });
    assert!(effects.contains(&Effect::Reassigning {
        reason: "unreachable".into()
    }));
    hold_for(&effects, 2);
    // A late "delivered" for the old assignment withdraws nobody.
    assert!(task.assignment_sent(escrow, Ok(()), wall(1)).is_empty());
}

#[test]
fn silence_and_the_deadline_end_an_assignment() {
    let (mut task, escrow, t0) = assigned();
    assert!(task.tick(t0 + HEARTBEAT, wall(30)).is_empty());
    let effects = task.tick(t0 + HEARTBEAT + Duration::from_millis(1), wall(31));
    assert_eq!(effects[0], Effect::Refund { escrow_id: escrow });
    assert!(effects.contains(&Effect::RecordOutcome {
        peer: 1,
        outcome: Outcome::TimedOut
    }));
    assert!(effects.contains(&Effect::Reassigning {
        reason: "no heartbeat for 30 s".into()
    }));

    let (mut task, _, t0) = assigned();
    let mut now = t0;
    while now <= t0 + DEADLINE {
        now += Duration::from_secs(20);
        task.heard_from(1, now);
    }
    let effects = task.tick(now, wall(700));
    assert!(
        effects.contains(&Effect::Reassigning {
            reason: "the run passed its 600 s deadline".into()
        }),
        "{effects:?}"
    );
}

#[test]
fn cancelling_refunds_what_is_held_even_when_the_escrow_answer_comes_later() {
    let (mut task, escrow, _) = assigned();
    assert_eq!(
        task.cancel(),
        vec![
            Effect::Refund { escrow_id: escrow },
            Effect::CancelAssignment {
                peer: 1,
                reason: "cancelled by the user".into()
            }
        ]
    );
    assert_eq!(task.phase(), Phase::Cancelled);

    let (mut task, escrow) = escrowing();
    assert!(task.cancel().is_empty());
    // The hold completes after the cancel: it is given back, nothing is sent.
    assert_eq!(
        task.prepared(escrow, Instant::now()),
        vec![Effect::Refund { escrow_id: escrow }]
    );
}

#[test]
fn a_bad_result_is_refunded_and_the_task_moves_on() {
    let (mut task, escrow, _) = assigned();
    task.started();
    task.result_arrived();
    assert_eq!(task.phase(), Phase::Verifying);
    let effects = task.executor_gave_up(Some(Outcome::BadResult), "verify failed".into(), wall(5));
    assert_eq!(effects[0], Effect::Refund { escrow_id: escrow });
    assert!(
        task.verified(escrow).is_empty(),
        "a late verification pays nothing"
    );
}

#[test]
fn only_expired_bids_left_offer_the_task_again() {
    let mut task = bidding();
    task.bid(1, offer(5, 10)).unwrap();
    task.bid(2, offer(6, 10)).unwrap();
    task.close_bidding(1);
    let effects = task.judged(1, vec![1, 2], wall(20));
    assert_eq!(effects, vec![Effect::Offer { round: 2 }]);
    assert_eq!(task.phase(), Phase::Bidding);
    assert_eq!(task.bids_received(), 0, "a new round starts with no bids");
}

#[test]
fn failing_for_good_refunds_a_live_assignment() {
    let (mut task, escrow, _) = assigned();
    task.started();
    assert_eq!(
        task.fail("cannot read the bundle".into()),
        vec![
            Effect::Refund { escrow_id: escrow },
            Effect::CancelAssignment {
                peer: 1,
                reason: "cannot read the bundle".into()
            },
            Effect::Failed {
                reason: "cannot read the bundle".into()
            }
        ]
    );
    assert!(task.fail("again".into()).is_empty());
}

#[test]
fn a_live_offer_is_asked_alone_and_its_bid_assigns_at_once() {
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    assert_eq!(
        task.bundled_direct(7),
        vec![Effect::OfferTo { round: 1, peer: 7 }]
    );
    // Whoever else is known, the round waits for the one executor asked.
    assert_eq!(
        task.offered(1, vec![1, 2, 7]),
        vec![Effect::CloseBiddingAfter {
            round: 1,
            after: WINDOW
        }]
    );
    let effects = task.bid(7, offer(5, 100)).unwrap();
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { round: 1, bids }] if bids.len() == 1),
        "{effects:?}"
    );
    let effects = task.judged(1, vec![7], wall(0));
    hold_for(&effects, 7);
    assert!(task.via_offer());
}

#[test]
fn a_refused_or_silent_offer_falls_back_to_a_full_round_at_once() {
    // Refused: the full round opens with no pause, and is not an empty round.
    let mut task = OriginTask::<u32>::new(OriginLimits {
        bid_rounds_max: 1,
        ..limits_enough(3)
    });
    task.bundled_direct(7);
    task.offered(1, vec![7]);
    let effects = task.declined(7);
    assert!(
        matches!(&effects[..], [Effect::JudgeBids { round: 1, bids }] if bids.is_empty()),
        "{effects:?}"
    );
    assert_eq!(
        task.judged(1, vec![], wall(0)),
        vec![Effect::Offer { round: 2 }]
    );
    // The full round knows everyone eligible again; its bid is assigned the usual way.
    task.offered(2, vec![1, 7]);
    assert_eq!(task.bid(1, offer(5, 100)), Ok(vec![]));
    task.close_bidding(2);
    let effects = task.judged(2, vec![1], wall(0));
    hold_for(&effects, 1);
    assert!(!task.via_offer());

    // Silent: the window's timer ends the direct round the same way.
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled_direct(7);
    task.offered(1, vec![7]);
    assert!(matches!(
        &task.close_bidding(1)[..],
        [Effect::JudgeBids { .. }]
    ));
    assert_eq!(
        task.judged(1, vec![], wall(0)),
        vec![Effect::Offer { round: 2 }]
    );
}

#[test]
fn an_offer_assignment_that_fails_asks_the_mesh_instead_of_giving_up() {
    let mut task = OriginTask::<u32>::new(limits_enough(3));
    task.bundled_direct(7);
    task.offered(1, vec![7]);
    task.bid(7, offer(5, 100)).unwrap();
    let effects = task.judged(1, vec![7], wall(0));
    let escrow_id = hold_for(&effects, 7);
    task.prepared(escrow_id, Instant::now());
    let effects = task.executor_gave_up(None, "slot taken".into(), wall(0));
    assert!(effects.contains(&Effect::Offer { round: 2 }), "{effects:?}");
    assert_eq!(task.phase(), Phase::Bidding);
}
