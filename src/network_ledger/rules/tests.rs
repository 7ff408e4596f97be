//! One test per rule, each an attack or a legal move, and a property test over random
//! sequences of entries (valid and invalid) from a handful of accounts.

use proptest::prelude::*;

use super::*;
use crate::identity::Identity;
use crate::messages::Vibe;
use crate::network_ledger::entry::sign;

/// A stream in memory: every message gets the next sequence and the given time.
struct Stream {
    state: LedgerState,
    sequence: u64,
    time_ms: i64,
}

impl Stream {
    fn new(treasury: &Identity) -> Self {
        Stream {
            state: LedgerState::new([treasury.public_key()]),
            sequence: 0,
            time_ms: 1_000_000,
        }
    }

    /// `signer` writes `body` on its own subject, naming its real previous sequence.
    fn write(&mut self, signer: &Identity, body: EntryBody) -> Result<Applied, Skip> {
        let prev = self.state.last_sequence(&signer.public_key());
        let bytes = sign(signer, Uuid::new_v4(), prev, body).unwrap();
        self.put(signer.public_key(), &bytes)
    }

    /// Raw bytes on `account`'s subject.
    fn put(&mut self, account: AccountKey, bytes: &[u8]) -> Result<Applied, Skip> {
        self.sequence += 1;
        let slot = StreamSlot {
            account,
            sequence: self.sequence,
            time_ms: self.time_ms,
        };
        let verdict = self.state.apply(&slot, bytes);
        assert_eq!(
            self.state.circulating(),
            self.state.minted(),
            "conservation"
        );
        verdict
    }
}

fn vibe(whole: u64) -> Vibe {
    Vibe::from_whole(whole)
}

fn mint(to: &Identity, whole: u64) -> EntryBody {
    EntryBody::Mint {
        to: to.public_key(),
        amount: vibe(whole),
        memo: "grant".into(),
    }
}

fn transfer(to: &Identity, whole: u64) -> EntryBody {
    EntryBody::Transfer {
        to: to.public_key(),
        amount: vibe(whole),
        memo: String::new(),
    }
}

fn hold(id: Uuid, payee: &Identity, whole: u64, deadline_ms: i64) -> EntryBody {
    EntryBody::Hold {
        hold: id,
        payee: payee.public_key(),
        amount: vibe(whole),
        task: Uuid::new_v4(),
        deadline_ms,
    }
}

/// Treasury, payer funded with 10 VIBE, payee with nothing.
fn funded() -> (Stream, Identity, Identity, Identity) {
    let (treasury, payer, payee) = (
        Identity::ephemeral(),
        Identity::ephemeral(),
        Identity::ephemeral(),
    );
    let mut stream = Stream::new(&treasury);
    stream.write(&treasury, mint(&payer, 10)).unwrap();
    (stream, treasury, payer, payee)
}

fn micros(whole: u64) -> u64 {
    vibe(whole).micros()
}

#[test]
fn only_a_treasury_key_mints() {
    let (mut stream, _, payer, payee) = funded();
    assert_eq!(
        stream.write(&payer, mint(&payee, 5)),
        Err(Skip::NotTreasury)
    );
    assert_eq!(stream.state.balance(&payee.public_key()), 0);
    assert_eq!(stream.state.minted(), u128::from(micros(10)));
}

#[test]
fn a_transfer_moves_money_and_an_overdraft_moves_none() {
    let (mut stream, _, payer, payee) = funded();
    stream.write(&payer, transfer(&payee, 4)).unwrap();
    assert_eq!(
        stream.write(&payer, transfer(&payee, 7)),
        Err(Skip::Overdraft)
    );
    assert_eq!(stream.state.balance(&payer.public_key()), micros(6));
    assert_eq!(stream.state.balance(&payee.public_key()), micros(4));
}

