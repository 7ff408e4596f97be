//! Property tests of the ledger over random sequences of mints, holds, releases, refunds,
//! incoming payments, duplicate ids and overdrafts; and refusal of forged or mis-addressed
//! payments.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::collections::BTreeMap;

use apn::identity::Identity;
use apn::ledger::{EscrowState, Ledger, LedgerError, node_account};
use apn::messages::{TransactionReason, Vibe, VibeTransaction};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Mint { id: u8, amount: u64 },
    Hold { escrow: u8, amount: u64 },
    Release { escrow: u8, payee: u8 },
    Refund { escrow: u8 },
    Incoming { id: u8, amount: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 1u64..5_000).prop_map(|(id, amount)| Op::Mint { id, amount }),
        (0u8..8, 1u64..8_000).prop_map(|(escrow, amount)| Op::Hold { escrow, amount }),
        (0u8..8, 0u8..3).prop_map(|(escrow, payee)| Op::Release { escrow, payee }),
        (0u8..8).prop_map(|escrow| Op::Refund { escrow }),
        (0u8..6, 1u64..3_000).prop_map(|(id, amount)| Op::Incoming { id, amount }),
    ]
}

struct World {
    own: Identity,
    payees: Vec<Identity>,
    payer: Identity,
}

fn id(tag: &str, n: u8) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{tag}-{n}").as_bytes())
}

/// Apply one op; returns whether the ledger accepted it.
fn apply(ledger: &mut Ledger, world: &World, op: &Op) -> Result<bool, LedgerError> {
    let own = ledger.own_account().to_string();
    match op {
        Op::Mint { id: n, amount } => ledger.mint(id("mint", *n), &own, Vibe::from_micros(*amount)),
        Op::Hold { escrow, amount } => {
            ledger.hold(id("escrow", *escrow), None, Vibe::from_micros(*amount))
        }
        Op::Release { escrow, payee } => ledger
            .release(
                id("escrow", *escrow),
                &world.payees[*payee as usize].public_key(),
            )
            .map(|_| true),
        Op::Refund { escrow } => ledger.refund(id("escrow", *escrow)).map(|_| true),
        Op::Incoming { id: n, amount } => {
            let transaction = VibeTransaction::signed_with_id(
                &world.payer,
                id("incoming", *n),
                world.own.public_key(),
                Vibe::from_micros(*amount),
                TransactionReason::BandwidthShare,
                None,
                chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            );
            ledger.record_counterparty(&world.payer.public_key())?;
            ledger.record_incoming(&transaction, &world.own.public_key())
        }
    }
}

fn state(ledger: &Ledger) -> BTreeMap<String, i64> {
    ledger.balances().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn invariants_hold_after_every_step_and_replay_gives_the_same_state(ops in proptest::collection::vec(op(), 1..60)) {
        let world = World { own: Identity::ephemeral(), payees: (0..3).map(|_| Identity::ephemeral()).collect(), payer: Identity::ephemeral() };
        let mut ledger = Ledger::open_in_memory(&world.own.public_key()).unwrap();
        let mut settled: BTreeMap<u8, EscrowState> = BTreeMap::new();
        let mut accepted = Vec::new();
        for op in &ops {
            let before = state(&ledger);
            let result = apply(&mut ledger, &world, op);
            if result.is_ok() {
                accepted.push(op.clone());
            }
            // Conservation and no negative own/escrow balance, after every step.
            ledger.check_invariants().unwrap();
            let after = state(&ledger);
            match (&result, op) {
                // A refused operation writes nothing.
                (Err(_), _) => prop_assert_eq!(&before, &after),
                (Ok(_), Op::Release { escrow, .. }) | (Ok(_), Op::Refund { escrow }) => {
                    // Released or refunded at most once.
                    prop_assert!(!settled.contains_key(escrow), "escrow {} settled twice", escrow);
                    let state = if matches!(op, Op::Release { .. }) { EscrowState::Released } else { EscrowState::Refunded };
                    settled.insert(*escrow, state);
                }
                _ => {}
            }
            if let (Err(LedgerError::Overdraft { .. }), Op::Hold { amount, .. }) = (&result, op) {
                let own = before.get(ledger.own_account()).copied().unwrap_or(0);
                prop_assert!(own < *amount as i64, "an affordable hold was refused");
            }
        }
        for (escrow, state) in &settled {
            prop_assert_eq!(ledger.escrow_state(id("escrow", *escrow)).unwrap(), Some(*state));
        }
        // Replaying the whole sequence on a fresh ledger gives the same state.
        let mut replay = Ledger::open_in_memory(&world.own.public_key()).unwrap();
        for op in &ops {
            let _ = apply(&mut replay, &world, op);
        }
        prop_assert_eq!(state(&ledger), state(&replay));
        // Retrying every accepted operation changes nothing: ids are idempotent, settled
        // escrows stay settled (no double pay).
        let final_state = state(&ledger);
        for op in &accepted {
            let _ = apply(&mut ledger, &world, op);
        }
        prop_assert_eq!(state(&ledger), final_state);
    }
}

