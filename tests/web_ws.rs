//! The panel websocket with a real client: snapshot on connect, a delta after a message
//! exchange between two real nodes, and a client that never reads is cut off instead of
//! growing the node's memory.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use apn::actors::panel_hub::{
    BandwidthDetails, GetHubStats, PanelEvent, SESSION_QUEUE_MAX, TransactionDetails,
    TransactionLogEntry,
};
use common::*;
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// A panel websocket with the node's token (the upgrade needs it, loopback included).
fn connect(address: std::net::SocketAddr, token: &str) -> Socket {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{address}/ws")
        .into_client_request()
        .expect("a websocket request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    let (socket, _) = tungstenite::connect(request).expect("websocket connects");
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    socket
}

/// Read messages until one satisfies `want` or the timeout passes.
fn read_until(
    socket: &mut Socket,
    timeout: Duration,
    want: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Text(text)) => {
                if let Ok(value) = serde_json::from_str::<Value>(&text)
                    && want(&value)
                {
                    return Some(value);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return None,
        }
    }
    None
}

#[actix_rt::test]
async fn snapshot_then_deltas_and_slow_clients_are_dropped() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut config = test_config(dirs[0].path());
    config.http.bind = "127.0.0.1:0".into();
    let first = node(config).await;
    let address = first.http_addr.unwrap();
    let token = first.api_token().expect("a token");
    let first_node_id = first.identity.node_id().to_string();

    // A client connects before the second node exists: snapshot, then the peer delta.
    let (snapshot_sender, snapshot_done) = tokio::sync::oneshot::channel();
    let (go_sender, go) = std::sync::mpsc::channel::<()>();
    let reader_token = token.clone();
    let reader = std::thread::spawn(move || {
        let mut socket = connect(address, &reader_token);
        let snapshot = read_until(&mut socket, Duration::from_secs(10), |v| {
            v["type"] == "snapshot"
        });
        let _ = snapshot_sender.send(snapshot);
        let _ = go.recv_timeout(Duration::from_secs(30));
        read_until(&mut socket, Duration::from_secs(20), |v| {
            v["type"] == "peer_updated" && v["peer"]["announced"] == true
        })
    });
    let snapshot = tokio::time::timeout(Duration::from_secs(15), snapshot_done)
        .await
        .unwrap()
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snapshot["status"]["node_id"], first_node_id.as_str());
    assert!(snapshot["peers"].as_array().unwrap().is_empty());
    assert!(snapshot["transactions"].is_array() && snapshot["resources"]["bandwidth"].is_object());

    let mut second_config = test_config(dirs[1].path());
    second_config.node.bootstrap = vec![first.dial_address().unwrap().to_string()];
    let second = node(second_config).await;
    go_sender.send(()).unwrap();
    let delta = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap()
        .expect("a peer delta");
    assert_eq!(delta["peer"]["node_id"], second.identity.node_id().as_str());

    // A client that never reads: the hub drops it once its queue is full; memory stays bounded.
    let lazy_token = token.clone();
    let (release_lazy, lazy_released) = std::sync::mpsc::channel::<()>();
    let lazy = std::thread::spawn(move || {
        let socket = connect(address, &lazy_token);
        // Hold the socket, unread, until the test has seen the hub drop it (or gave up).
        let _ = lazy_released.recv_timeout(EVENT_TIMEOUT * 2);
        drop(socket);
    });
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            first
                .panel_hub
                .send(GetHubStats)
                .await
                .map(|s| s.clients >= 1)
                .unwrap_or(false)
        })
        .await
    );
    let big_detail = "x".repeat(16 * 1024);
    // Far more (and larger) deltas than a queue holds, faster than the socket drains them.
    for _ in 0..(SESSION_QUEUE_MAX * 8) {
        let entry = TransactionLogEntry::new(
            TransactionDetails::BandwidthContributed(BandwidthDetails {
                bytes: 0,
                purpose: "test".into(),
                peer_node: None,
                vibe_earned: None,
            }),
            big_detail.clone(),
        );
        first.panel_hub.do_send(PanelEvent::Transaction(entry));
    }
    assert!(
        wait_until(EVENT_TIMEOUT, || async {
            first
                .panel_hub
                .send(GetHubStats)
                .await
                .map(|s| s.slow_clients_dropped >= 1)
                .unwrap_or(false)
        })
        .await,
        "the slow client was never dropped"
    );
    let _ = release_lazy.send(());
    // The node still serves: a new client gets a snapshot.
    let fresh = tokio::task::spawn_blocking(move || {
        let mut socket = connect(address, &token);
        read_until(&mut socket, Duration::from_secs(10), |v| {
            v["type"] == "snapshot"
        })
    })
    .await
    .unwrap()
    .expect("a fresh snapshot");
    // Its transaction log is in the seed's shape, as `/api/transactions` serves it.
    let newest = &fresh["transactions"][0];
    assert_eq!(newest["type"], "bandwidth_contributed", "{newest}");
    assert_eq!(newest["details"]["purpose"], "test");
    assert!(
        newest["id"].is_string() && newest["timestamp"].is_string(),
        "{newest}"
    );
    assert_eq!(newest["description"], big_detail.as_str());
    let _ = tokio::task::spawn_blocking(move || lazy.join()).await;
    first.shutdown().await;
    second.shutdown().await;
}

