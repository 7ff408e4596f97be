//! Crash safety: a child process settles in a loop on a real SQLite file and is killed with
//! SIGKILL at a random point, several times. After each kill the ledger opens, the books
//! balance, no transfer is half-applied, and retrying the last ids does not pay twice.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use apn::identity::Identity;
use apn::ledger::{EscrowState, Ledger, LedgerError};
use apn::messages::Vibe;
use uuid::Uuid;

const DB_ENV: &str = "APN_LEDGER_KILL_DB";
const KEY_ENV: &str = "APN_LEDGER_KILL_KEY_DIR";
const ROUNDS: usize = 5;

fn escrow_id(n: u64) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("kill-escrow-{n}").as_bytes())
}

fn payee() -> [u8; 32] {
    [7u8; 32]
}

/// The child: hold and release in a loop, printing each settled index. Does nothing unless
/// the parent test started it.
#[test]
#[ignore = "child process of settlements_survive_sigkill"]
fn settlement_loop_child() {
    let (Some(db), Some(key_dir)) = (std::env::var_os(DB_ENV), std::env::var_os(KEY_ENV)) else {
        return;
    };
    let identity = Identity::load_or_create(Path::new(&key_dir)).unwrap();
    let mut ledger = Ledger::open(Path::new(&db), &identity.public_key()).unwrap();
    let own = ledger.own_account().to_string();
    ledger
        .mint(
            Uuid::new_v5(&Uuid::NAMESPACE_OID, b"kill-mint"),
            &own,
            Vibe::from_whole(1_000_000),
        )
        .unwrap();
    let mut n = ledger.escrow_count(EscrowState::Released).unwrap()
        + ledger.escrow_count(EscrowState::Held).unwrap();
    // Recovery: a settlement cut between hold and release is finished first.
    if n > 0 && ledger.escrow_state(escrow_id(n - 1)).unwrap() == Some(EscrowState::Held) {
        ledger.release(escrow_id(n - 1), &payee()).unwrap();
    }
    loop {
        ledger
            .hold(escrow_id(n), None, Vibe::from_micros(1_000 + n))
            .unwrap();
        ledger.release(escrow_id(n), &payee()).unwrap();
        println!("settled {n}");
        n += 1;
    }
}

#[test]
fn settlements_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.sqlite3");
    let identity = Identity::load_or_create(dir.path()).unwrap();
    let mut last_settled = None;
    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "settlement_loop_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, &db)
            .env(KEY_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .strip_prefix("settled ")
                    .and_then(|n| n.parse::<u64>().ok())
                    && sender.send(n).is_err()
                {
                    break;
                }
            }
        });
        // Kill after a random number of settlements (synchronised on the child's output).
        let target = 3 + rand::random::<u64>() % 40;
        let mut seen = 0;
        while seen < target {
            last_settled = Some(
                receiver
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the child settles"),
            );
            seen += 1;
        }
        // SAFETY: kill only signals our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();

        let mut ledger =
            Ledger::open(&db, &identity.public_key()).expect("the ledger opens after SIGKILL");
        ledger.check_invariants().expect("the books balance");
        // Nothing half-applied: every escrow row has exactly its hold transfer, every released
        // one its release transfer (a kill between hold and release leaves one held escrow).
        let held = ledger.escrow_count(EscrowState::Held).unwrap();
        let released = ledger.escrow_count(EscrowState::Released).unwrap();
        assert!(held <= 1, "round {round}: {held} escrows left held");
        assert_eq!(ledger.transfer_count("hold").unwrap(), held + released);
        assert_eq!(ledger.transfer_count("release").unwrap(), released);
        let paid = ledger
            .balances()
            .unwrap()
            .get(&apn::ledger::node_account(&payee()))
            .copied()
            .unwrap_or(0);
        let expected: i64 = (0..released).map(|n| 1_000 + n as i64).sum();
        assert_eq!(
            paid, expected,
            "round {round}: the payee got {paid}, settlements say {expected}"
        );
        // Retrying the last settled ids pays nothing twice.
        let n = last_settled.unwrap();
        assert!(
            !ledger
                .hold(escrow_id(n), None, Vibe::from_micros(1_000 + n))
                .unwrap(),
            "hold retry applied again"
        );
        assert!(matches!(
            ledger.release(escrow_id(n), &payee()),
            Err(LedgerError::EscrowSettled { .. })
        ));
        assert_eq!(
            ledger
                .balances()
                .unwrap()
                .get(&apn::ledger::node_account(&payee()))
                .copied()
                .unwrap_or(0),
            paid
        );
        drop(ledger);
    }
}
