//! `ws`: panel deltas per second delivered to 100 websocket clients (against the deltas
//! queued per client), and the resident memory the connected clients add (against the
//! process's memory before them).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::node::start_node;

use crate::{bench_config, emit, resident_bytes};

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
    use apn::actors::panel_hub::{
        BandwidthDetails, GetHubStats, PanelEvent, TransactionDetails, TransactionLogEntry,
    };
    let clients = 100;
    let deltas = if quick { 200 } else { 2000 };
    let dir = tempfile::tempdir()?;
    let mut config = bench_config(dir.path());
    config.http.bind = "127.0.0.1:0".into();
    let node = start_node(config).await?;
    let address = node.http_addr.context("http address")?;
    // The panel websocket needs the node's token, loopback included.
    let token = node.api_token().context("the node's API token")?;
    let before = resident_bytes()?;
    let (ready_sender, mut ready) = tokio::sync::mpsc::unbounded_channel();
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..clients {
        let (ready_sender, done_sender) = (ready_sender.clone(), done_sender.clone());
        let token = token.clone();
        std::thread::spawn(move || {
            use tungstenite::client::IntoClientRequest;
            let Ok(mut request) = format!("ws://{address}/ws").into_client_request() else {
                let _ = ready_sender.send(false);
                return;
            };
            if let Ok(value) = format!("Bearer {token}").parse() {
                request.headers_mut().insert("authorization", value);
            }
            let Ok((mut socket, _)) = tungstenite::connect(request) else {
                let _ = ready_sender.send(false);
                return;
            };
            let mut received = 0usize;
            let mut announced = false;
            while received < deltas {
                match socket.read() {
                    Ok(tungstenite::Message::Text(text)) => {
                        if text.starts_with("{\"type\":\"snapshot\"")
                            || text.contains("\"type\":\"snapshot\"")
                        {
                            if !announced {
                                announced = true;
                                let _ = ready_sender.send(true);
                            }
                        } else if text.contains("\"type\":\"transaction\"") {
                            received += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = done_sender.send(received);
        });
    }
    for _ in 0..clients {
        if !ready.recv().await.unwrap_or(false) {
            bail!("a websocket client could not connect");
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_clients = resident_bytes()?;
    let started = Instant::now();
    for n in 0..deltas {
        let entry = TransactionLogEntry::new(
            TransactionDetails::BandwidthContributed(BandwidthDetails {
                bytes: 0,
                purpose: "bench".into(),
                peer_node: None,
                vibe_earned: None,
            }),
            format!("bench delta {n}"),
        );
        node.panel_hub.send(PanelEvent::Transaction(entry)).await?;
    }
    let mut delivered = 0usize;
    for _ in 0..clients {
        delivered += tokio::time::timeout(Duration::from_secs(120), done.recv())
            .await?
            .unwrap_or(0);
    }
    let rate = delivered as f64 / started.elapsed().as_secs_f64();
    let stats = node.panel_hub.send(GetHubStats).await?;
    emit(
        "ws",
        "deltas_per_s_to_100_clients",
        rate,
        "deltas/s",
        "deltas_queued_per_client",
        (stats.deltas_sent / clients as u64) as f64,
    );
    emit(
        "ws",
        "rss_with_100_clients",
        (with_clients - before) / (1024.0 * 1024.0),
        "MiB",
        "process_rss_before_clients",
        before / (1024.0 * 1024.0),
    );
    node.shutdown().await;
    Ok(())
}