#[test]
fn a_zero_amount_and_a_payment_to_oneself_are_skipped() {
    let (mut stream, _, payer, _) = funded();
    assert_eq!(
        stream.write(&payer, transfer(&payer, 1)),
        Err(Skip::SelfPayment)
    );
    let zero = EntryBody::Transfer {
        to: [7; 32],
        amount: Vibe::from_micros(0),
        memo: String::new(),
    };
    assert_eq!(stream.write(&payer, zero), Err(Skip::ZeroAmount));
}

#[test]
fn a_double_spend_signed_against_one_sequence_applies_once() {
    let (mut stream, _, payer, payee) = funded();
    let prev = stream.state.last_sequence(&payer.public_key());
    // Two transfers of 6 from a balance of 10, both written after the same sequence (as two
    // concurrent publishes would be): at most one can apply.
    let first = sign(&payer, Uuid::new_v4(), prev, transfer(&payee, 6)).unwrap();
    let second = sign(&payer, Uuid::new_v4(), prev, transfer(&payee, 6)).unwrap();
    assert!(stream.put(payer.public_key(), &first).is_ok());
    assert_eq!(
        stream.put(payer.public_key(), &second),
        Err(Skip::StalePrev)
    );
    assert_eq!(stream.state.balance(&payee.public_key()), micros(6));
}

#[test]
fn a_debit_signed_for_another_account_is_skipped() {
    let (mut stream, _, payer, payee) = funded();
    // The thief publishes its own signed transfer on the payer's subject.
    let bytes = sign(&payee, Uuid::new_v4(), 1, transfer(&payee, 1)).unwrap();
    assert_eq!(
        stream.put(payer.public_key(), &bytes),
        Err(Skip::WrongAccount)
    );
    assert_eq!(stream.state.balance(&payer.public_key()), micros(10));
}

#[test]
fn a_replayed_entry_is_skipped() {
    let (mut stream, _, payer, payee) = funded();
    let prev = stream.state.last_sequence(&payer.public_key());
    let bytes = sign(&payer, Uuid::new_v4(), prev, transfer(&payee, 2)).unwrap();
    stream.put(payer.public_key(), &bytes).unwrap();
    assert_eq!(stream.put(payer.public_key(), &bytes), Err(Skip::StalePrev));
    assert_eq!(stream.state.balance(&payee.public_key()), micros(2));
}

#[test]
fn an_entry_id_applies_once_even_with_a_fresh_prev() {
    let (mut stream, _, payer, payee) = funded();
    let id = Uuid::new_v4();
    let prev = stream.state.last_sequence(&payer.public_key());
    stream
        .put(
            payer.public_key(),
            &sign(&payer, id, prev, transfer(&payee, 2)).unwrap(),
        )
        .unwrap();
    let prev = stream.state.last_sequence(&payer.public_key());
    let again = sign(&payer, id, prev, transfer(&payee, 2)).unwrap();
    assert_eq!(stream.put(payer.public_key(), &again), Err(Skip::Replayed));
}

#[test]
fn junk_on_an_account_subject_costs_its_owner_only_a_retry() {
    let (mut stream, _, payer, payee) = funded();
    let prev = stream.state.last_sequence(&payer.public_key());
    let signed_before_junk = sign(&payer, Uuid::new_v4(), prev, transfer(&payee, 1)).unwrap();
    assert_eq!(
        stream.put(payer.public_key(), b"junk"),
        Err(Skip::Malformed)
    );
    assert_eq!(
        stream.put(payer.public_key(), &signed_before_junk),
        Err(Skip::StalePrev)
    );
    // The retry names the junk's sequence and applies once.
    stream.write(&payer, transfer(&payee, 1)).unwrap();
    assert_eq!(stream.state.balance(&payer.public_key()), micros(9));
}

