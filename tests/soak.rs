//! The short soak: `apn-soak --quick` runs six `apn node` processes and a nats-server,
//! injects SIGKILLs, a SIGSTOP past the heartbeat timeout and a relay restart while tasks
//! flow, then audits every ledger. The long run is `apn-soak` with its defaults.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Far above the quick run's ~45 s; a hung soak fails here instead of hanging CI.
const SOAK_TIMEOUT: Duration = Duration::from_secs(420);

#[test]
fn the_mesh_loses_no_credit_and_no_task_under_faults() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_apn-soak"))
        .args(["--quick", "--apn", env!("CARGO_BIN_EXE_apn")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("apn-soak starts");
    let deadline = Instant::now() + SOAK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait on apn-soak") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("apn-soak ran past {SOAK_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut stdout)
        .expect("read the soak's output");
    let summary: Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["soak"] == "summary")
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    assert!(
        status.success() && summary["ok"] == true,
        "soak not clean ({status}): {summary:#}"
    );
    // The run did what it claims: tasks ran, payments crossed ledgers, every fault fired.
    assert!(
        summary["statuses"]["completed"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        summary["payments_matched"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    for fault in ["sigkill", "sigstop", "relay_restart"] {
        assert!(
            summary["faults"][fault].as_u64().unwrap_or(0) >= 1,
            "{fault} never injected: {summary}"
        );
    }
    let submitted = summary["tasks_submitted"].as_u64().unwrap_or(0);
    let finished: u64 = summary["statuses"]
        .as_object()
        .map(|s| s.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(
        finished, submitted,
        "every task reached a final state: {summary}"
    );
}
