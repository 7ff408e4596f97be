//! The short soak: `apn-soak --quick` runs six `apn node` processes and a nats-server,
//! injects SIGKILLs, a SIGSTOP past the heartbeat timeout and a relay restart while tasks
//! flow, then audits every ledger. With `--settlement jetstream` the nodes pay on the network
//! ledger on a three-server JetStream cluster, one server of which is restarted too, and the
//! audit compares every node's projection with the stream. The long run is `apn-soak` with
//! its defaults.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Far above the quick run's ~45 s; a hung soak fails here instead of hanging CI.
const SOAK_TIMEOUT: Duration = Duration::from_secs(420);

/// Run `apn-soak --quick` with `extra` arguments and return its summary line, failing the
/// test if the soak failed or hung.
fn soak(extra: &[&str]) -> Value {
    // One soak at a time: two would share the machine's cores and each slow the other's
    // nodes past their timeouts.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = Command::new(env!("CARGO_BIN_EXE_apn-soak"))
        .args(["--quick", "--apn", env!("CARGO_BIN_EXE_apn")])
        .args(extra)
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
    summary
}

#[test]
fn the_mesh_loses_no_credit_and_no_task_under_faults() {
    let summary = soak(&[]);
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
    assert_every_task_finished(&summary);
}

/// Every task reached a final state.
fn assert_every_task_finished(summary: &Value) {
    let submitted = summary["tasks_submitted"].as_u64().unwrap_or(0);
    let finished: u64 = summary["statuses"]
        .as_object()
        .map(|s| s.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    assert!(submitted > 0, "{summary}");
    assert_eq!(
        finished, submitted,
        "every task reached a final state: {summary}"
    );
}

#[test]
fn the_network_ledger_agrees_on_every_node_under_faults() {
    let summary = soak(&["--settlement", "jetstream"]);
    assert_eq!(summary["settlement"], "jetstream");
    for fault in ["sigkill", "ledger_server_restart", "relay_restart"] {
        assert!(
            summary["faults"][fault].as_u64().unwrap_or(0) >= 1,
            "{fault} never injected: {summary}"
        );
    }
    assert!(
        summary["statuses"]["completed"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    // Escrows were paid out on the stream (the audit checked the projections agree).
    let escrows = &summary["network_ledger"]["escrows"];
    let paid = escrows["released"].as_u64().unwrap_or(0) + escrows["claimed"].as_u64().unwrap_or(0);
    assert!(paid > 0, "{summary}");
    assert_every_task_finished(&summary);
}