#[test]
fn a_hold_takes_the_money_out_of_both_accounts_until_released() {
    let (mut stream, _, payer, payee) = funded();
    let id = Uuid::new_v4();
    let deadline = stream.time_ms + 60_000;
    stream.write(&payer, hold(id, &payee, 4, deadline)).unwrap();
    assert_eq!(stream.state.balance(&payer.public_key()), micros(6));
    assert_eq!(stream.state.balance(&payee.public_key()), 0);
    stream
        .write(&payer, EntryBody::Release { hold: id })
        .unwrap();
    assert_eq!(stream.state.balance(&payee.public_key()), micros(4));
    assert_eq!(stream.state.hold(&id).unwrap().state, HoldState::Released);
    // Released once: a second release is skipped.
    assert_eq!(
        stream.write(&payer, EntryBody::Release { hold: id }),
        Err(Skip::HoldSettled)
    );
    assert_eq!(stream.state.balance(&payee.public_key()), micros(4));
}

#[test]
fn a_hold_past_its_funds_or_with_a_bad_deadline_is_skipped() {
    let (mut stream, _, payer, payee) = funded();
    let now = stream.time_ms;
    assert_eq!(
        stream.write(&payer, hold(Uuid::new_v4(), &payee, 11, now + 1000)),
        Err(Skip::Overdraft)
    );
    assert_eq!(
        stream.write(&payer, hold(Uuid::new_v4(), &payee, 1, now)),
        Err(Skip::BadDeadline)
    );
    assert_eq!(
        stream.write(
            &payer,
            hold(Uuid::new_v4(), &payee, 1, now + MAX_HOLD_MS + 1)
        ),
        Err(Skip::BadDeadline)
    );
    let id = Uuid::new_v4();
    stream
        .write(&payer, hold(id, &payee, 1, now + 1000))
        .unwrap();
    assert_eq!(
        stream.write(&payer, hold(id, &payee, 1, now + 1000)),
        Err(Skip::HoldExists)
    );
}

#[test]
fn only_the_payer_releases_and_only_the_payee_commits() {
    let (mut stream, treasury, payer, payee) = funded();
    let id = Uuid::new_v4();
    let deadline = stream.time_ms + 60_000;
    stream.write(&payer, hold(id, &payee, 4, deadline)).unwrap();
    let stranger = Identity::ephemeral();
    stream.write(&treasury, mint(&stranger, 1)).unwrap();
    assert_eq!(
        stream.write(&stranger, EntryBody::Release { hold: id }),
        Err(Skip::WrongParty)
    );
    assert_eq!(
        stream.write(&payee, EntryBody::Release { hold: id }),
        Err(Skip::WrongParty)
    );
    let commit = EntryBody::Commit {
        hold: id,
        result_hash: [1; 32],
    };
    assert_eq!(stream.write(&payer, commit.clone()), Err(Skip::WrongParty));
    stream.write(&payee, commit.clone()).unwrap();
    assert_eq!(stream.write(&payee, commit), Err(Skip::CommitState));
    assert_eq!(
        stream.write(
            &payee,
            EntryBody::Release {
                hold: Uuid::new_v4()
            }
        ),
        Err(Skip::UnknownHold)
    );
}

#[test]
fn a_claim_needs_a_timely_commit_and_a_passed_deadline() {
    let (mut stream, _, payer, payee) = funded();
    let id = Uuid::new_v4();
    let deadline = stream.time_ms + 60_000;
    stream.write(&payer, hold(id, &payee, 4, deadline)).unwrap();
    let claim = EntryBody::Claim { hold: id };
    // Without a commit: refused before and after the deadline.
    assert_eq!(stream.write(&payee, claim.clone()), Err(Skip::WrongTime));
    stream
        .write(
            &payee,
            EntryBody::Commit {
                hold: id,
                result_hash: [2; 32],
            },
        )
        .unwrap();
    // Committed, but the deadline has not passed.
    assert_eq!(stream.write(&payee, claim.clone()), Err(Skip::WrongTime));
    stream.time_ms = deadline;
    // The payer cannot refund a committed hold.
    assert_eq!(
        stream.write(&payer, EntryBody::Refund { hold: id }),
        Err(Skip::CommitState)
    );
    stream.write(&payee, claim).unwrap();
    assert_eq!(stream.state.balance(&payee.public_key()), micros(4));
    assert_eq!(stream.state.hold(&id).unwrap().state, HoldState::Claimed);
}