#[test]
fn same_id_with_other_content_is_an_error() {
    let own = Identity::ephemeral();
    let mut ledger = Ledger::open_in_memory(&own.public_key()).unwrap();
    let account = ledger.own_account().to_string();
    let mint = Uuid::new_v4();
    assert!(ledger.mint(mint, &account, Vibe::from_whole(5)).unwrap());
    assert!(
        !ledger.mint(mint, &account, Vibe::from_whole(5)).unwrap(),
        "a retry is a no-op"
    );
    assert!(matches!(
        ledger.mint(mint, &account, Vibe::from_whole(6)),
        Err(LedgerError::TransferConflict(_))
    ));
    assert!(matches!(
        ledger.hold(Uuid::new_v4(), None, Vibe::from_whole(6)),
        Err(LedgerError::Overdraft { .. })
    ));
    assert_eq!(ledger.own_balance().unwrap(), Vibe::from_whole(5));
}

#[test]
fn forged_or_misaddressed_payments_are_refused_and_nothing_is_written() {
    let own = Identity::ephemeral();
    let payer = Identity::ephemeral();
    let mut ledger = Ledger::open_in_memory(&own.public_key()).unwrap();
    let before = ledger.balances().unwrap();
    let good = VibeTransaction::new_signed(
        &payer,
        own.public_key(),
        Vibe::from_whole(3),
        TransactionReason::TaskExecution,
        None,
    );
    let mut inflated = good.clone();
    inflated.amount = Vibe::from_whole(300);
    assert!(matches!(
        ledger.record_incoming(&inflated, &own.public_key()),
        Err(LedgerError::Forged)
    ));
    let mut stolen_signature = good.clone();
    stolen_signature.from = serde_bytes::ByteBuf::from(Identity::ephemeral().public_key().to_vec());
    assert!(matches!(
        ledger.record_incoming(&stolen_signature, &own.public_key()),
        Err(LedgerError::Forged)
    ));
    let elsewhere = VibeTransaction::new_signed(
        &payer,
        Identity::ephemeral().public_key(),
        Vibe::from_whole(3),
        TransactionReason::Relay,
        None,
    );
    assert!(matches!(
        ledger.record_incoming(&elsewhere, &own.public_key()),
        Err(LedgerError::NotPayee)
    ));
    assert_eq!(
        ledger.balances().unwrap(),
        before,
        "a refused payment wrote something"
    );
    assert_eq!(ledger.transfer_count("incoming").unwrap(), 0);
    // Genuine, but from a peer this node has no relationship with.
    assert!(matches!(
        ledger.record_incoming(&good, &own.public_key()),
        Err(LedgerError::Unsolicited)
    ));
    assert_eq!(ledger.balances().unwrap(), before);
    // Once it is a counterparty the payment is credited once, even when replayed.
    ledger.record_counterparty(&payer.public_key()).unwrap();
    assert!(ledger.record_incoming(&good, &own.public_key()).unwrap());
    assert!(!ledger.record_incoming(&good, &own.public_key()).unwrap());
    assert_eq!(ledger.own_balance().unwrap(), Vibe::from_whole(3));
    assert_eq!(
        ledger.balances().unwrap()[&node_account(&payer.public_key())],
        -3_000_000
    );
}

