//! `rtt`: the round trip of a SendTo ping between two nodes, direct (against bare libp2p
//! request-response between two swarms with the same frame codec) and via the relay
//! (against bare NATS request/reply through the same server): median and p99.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use apn::actors::node::{NodeHandle, start_node};
use apn::actors::peer_manager::Ping;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, request_response};

use crate::{bench_config, emit, median_p99_ms, wait_for_peer};

async fn sendto_rtts(
    from: &NodeHandle,
    to: &NodeHandle,
    samples: usize,
) -> anyhow::Result<Vec<Duration>> {
    let peer = to.identity.peer_id();
    // Warm up connections and caches.
    for _ in 0..20 {
        from.peer_manager.send(Ping { peer }).await??;
    }
    let mut rtts = Vec::with_capacity(samples);
    for _ in 0..samples {
        rtts.push(from.peer_manager.send(Ping { peer }).await??);
    }
    Ok(rtts)
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
    let samples = if quick { 200 } else { 1000 };
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    // Direct.
    let a = start_node(bench_config(dirs[0].path())).await?;
    let mut config = bench_config(dirs[1].path());
    config.node.bootstrap = vec![a.dial_address().context("listen address")?.to_string()];
    let b = start_node(config).await?;
    wait_for_peer(&b, a.identity.peer_id(), false).await?;
    let mut direct = sendto_rtts(&b, &a, samples).await?;
    let mut bare = bare_libp2p_rtts(samples).await?;
    let (median, p99) = median_p99_ms(&mut direct);
    let (bare_median, bare_p99) = median_p99_ms(&mut bare);
    emit(
        "rtt",
        "sendto_direct_median",
        median,
        "ms",
        "libp2p_request_response_median",
        bare_median,
    );
    emit(
        "rtt",
        "sendto_direct_p99",
        p99,
        "ms",
        "libp2p_request_response_p99",
        bare_p99,
    );
    a.shutdown().await;
    b.shutdown().await;

    // Via the relay.
    let nats = match apn::harness::NatsServer::start() {
        Ok(nats) => nats,
        Err(e) => {
            eprintln!("relay figures skipped: {e}");
            return Ok(());
        }
    };
    let relay_dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    let mut nodes = Vec::new();
    for dir in &relay_dirs {
        let mut config = bench_config(dir.path());
        config.node.relay_only = true;
        config.relay.url = nats.url();
        nodes.push(start_node(config).await?);
    }
    wait_for_peer(&nodes[0], nodes[1].identity.peer_id(), true).await?;
    wait_for_peer(&nodes[1], nodes[0].identity.peer_id(), true).await?;
    let mut relayed = sendto_rtts(&nodes[0], &nodes[1], samples).await?;
    let mut bare = bare_nats_rtts(&nats.url(), samples).await?;
    let (median, p99) = median_p99_ms(&mut relayed);
    let (bare_median, bare_p99) = median_p99_ms(&mut bare);
    emit(
        "rtt",
        "sendto_relay_median",
        median,
        "ms",
        "nats_request_reply_median",
        bare_median,
    );
    emit(
        "rtt",
        "sendto_relay_p99",
        p99,
        "ms",
        "nats_request_reply_p99",
        bare_p99,
    );
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

/// Bare libp2p: two swarms with only request-response (the same frame codec), echoing a
/// small request. The APN ping is two acknowledged one-way sends; this is one request and
/// its response, the least a round trip over libp2p costs.
pub(crate) async fn bare_libp2p_rtts(samples: usize) -> anyhow::Result<Vec<Duration>> {
    type Behaviour = request_response::Behaviour<apn::mesh::swarm::FrameCodec>;
    let protocol = StreamProtocol::new("/bench/echo/1");
    let make = || -> anyhow::Result<libp2p::Swarm<Behaviour>> {
        let protocol = protocol.clone();
        Ok(libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(move |_| {
                request_response::Behaviour::with_codec(
                    apn::mesh::swarm::FrameCodec,
                    [(protocol, request_response::ProtocolSupport::Full)],
                    request_response::Config::default(),
                )
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build())
    };
    let mut server = make()?;
    let mut client = make()?;
    server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let address: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_peer = *server.local_peer_id();
    client.dial(address.with(libp2p::multiaddr::Protocol::P2p(server_peer)))?;
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) = server.select_next_some().await
            {
                // Echo within the 64-byte response limit of the codec.
                let mut response = request;
                response.truncate(32);
                let _ = server.behaviour_mut().send_response(channel, response);
            }
        }
    });
    let mut rtts = Vec::with_capacity(samples);
    for round in 0..samples + 20 {
        let started = Instant::now();
        client
            .behaviour_mut()
            .send_request(&server_peer, vec![7u8; 32]);
        loop {
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { .. },
                    ..
                }) => break,
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => {
                    bail!("bare libp2p request failed: {error}")
                }
                _ => {}
            }
        }
        if round >= 20 {
            rtts.push(started.elapsed());
        }
    }
    Ok(rtts)
}

/// Bare NATS request/reply through the same server.
async fn bare_nats_rtts(url: &str, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let responder = async_nats::connect(url).await?;
    let requester = async_nats::connect(url).await?;
    let mut subscription = responder.subscribe("bench.echo").await?;
    let replier = responder.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some(reply) = message.reply {
                let _ = replier.publish(reply, message.payload).await;
            }
        }
    });
    responder.flush().await?;
    // The flush makes the server see the subscription, but a request can still race ahead
    // of the interest reaching the requester's route: wait until the echo answers once
    // (a "no responders" here failed a run once).
    let mut ready = false;
    for _ in 0..100 {
        match requester.request("bench.echo", vec![7u8; 32].into()).await {
            Ok(_) => {
                ready = true;
                break;
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !ready {
        anyhow::bail!("the NATS echo never answered");
    }
    let mut rtts = Vec::with_capacity(samples);
    for round in 0..samples + 20 {
        let started = Instant::now();
        requester
            .request("bench.echo", vec![7u8; 32].into())
            .await?;
        if round >= 20 {
            rtts.push(started.elapsed());
        }
    }
    Ok(rtts)
}