#[test]
fn a_claim_without_a_commit_is_skipped_and_the_payer_refunds() {
    let (mut stream, _, payer, payee) = funded();
    let id = Uuid::new_v4();
    let deadline = stream.time_ms + 60_000;
    stream.write(&payer, hold(id, &payee, 4, deadline)).unwrap();
    assert_eq!(
        stream.write(&payer, EntryBody::Refund { hold: id }),
        Err(Skip::WrongTime)
    );
    stream.time_ms = deadline + 1;
    assert_eq!(
        stream.write(&payee, EntryBody::Claim { hold: id }),
        Err(Skip::CommitState)
    );
    // A commit after the deadline is too late.
    assert_eq!(
        stream.write(
            &payee,
            EntryBody::Commit {
                hold: id,
                result_hash: [3; 32],
            }
        ),
        Err(Skip::WrongTime)
    );
    stream
        .write(&payer, EntryBody::Refund { hold: id })
        .unwrap();
    assert_eq!(stream.state.balance(&payer.public_key()), micros(10));
}

#[test]
fn a_dispute_refunds_before_the_deadline_only() {
    let (mut stream, _, payer, payee) = funded();
    let id = Uuid::new_v4();
    let deadline = stream.time_ms + 60_000;
    stream.write(&payer, hold(id, &payee, 4, deadline)).unwrap();
    let dispute = EntryBody::Dispute {
        hold: id,
        reason: "diff does not apply".into(),
    };
    assert_eq!(stream.write(&payee, dispute.clone()), Err(Skip::WrongParty));
    stream.write(&payer, dispute.clone()).unwrap();
    assert_eq!(stream.state.balance(&payer.public_key()), micros(10));
    assert_eq!(stream.state.hold(&id).unwrap().state, HoldState::Disputed);
    let late = Uuid::new_v4();
    stream
        .write(&payer, hold(late, &payee, 1, deadline))
        .unwrap();
    stream.time_ms = deadline;
    assert_eq!(
        stream.write(
            &payer,
            EntryBody::Dispute {
                hold: late,
                reason: String::new()
            }
        ),
        Err(Skip::WrongTime)
    );
}

#[test]
fn a_credit_past_u64_is_skipped() {
    let treasury = Identity::ephemeral();
    let rich = Identity::ephemeral();
    let mut stream = Stream::new(&treasury);
    let largest = EntryBody::Mint {
        to: rich.public_key(),
        amount: crate::messages::vibe::VIBE_MAX,
        memo: String::new(),
    };
    // The wire refuses any single amount above VIBE_MAX; repeated grants reach u64::MAX.
    let fits = u64::MAX / crate::messages::vibe::VIBE_MAX.micros();
    for _ in 0..fits {
        stream.write(&treasury, largest.clone()).unwrap();
    }
    assert_eq!(stream.write(&treasury, largest), Err(Skip::Overflow));
    assert_eq!(
        stream.state.minted(),
        u128::from(fits * crate::messages::vibe::VIBE_MAX.micros())
    );
}

