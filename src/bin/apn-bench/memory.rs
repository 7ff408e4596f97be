//! `memory`: the resident memory one idle node adds to the process (against the process's
//! memory before any node), and the memory per node with N nodes (`--nodes`) in one process
//! (against one idle node).

use std::time::Duration;

use anyhow::Context as _;
use apn::actors::node::start_node;

use crate::{bench_config, emit, resident_bytes};

pub(crate) async fn run(nodes: usize) -> anyhow::Result<()> {
    let before = resident_bytes()?;
    let dir = tempfile::tempdir()?;
    let one = start_node(bench_config(dir.path())).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_one = resident_bytes()?;
    let mut dirs = Vec::new();
    let mut handles = Vec::new();
    for _ in 1..nodes {
        let dir = tempfile::tempdir()?;
        let mut config = bench_config(dir.path());
        config.node.bootstrap = vec![one.dial_address().context("listen address")?.to_string()];
        handles.push(start_node(config).await?);
        dirs.push(dir);
    }
    // Let connections, announcements and gossip settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let with_all = resident_bytes()?;
    let mib = 1024.0 * 1024.0;
    emit(
        "memory",
        "idle_node_rss",
        (with_one - before) / mib,
        "MiB",
        "process_rss_before_nodes",
        before / mib,
    );
    emit(
        "memory",
        &format!("rss_per_node_with_{nodes}_nodes"),
        (with_all - before) / nodes as f64 / mib,
        "MiB",
        "idle_node_rss",
        (with_one - before) / mib,
    );
    one.shutdown().await;
    for node in handles {
        node.shutdown().await;
    }
    Ok(())
}
