//! `apn node` as a real child process: it starts, logs its identity and addresses, and
//! stops cleanly on SIGTERM; a bad config value exits non-zero naming the key.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn node_starts_logs_its_identity_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apn"))
        .args([
            "node",
            "--no-mdns",
            "--http",
            "none",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let started = loop {
        match receiver.recv_timeout(START_TIMEOUT) {
            Ok(line) if line.contains("node started") => break line,
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                panic!("no start line: {e}");
            }
        }
    };
    assert!(started.contains("node_id=apn_"), "{started}");
    assert!(started.contains("peer_id=12D3KooW"), "{started}");
    assert!(started.contains("/ip4/127.0.0.1/tcp/"), "{started}");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let exit = exited
        .recv_timeout(START_TIMEOUT)
        .expect("node exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        receiver
            .try_iter()
            .any(|line| line.contains("node stopped")),
        "no clean-shutdown line"
    );
}

#[test]
fn bad_config_value_names_the_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("apn.toml");
    std::fs::write(&config, "[economics]\nmin_task_reward = \"1.1234567\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_apn"))
        .args(["node", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("economics.min_task_reward"), "{stderr}");
    assert!(stderr.contains("more than 6 decimals"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_apn"))
        .args(["node", "--http", "not-an-address", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("http.bind"));
}