#[test]
fn an_executor_runs_only_on_an_escrow_held_for_it_for_its_price_and_long_enough() {
    let (mut stream, _, payer, payee) = funded();
    let id = Uuid::new_v4();
    let deadline = stream.time_ms + 60_000;
    stream.write(&payer, hold(id, &payee, 4, deadline)).unwrap();
    let me = payee.public_key();
    let held = stream.state.hold(&id);
    assert_eq!(check_hold(id, held, &me, micros(4), deadline), Ok(()));
    assert_eq!(
        check_hold(id, None, &me, micros(4), deadline),
        Err(HoldRefusal::Missing(id))
    );
    assert_eq!(
        check_hold(id, held, &payer.public_key(), micros(4), deadline),
        Err(HoldRefusal::OtherPayee(id))
    );
    assert!(matches!(
        check_hold(id, held, &me, micros(5), deadline),
        Err(HoldRefusal::TooSmall { .. })
    ));
    assert_eq!(
        check_hold(id, held, &me, micros(4), deadline + 1),
        Err(HoldRefusal::TooShort(id))
    );
    assert_eq!(stream.state.escrowed_by(&payer.public_key()), micros(4));
    stream
        .write(&payer, EntryBody::Release { hold: id })
        .unwrap();
    assert_eq!(
        check_hold(id, stream.state.hold(&id), &me, micros(4), deadline),
        Err(HoldRefusal::Settled(id))
    );
    assert_eq!(stream.state.escrowed_by(&payer.public_key()), 0);
}

#[test]
fn bytes_on_a_non_account_subject_are_not_entries() {
    let (mut stream, _, payer, payee) = funded();
    let bytes = sign(&payer, Uuid::new_v4(), 1, transfer(&payee, 1)).unwrap();
    // The slot's account is the subject's; junk keys make a wrong-account skip.
    assert_eq!(stream.put([0; 32], &bytes), Err(Skip::WrongAccount));
}

/// One random move by one of four actors (0 is the treasury).
#[derive(Debug, Clone)]
enum Move {
    Mint {
        to: usize,
        amount: u64,
    },
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    Hold {
        from: usize,
        to: usize,
        amount: u64,
        slot: usize,
        ahead_ms: i64,
    },
    Commit {
        by: usize,
        slot: usize,
    },
    Release {
        by: usize,
        slot: usize,
    },
    Claim {
        by: usize,
        slot: usize,
    },
    Dispute {
        by: usize,
        slot: usize,
    },
    Refund {
        by: usize,
        slot: usize,
    },
    StalePrev {
        from: usize,
        to: usize,
        amount: u64,
    },
    Junk {
        on: usize,
    },
    Tick {
        ms: i64,
    },
}

fn moves() -> impl Strategy<Value = Move> {
    let who = 0usize..4;
    let slot = 0usize..4;
    let amount = 0u64..20_000_000;
    prop_oneof![
        (who.clone(), amount.clone()).prop_map(|(to, amount)| Move::Mint { to, amount }),
        (who.clone(), who.clone(), amount.clone()).prop_map(|(from, to, amount)| Move::Transfer {
            from,
            to,
            amount
        }),
        (
            who.clone(),
            who.clone(),
            amount.clone(),
            slot.clone(),
            -10i64..100_000
        )
            .prop_map(|(from, to, amount, slot, ahead_ms)| Move::Hold {
                from,
                to,
                amount,
                slot,
                ahead_ms
            }),
        (who.clone(), slot.clone()).prop_map(|(by, slot)| Move::Commit { by, slot }),
        (who.clone(), slot.clone()).prop_map(|(by, slot)| Move::Release { by, slot }),
        (who.clone(), slot.clone()).prop_map(|(by, slot)| Move::Claim { by, slot }),
        (who.clone(), slot.clone()).prop_map(|(by, slot)| Move::Dispute { by, slot }),
        (who.clone(), slot.clone()).prop_map(|(by, slot)| Move::Refund { by, slot }),
        (who.clone(), who.clone(), amount).prop_map(|(from, to, amount)| Move::StalePrev {
            from,
            to,
            amount
        }),
        who.prop_map(|on| Move::Junk { on }),
        (0i64..50_000).prop_map(|ms| Move::Tick { ms }),
    ]
}

