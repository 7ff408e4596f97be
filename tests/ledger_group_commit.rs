//! Group commit in the settlement engine: writes that arrive together share one SQLite
//! transaction and one fsync, each caller is answered only after the commit, and one
//! refused operation (an overdraft, a missing escrow) leaves the others of its group whole.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use actix::Addr;
use apn::actors::settler::{
    GetBalance, GetWriteStats, HoldEscrow, JournalTask, LookupTask, PayPeer, RefundEscrow,
    ReleaseEscrow, SettlementEngine, start_settlement_engine,
};
use apn::identity::Identity;
use apn::ledger::{EscrowState, Ledger, LedgerError};
use apn::messages::{TransactionReason, Vibe};
use uuid::Uuid;

fn hold(escrow: Uuid, amount: Vibe) -> HoldEscrow {
    HoldEscrow {
        transfer_id: escrow,
        task_id: escrow,
        amount,
        payee: None,
        deadline: chrono::Utc::now() + chrono::Duration::hours(1),
    }
}

fn engine(dir: &tempfile::TempDir, own: &Identity, whole: u64) -> Addr<SettlementEngine> {
    start_settlement_engine(
        &dir.path().join("ledger.sqlite3"),
        own.clone(),
        Vibe::from_whole(whole),
        None,
    )
    .unwrap()
}

#[actix_rt::test]
async fn concurrent_holds_share_commits_and_are_all_visible() {
    let dir = tempfile::tempdir().unwrap();
    let own = Identity::ephemeral();
    let engine = engine(&dir, &own, 1_000);
    let before = engine.send(GetWriteStats).await.unwrap();
    let amount = Vibe::from_whole(1);
    let escrows: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    let answers =
        futures::future::join_all(escrows.iter().map(|e| engine.send(hold(*e, amount)))).await;
    for answer in answers {
        answer.unwrap().unwrap();
    }
    let after = engine.send(GetWriteStats).await.unwrap();
    let commits = after.commits - before.commits;
    let writes = after.writes - before.writes;
    assert_eq!(writes, 64, "every hold is one write");
    assert!(
        commits <= 8,
        "64 concurrent holds took {commits} commits: they were not grouped"
    );
    let summary = engine.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(summary.balance, Vibe::from_whole(1_000 - 64));
    assert_eq!(summary.escrowed, Vibe::from_whole(64));

    // Releases in a group too, each answered with its signed payment.
    let payee = Identity::ephemeral().public_key();
    let answers = futures::future::join_all(escrows.iter().map(|e| {
        engine.send(ReleaseEscrow {
            task_id: *e,
            payee,
            amount,
        })
    }))
    .await;
    for (answer, escrow) in answers.into_iter().zip(&escrows) {
        let payment = answer.unwrap().unwrap();
        assert_eq!(payment.tx_id, *escrow);
        assert_eq!(payment.amount, amount);
        assert!(payment.verify());
    }
    let summary = engine.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(summary.escrowed, Vibe::ZERO);

    // Everything answered is on disk: a fresh connection sees it.
    let ledger = Ledger::open(&dir.path().join("ledger.sqlite3"), &own.public_key()).unwrap();
    assert_eq!(ledger.own_balance().unwrap(), Vibe::from_whole(1_000 - 64));
    assert_eq!(ledger.transfer_count("release").unwrap(), 64);
    ledger.check_invariants().unwrap();
}

#[actix_rt::test]
async fn one_refused_operation_leaves_the_rest_of_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let own = Identity::ephemeral();
    let engine = engine(&dir, &own, 100);
    let ten = Vibe::from_whole(10);
    // Sent together, in this order: nine holds of 10 (90), a hold of 20 that overdraws
    // (10 left), a hold of 10 that fits, a release and a refund of escrows that never
    // existed, a payment of 1 that overdraws once the last hold took everything.
    let escrows: Vec<Uuid> = (0..11).map(|_| Uuid::new_v4()).collect();
    let mut holds = Vec::new();
    for (n, escrow) in escrows.iter().enumerate() {
        let amount = if n == 9 { Vibe::from_whole(20) } else { ten };
        holds.push(engine.send(hold(*escrow, amount)));
    }
    let missing = Uuid::new_v4();
    let release = engine.send(ReleaseEscrow {
        task_id: missing,
        payee: [9; 32],
        amount: ten,
    });
    let refund = engine.send(RefundEscrow { task_id: missing });
    let pay = engine.send(PayPeer {
        transfer_id: Uuid::new_v4(),
        payee: [9; 32],
        amount: Vibe::from_whole(1),
        reason: TransactionReason::BandwidthShare,
    });
    let (holds, release, refund, pay) =
        futures::join!(futures::future::join_all(holds), release, refund, pay);
    for (n, answer) in holds.into_iter().enumerate() {
        let answer = answer.unwrap();
        if n == 9 {
            match answer {
                Err(LedgerError::Overdraft {
                    needed, available, ..
                }) => {
                    assert_eq!(needed, Vibe::from_whole(20));
                    assert_eq!(available, ten);
                }
                other => panic!("hold 9 should overdraw, got {other:?}"),
            }
        } else {
            answer.unwrap_or_else(|e| panic!("hold {n} refused: {e}"));
        }
    }
    assert!(matches!(release.unwrap(), Err(LedgerError::NoEscrow(id)) if id == missing));
    assert!(matches!(refund.unwrap(), Err(LedgerError::NoEscrow(id)) if id == missing));
    assert!(matches!(
        pay.unwrap(),
        Err(LedgerError::Overdraft { available, .. }) if available == Vibe::ZERO
    ));
    let summary = engine.send(GetBalance).await.unwrap().unwrap();
    assert_eq!(summary.balance, Vibe::ZERO);
    assert_eq!(summary.escrowed, Vibe::from_whole(100));
    let ledger = Ledger::open(&dir.path().join("ledger.sqlite3"), &own.public_key()).unwrap();
    assert_eq!(ledger.transfer_count("hold").unwrap(), 10);
    ledger.check_invariants().unwrap();
}