#[test]
fn a_newer_schema_is_a_clear_error_and_history_filters_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let own = Identity::ephemeral();
    let payee = Identity::ephemeral();
    let task = Uuid::new_v4();
    {
        let mut ledger = Ledger::open(&path, &own.public_key()).unwrap();
        let account = ledger.own_account().to_string();
        ledger
            .mint(Uuid::new_v4(), &account, Vibe::from_whole(10))
            .unwrap();
        ledger.hold(task, Some(task), Vibe::from_whole(2)).unwrap();
        ledger.release(task, &payee.public_key()).unwrap();
        let payee_account = node_account(&payee.public_key());
        let query = |account: Option<String>, reason: Option<&str>| apn::ledger::HistoryQuery {
            account,
            reason: reason.map(String::from),
            limit: 10,
            ..Default::default()
        };
        let to_payee = ledger.history(&query(Some(payee_account), None)).unwrap();
        assert_eq!(to_payee.len(), 1);
        assert_eq!(to_payee[0].kind, "release");
        assert_eq!(
            ledger
                .history(&query(None, Some("TaskExecution")))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            ledger.history(&query(None, None)).unwrap()[0].kind,
            "release",
            "newest first"
        );
        let by_task = apn::ledger::HistoryQuery {
            task_id: Some(task),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(ledger.history(&by_task).unwrap().len(), 1);
        let future = apn::ledger::HistoryQuery {
            since: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            limit: 10,
            ..Default::default()
        };
        assert!(ledger.history(&future).unwrap().is_empty());
    }
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.pragma_update(None, "user_version", 99).unwrap();
    drop(connection);
    match Ledger::open(&path, &own.public_key()) {
        Err(LedgerError::SchemaTooNew {
            found: 99,
            supported,
        }) => assert_eq!(supported, apn::ledger::SCHEMA_VERSION),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
}

#[test]
fn a_signed_payment_waits_in_the_outbox_until_its_payee_confirms() {
    let own = Identity::ephemeral();
    let payee = Identity::ephemeral();
    let stranger = Identity::ephemeral();
    let mut ledger = Ledger::open_in_memory(&own.public_key()).unwrap();
    let own_account = ledger.own_account().to_string();
    ledger
        .mint(Uuid::new_v4(), &own_account, Vibe::from_whole(10))
        .unwrap();
    let escrow = Uuid::new_v4();
    ledger
        .hold(escrow, Some(escrow), Vibe::from_whole(4))
        .unwrap();
    let signed = ledger
        .release_signed(escrow, &payee.public_key(), |amount| {
            VibeTransaction::signed_with_id(
                &own,
                escrow,
                payee.public_key(),
                amount,
                TransactionReason::TaskExecution,
                Some(escrow),
                chrono::Utc::now(),
            )
        })
        .unwrap();
    assert_eq!(
        signed.amount,
        Vibe::from_whole(4),
        "signed for the amount held"
    );
    assert_eq!(ledger.undelivered_payments().unwrap(), 1);
    // Not due yet: the first retry waits for the receipt to have had its chance.
    assert!(ledger.take_due_payments(10).unwrap().is_empty());
    // A receipt signed by anyone but the payee changes nothing.
    assert!(
        !ledger
            .confirm_delivery(escrow, &stranger.public_key())
            .unwrap()
    );
    assert_eq!(ledger.undelivered_payments().unwrap(), 1);
    assert!(
        ledger
            .confirm_delivery(escrow, &payee.public_key())
            .unwrap()
    );
    assert_eq!(ledger.undelivered_payments().unwrap(), 0);
    // A second release of the same escrow is refused and queues nothing.
    assert!(
        ledger
            .release_signed(escrow, &payee.public_key(), |_| signed.clone())
            .is_err()
    );
    assert_eq!(ledger.undelivered_payments().unwrap(), 0);
    ledger.check_invariants().unwrap();
}

#[test]
fn recovery_fails_open_tasks_and_refunds_held_escrow_once() {
    let own = Identity::ephemeral();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let (open_task, done_task) = (Uuid::new_v4(), Uuid::new_v4());
    {
        let mut ledger = Ledger::open(&path, &own.public_key()).unwrap();
        let own_account = ledger.own_account().to_string();
        ledger
            .mint(Uuid::new_v4(), &own_account, Vibe::from_whole(10))
            .unwrap();
        ledger
            .hold(open_task, Some(open_task), Vibe::from_whole(3))
            .unwrap();
        ledger.journal_task(open_task, true, "{\"v\":1}").unwrap();
        ledger.journal_task(done_task, false, "{\"v\":2}").unwrap();
        assert_eq!(ledger.open_tasks().unwrap(), 1);
    }
    let mut ledger = Ledger::open(&path, &own.public_key()).unwrap();
    let recovery = ledger.recover_after_restart("restarted").unwrap();
    assert_eq!(recovery.tasks_interrupted, 1);
    assert_eq!(recovery.escrows_refunded, 1);
    assert_eq!(ledger.own_balance().unwrap(), Vibe::from_whole(10));
    assert_eq!(ledger.escrowed().unwrap(), Vibe::ZERO);
    assert_eq!(
        ledger.escrow_state(open_task).unwrap(),
        Some(EscrowState::Refunded)
    );
    let open = ledger.journaled_task(open_task).unwrap().unwrap();
    assert_eq!(open.interrupted.as_deref(), Some("restarted"));
    assert_eq!(open.view, "{\"v\":1}");
    let done = ledger.journaled_task(done_task).unwrap().unwrap();
    assert_eq!(done.interrupted, None, "a finished task is left as it was");
    // A second recovery finds nothing left to do.
    assert_eq!(
        ledger.recover_after_restart("again").unwrap(),
        apn::ledger::Recovery::default()
    );
    ledger.check_invariants().unwrap();
}

#[test]
fn payments_stored_under_their_raw_id_by_an_older_schema_are_renamed_and_stay_deduplicated() {
    let own = Identity::ephemeral();
    let payer = Identity::ephemeral();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let payment = VibeTransaction::new_signed(
        &payer,
        own.public_key(),
        Vibe::from_whole(3),
        TransactionReason::BandwidthShare,
        None,
    );
    {
        let mut ledger = Ledger::open(&path, &own.public_key()).unwrap();
        ledger.record_counterparty(&payer.public_key()).unwrap();
        assert!(ledger.record_incoming(&payment, &own.public_key()).unwrap());
    }
    // Make it look like schema 2 wrote it: the raw tx id, version 2.
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute(
            "UPDATE transfers SET id = ?1 WHERE kind = 'incoming'",
            [payment.tx_id.to_string()],
        )
        .unwrap();
    connection.pragma_update(None, "user_version", 2).unwrap();
    drop(connection);
    let mut ledger = Ledger::open(&path, &own.public_key()).unwrap();
    let history = ledger
        .history(&apn::ledger::HistoryQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    let incoming = history.iter().find(|t| t.kind == "incoming").unwrap();
    assert_eq!(
        incoming.id,
        apn::ledger::rules::incoming_transfer_id(&payer.public_key(), &payment.tx_id)
    );
    assert!(
        !ledger.record_incoming(&payment, &own.public_key()).unwrap(),
        "the same payment after the upgrade is still a repeat"
    );
    assert_eq!(ledger.own_balance().unwrap(), Vibe::from_whole(3));
}