/// Turn moves into the stream's messages: (account, time, bytes).
fn messages(actors: &[Identity], holds: &[Uuid], plan: &[Move]) -> Vec<(AccountKey, i64, Vec<u8>)> {
    let mut shadow = LedgerState::new([actors[0].public_key()]);
    let mut out = Vec::new();
    let (mut sequence, mut time_ms) = (0u64, 1_000_000i64);
    for step in plan {
        let (signer, prev_offset, body) = match step.clone() {
            Move::Tick { ms } => {
                time_ms += ms;
                continue;
            }
            Move::Junk { on } => {
                out.push((actors[on].public_key(), time_ms, b"junk".to_vec()));
                sequence += 1;
                let slot = StreamSlot {
                    account: actors[on].public_key(),
                    sequence,
                    time_ms,
                };
                let _ = shadow.apply(&slot, b"junk");
                continue;
            }
            Move::Mint { to, amount } => (
                0,
                0,
                EntryBody::Mint {
                    to: actors[to].public_key(),
                    amount: Vibe::from_micros(amount),
                    memo: String::new(),
                },
            ),
            Move::Transfer { from, to, amount } => (from, 0, body_transfer(&actors[to], amount)),
            Move::StalePrev { from, to, amount } => (from, 1, body_transfer(&actors[to], amount)),
            Move::Hold {
                from,
                to,
                amount,
                slot,
                ahead_ms,
            } => (
                from,
                0,
                EntryBody::Hold {
                    hold: holds[slot],
                    payee: actors[to].public_key(),
                    amount: Vibe::from_micros(amount),
                    task: Uuid::nil(),
                    deadline_ms: time_ms + ahead_ms,
                },
            ),
            Move::Commit { by, slot } => (
                by,
                0,
                EntryBody::Commit {
                    hold: holds[slot],
                    result_hash: [0; 32],
                },
            ),
            Move::Release { by, slot } => (by, 0, EntryBody::Release { hold: holds[slot] }),
            Move::Claim { by, slot } => (by, 0, EntryBody::Claim { hold: holds[slot] }),
            Move::Dispute { by, slot } => (
                by,
                0,
                EntryBody::Dispute {
                    hold: holds[slot],
                    reason: String::new(),
                },
            ),
            Move::Refund { by, slot } => (by, 0, EntryBody::Refund { hold: holds[slot] }),
        };
        let account = actors[signer].public_key();
        let prev = shadow.last_sequence(&account).wrapping_add(prev_offset);
        let bytes = sign(&actors[signer], Uuid::new_v4(), prev, body).unwrap();
        sequence += 1;
        let slot = StreamSlot {
            account,
            sequence,
            time_ms,
        };
        let _ = shadow.apply(&slot, &bytes);
        out.push((account, time_ms, bytes));
    }
    out
}

fn body_transfer(to: &Identity, amount: u64) -> EntryBody {
    EntryBody::Transfer {
        to: to.public_key(),
        amount: Vibe::from_micros(amount),
        memo: String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn projections_fed_the_same_entries_agree_and_conserve(plan in prop::collection::vec(moves(), 1..60)) {
        let actors: Vec<Identity> = (0..4).map(|_| Identity::ephemeral()).collect();
        let holds: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let stream = messages(&actors, &holds, &plan);
        let mut first = LedgerState::new([actors[0].public_key()]);
        let mut second = LedgerState::new([actors[0].public_key()]);
        for (index, (account, time_ms, bytes)) in stream.iter().enumerate() {
            let slot = StreamSlot { account: *account, sequence: index as u64 + 1, time_ms: *time_ms };
            let a = first.apply(&slot, bytes).map(|applied| applied.entry.id);
            let b = second.apply(&slot, bytes).map(|applied| applied.entry.id);
            prop_assert_eq!(a, b);
            prop_assert_eq!(first.circulating(), first.minted());
        }
        prop_assert_eq!(&first, &second);
        for held in first.holds().values() {
            prop_assert!(held.payer != held.payee);
        }
    }
}
