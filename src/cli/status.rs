//! `apn status` and `apn peers`: what a running node says about itself and its mesh, from
//! `GET /api/status` and `GET /api/peers`, as a few aligned lines or the node's JSON.

use std::process::ExitCode;

use apn::actors::peer_manager::PeerInfo;
use apn::client::{ApiClient, json_text};
use apn::web::openapi::StatusDoc;

use super::print_answer;

/// Prints the node's identity, mesh and balance.
pub(crate) fn status(client: &ApiClient, json: bool) -> anyhow::Result<ExitCode> {
    let status = client.status()?;
    if json {
        print_answer(&status)?;
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &StatusDoc) {
    println!("node      {}", status.node_id);
    println!("peer id   {}", status.peer_id);
    println!("uptime    {} s", status.uptime_s);
    println!("peers     {}", status.peers);
    println!("relay     {}", json_text(&status.relay));
    println!(
        "balance   {} VIBE ({} escrowed)",
        status.balance, status.escrowed
    );
    for address in &status.listen_addrs {
        println!("listen    {address}");
    }
}

/// Prints the peer table, one row per peer.
pub(crate) fn peers(client: &ApiClient, json: bool) -> anyhow::Result<ExitCode> {
    let peers = client.peers()?;
    if json {
        print_answer(&peers)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<14} {:<7} {:>9} {:<24} capabilities",
        "node", "path", "latency", "profiles"
    );
    for peer in &peers {
        print_peer(peer);
    }
    println!("{} peer(s)", peers.len());
    Ok(ExitCode::SUCCESS)
}

fn print_peer(peer: &PeerInfo) {
    let latency = peer
        .latency_ms
        .map(|ms| format!("{ms:.1} ms"))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<14} {:<7} {:>9} {:<24} {}",
        peer.node_id.as_str(),
        json_text(&peer.path),
        latency,
        peer.executor_profiles.join(","),
        peer.capabilities.join(",")
    );
}
