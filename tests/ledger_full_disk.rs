//! A full disk under the ledger: the write that does not fit is a clear `DiskFull` error,
//! nothing of it is written, the database stays whole, and writing resumes once there is
//! space. The disk is a real 1 MiB tmpfs, mounted by the test (it runs as root, like CI).
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use apn::identity::Identity;
use apn::ledger::{Ledger, LedgerError};
use apn::messages::{TransactionReason, Vibe};
use uuid::Uuid;

/// A tmpfs mounted for the test, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        SmallDisk {
            path,
            mounted,
            _dir: dir,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.path).status();
        }
    }
}

/// Fill the disk but for `room` bytes; returns the filler's path.
fn fill(dir: &Path, room: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).and_then(|_| file.sync_all()).is_ok() {}
    let size = file.metadata().unwrap().len();
    file.set_len(size.saturating_sub(room)).unwrap();
    path
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let disk = SmallDisk::new();
    let own = Identity::ephemeral();
    let payee = Identity::ephemeral();
    let path = disk.path.join("ledger.sqlite3");
    let mut ledger = Ledger::open(&path, &own.public_key()).unwrap();
    let own_account = ledger.own_account().to_string();
    let initial = 1_000_000u64;
    ledger
        .mint(Uuid::new_v4(), &own_account, Vibe::from_whole(initial))
        .unwrap();
    assert!(
        disk.mounted,
        "this test mounts a 1 MiB tmpfs and needs root (or CAP_SYS_ADMIN) to do it"
    );
    let filler = fill(&disk.path, 48 * 1024);
    let pay = |ledger: &mut Ledger| {
        ledger.pay(
            Uuid::new_v4(),
            &payee.public_key(),
            Vibe::from_whole(1),
            TransactionReason::BandwidthShare,
        )
    };
    let mut paid = 0u64;
    let error = loop {
        match pay(&mut ledger) {
            Ok(_) => paid += 1,
            Err(error) => break error,
        }
        assert!(paid < 100_000, "the disk never filled");
    };
    assert!(
        paid > 0,
        "the room left on the disk took some payments first"
    );
    assert!(
        matches!(error, LedgerError::DiskFull),
        "expected DiskFull, got {error}"
    );
    assert!(
        error
            .to_string()
            .contains("disk holding the ledger is full")
    );
    // Nothing of the failed payment was written, and the ledger is consistent.
    assert_eq!(
        ledger.own_balance().unwrap(),
        Vibe::from_whole(initial - paid)
    );
    ledger.check_invariants().unwrap();

    // Space comes back: writing resumes, and a reopened ledger agrees.
    std::fs::remove_file(filler).unwrap();
    pay(&mut ledger).unwrap();
    paid += 1;
    drop(ledger);
    let reopened = Ledger::open(&path, &own.public_key()).unwrap();
    reopened.check_invariants().unwrap();
    assert_eq!(
        reopened.own_balance().unwrap(),
        Vibe::from_whole(initial - paid)
    );
    let integrity: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}