#[actix_rt::test]
async fn tasks_travel_as_deltas_without_their_diffs() {
    use apn::actors::distributor::Prefer;
    let dir = tempfile::tempdir().unwrap();
    let mut config = shell_config(dir.path());
    config.http.bind = "127.0.0.1:0".into();
    let node = node(config).await;
    let address = node.http_addr.unwrap();
    let token = node.api_token().expect("a token");
    // A finished task with a sizeable diff.
    let repo = git_repo(&[("big.txt", "start\n")]);
    let mut task = mesh_shell_task(repo.path(), "big diff", "seq 1 20000 >> big.txt", 1);
    task.prefer = Prefer::Local;
    let id = node.distributor.send(task).await.unwrap().unwrap();
    let diff_len = task_final(&node, id, EVENT_TIMEOUT)
        .await
        .diff
        .expect("a diff")
        .len();
    assert!(diff_len > 50_000, "{diff_len}");
    let messages = tokio::task::spawn_blocking(move || {
        let mut socket = connect(address, &token);
        let snapshot = read_until(&mut socket, Duration::from_secs(10), |v| {
            v["type"] == "snapshot"
        });
        // Two refreshes (one every 2 s): nothing about the task changed in between.
        let first = read_until(&mut socket, Duration::from_secs(6), |v| {
            v["type"] == "refresh"
        });
        let second = read_until(&mut socket, Duration::from_secs(6), |v| {
            v["type"] == "refresh"
        });
        (snapshot, first, second)
    })
    .await
    .unwrap();
    let (snapshot, first, second) = (
        messages.0.expect("a snapshot"),
        messages.1.expect("a refresh"),
        messages.2.expect("a second refresh"),
    );
    // The run's entries, in the seed's shape, carry its typed details.
    let completed = snapshot["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "execution_completed" && e["details"]["task_id"] == id.to_string())
        .expect("an execution_completed entry in the snapshot");
    assert_eq!(completed["details"]["task_title"], "big diff");
    assert_eq!(completed["details"]["executor_node"], "local");
    assert_eq!(completed["details"]["files_modified"], 1);
    assert!(
        completed["details"]["execution_time_ms"].is_u64(),
        "{completed}"
    );
    let listed = &snapshot["tasks"][0];
    assert_eq!(listed["id"], id.to_string());
    assert!(
        listed.get("diff").is_none(),
        "the snapshot carries the diff"
    );
    assert_eq!(listed["diff_bytes"], diff_len);
    for refresh in [&first, &second] {
        assert!(
            refresh.to_string().len() < 8 * 1024,
            "a refresh of {} bytes",
            refresh.to_string().len()
        );
        assert_eq!(refresh["tasks"], serde_json::json!([]), "{refresh}");
    }
    // The diff itself is fetched on demand.
    let url = format!("http://{address}/api/tasks/{id}");
    let fetched: Value = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(fetched["diff"].as_str().map(str::len), Some(diff_len));
    node.shutdown().await;
}