#[actix_rt::test]
async fn a_read_sees_every_write_sent_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let own = Identity::ephemeral();
    let engine = engine(&dir, &own, 100);
    let task = Uuid::new_v4();
    // Fire and forget, then read at once: the journal write is ordered before the read.
    engine.do_send(JournalTask {
        id: task,
        open: true,
        view: "{\"state\":\"open\"}".into(),
    });
    let escrow = Uuid::new_v4();
    let held = engine.send(hold(escrow, Vibe::from_whole(5)));
    let balance = engine.send(GetBalance);
    let looked_up = engine.send(LookupTask(task));
    let (held, balance, looked_up) = futures::join!(held, balance, looked_up);
    held.unwrap().unwrap();
    assert_eq!(balance.unwrap().unwrap().balance, Vibe::from_whole(95));
    assert_eq!(
        looked_up.unwrap().unwrap().map(|t| t.view),
        Some("{\"state\":\"open\"}".to_string())
    );
}

const KILL_DIR_ENV: &str = "APN_GROUP_COMMIT_KILL_DIR";

/// The child: 16 callers hold and release at once through the engine, each printing the
/// escrow it settled once the release is answered. Does nothing unless the parent test
/// started it.
#[actix_rt::test]
#[ignore = "child process of answered_group_writes_survive_sigkill"]
async fn group_commit_loop_child() {
    let Some(dir) = std::env::var_os(KILL_DIR_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let own = Identity::load_or_create(&dir).unwrap();
    let engine = start_settlement_engine(
        &dir.join("ledger.sqlite3"),
        own,
        Vibe::from_whole(1_000_000),
        None,
    )
    .unwrap();
    let callers = (0..16).map(|_| {
        let engine = engine.clone();
        async move {
            loop {
                let escrow = Uuid::new_v4();
                engine
                    .send(hold(escrow, Vibe::from_micros(1_000)))
                    .await
                    .unwrap()
                    .unwrap();
                engine
                    .send(ReleaseEscrow {
                        task_id: escrow,
                        payee: [7; 32],
                        amount: Vibe::from_micros(1_000),
                    })
                    .await
                    .unwrap()
                    .unwrap();
                println!("settled {escrow}");
            }
        }
    });
    futures::future::join_all(callers).await;
}

/// SIGKILL at a random point while many callers' writes share commits: every release that
/// was answered is on disk, and the books balance.
#[test]
fn answered_group_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let identity = Identity::load_or_create(dir.path()).unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "group_commit_loop_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(escrow) = line
                    .strip_prefix("settled ")
                    .and_then(|id| id.parse::<Uuid>().ok())
                    && sender.send(escrow).is_err()
                {
                    break;
                }
            }
        });
        let target = 50 + rand::random::<u64>() % 200;
        let mut answered = Vec::new();
        while (answered.len() as u64) < target {
            answered.push(
                receiver
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the child settles"),
            );
        }
        // SAFETY: kill only signals our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        // Lines printed before the kill but not read yet were answered too.
        answered.extend(receiver.try_iter());

        let ledger = Ledger::open(&dir.path().join("ledger.sqlite3"), &identity.public_key())
            .expect("the ledger opens after SIGKILL");
        ledger.check_invariants().expect("the books balance");
        for escrow in &answered {
            assert_eq!(
                ledger.escrow_state(*escrow).unwrap(),
                Some(EscrowState::Released),
                "round {round}: escrow {escrow} was answered as released but is not on disk"
            );
        }
        let held = ledger.escrow_count(EscrowState::Held).unwrap();
        let released = ledger.escrow_count(EscrowState::Released).unwrap();
        let refunded = ledger.escrow_count(EscrowState::Refunded).unwrap();
        assert_eq!(
            ledger.transfer_count("hold").unwrap(),
            held + released + refunded
        );
        assert_eq!(ledger.transfer_count("release").unwrap(), released);
    }
}
