//! The benchmark harness runs in the suite so it cannot rot: one quick scenario, and every
//! line it prints must be a well-formed figure. No timing is asserted.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::process::Command;

#[test]
fn quick_ledger_scenario_prints_well_formed_figures() {
    let output = Command::new(env!("CARGO_BIN_EXE_apn-bench"))
        .args(["ledger", "--quick"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // Three SQLite figures, the group-commit one, then the network ledger's four
    // (publish-ack R1, R1, publish-ack R3, R3).
    assert_eq!(lines.len(), 8, "{stdout}");
    for line in lines {
        let figure: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(figure["bench"], "ledger");
        for key in ["metric", "unit", "baseline"] {
            assert!(
                figure[key].as_str().is_some_and(|s| !s.is_empty()),
                "{key} in {line}"
            );
        }
        for key in ["value", "baseline_value", "ratio"] {
            assert!(
                figure[key].as_f64().is_some_and(f64::is_finite),
                "{key} in {line}"
            );
        }
    }
}

#[test]
fn unknown_scenarios_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_apn-bench"))
        .arg("nonsense")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scenario"));
}
