//! `actors`: signed envelopes verified by the peer manager and routed to their actor, per
//! second, against plain actix messages of the same size sent to a counting actor, and
//! against bare Ed25519 verification of same-size messages on every core (what a node that
//! verified on all its cores could reach; the peer manager's verification pool runs one
//! worker per core).
//!
//! The frames are fed the way a flow-controlled transport feeds them: at most
//! `FRAMES_IN_FLIGHT_MAX` not yet routed. The peer manager drops (and counts) what does not
//! fit a verification queue rather than queueing it without bound, so an open-loop flood
//! would measure drops, not throughput; the window is as deep as one verification queue,
//! which keeps every worker busy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apn::actors::peer_manager::Inbound;
use apn::messages::APNMessage;

use crate::{bench_config, emit};

/// Frames injected but not yet routed: one verification queue's worth, so none is dropped
/// even if every frame waited on one worker.
const FRAMES_IN_FLIGHT_MAX: usize = apn::actors::peer_manager::verify_pool::SHARD_FRAMES_MAX;

/// Counts messages and says when a target is reached.
struct Counter {
    count: usize,
    target: usize,
    done: Option<tokio::sync::oneshot::Sender<()>>,
    /// Handed one permit back per message counted: the injector's window.
    window: Option<Arc<tokio::sync::Semaphore>>,
}

impl actix::Actor for Counter {
    type Context = actix::Context<Self>;
}

impl Counter {
    fn bump(&mut self) {
        self.count += 1;
        if let Some(window) = &self.window {
            window.add_permits(1);
        }
        if self.count == self.target
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

impl actix::Handler<Inbound> for Counter {
    type Result = ();
    fn handle(&mut self, _message: Inbound, _ctx: &mut Self::Context) {
        self.bump();
    }
}

/// The plain actix baseline: a message of the same shape, no verification.
#[derive(actix::Message)]
#[rtype(result = "()")]
struct Plain(#[allow(dead_code)] Vec<u8>);

impl actix::Handler<Plain> for Counter {
    type Result = ();
    fn handle(&mut self, _message: Plain, _ctx: &mut Self::Context) {
        self.bump();
    }
}

fn counter(
    target: usize,
    window: Option<Arc<tokio::sync::Semaphore>>,
) -> (actix::Addr<Counter>, tokio::sync::oneshot::Receiver<()>) {
    use actix::Actor;
    let (done, finished) = tokio::sync::oneshot::channel();
    (
        Counter {
            count: 0,
            target,
            done: Some(done),
            window,
        }
        .start(),
        finished,
    )
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
    use actix::Actor;
    let messages = if quick { 20_000 } else { 200_000 };
    // Several senders: the replay cache holds at most REPLAY_ENTRIES_PER_SENDER_MAX ids of
    // one sender, so one key alone could not get this many envelopes through.
    let senders: Vec<apn::identity::Identity> = (0..16)
        .map(|_| apn::identity::Identity::ephemeral())
        .collect();
    let identity = apn::identity::Identity::ephemeral();
    let audience = apn::messages::Audience::peer(&identity.peer_id());
    let now = chrono::Utc::now().timestamp_millis();
    let mut frames = Vec::with_capacity(messages);
    for nonce in 0..messages {
        let sender = &senders[nonce % senders.len()];
        let bid = APNMessage::TaskBid(apn::messages::TaskBid {
            task_id: uuid::Uuid::new_v4(),
            bidder: sender.node_id().clone(),
            price: apn::messages::Vibe::from_whole(1),
            estimated_duration_s: nonce as u64,
            capabilities: vec!["rust".into()],
            valid_until: chrono::Utc::now(),
            free_slots: None,
        });
        frames.push(apn::messages::Envelope::seal(sender, &audience, &bid, now)?);
    }
    let frame_bytes = frames[0].len();

    // APN: frames through the peer manager's checks to the distributor's recipient.
    let window = Arc::new(tokio::sync::Semaphore::new(FRAMES_IN_FLIGHT_MAX));
    let (distributor, finished) = counter(messages, Some(window.clone()));
    let (sink, _) = counter(usize::MAX, None);
    let (inject, injected) = tokio::sync::mpsc::channel(apn::mesh::MESH_EVENTS_MAX);
    let dir = tempfile::tempdir()?;
    let mut config = bench_config(dir.path());
    config.node.announce_interval_s = 3600;
    let hub = apn::actors::panel_hub::PanelHub::default().start();
    let routes = apn::actors::peer_manager::Routes {
        distributor: distributor.recipient(),
        bidder: sink.clone().recipient(),
        executor: sink.clone().recipient(),
        payments: sink.clone().recipient(),
        accountant: sink.recipient(),
        panel: hub.recipient(),
        bytes: apn::actors::accountant::ResourceAccounting::new(
            apn::identity::Identity::ephemeral(),
            Default::default(),
            Default::default(),
            None,
            None,
            None,
        )
        .start()
        .recipient(),
    };
    let mut transports = apn::actors::peer_manager::Transports::none();
    transports.injected = Some(injected);
    let metrics = Arc::new(apn::metrics::NetMetrics::default());
    let _peer_manager = apn::actors::peer_manager::PeerManager::new(
        identity,
        Arc::new(config),
        metrics.clone(),
        transports,
        routes,
    )
    .start();
    let started = Instant::now();
    for frame in frames {
        window.acquire().await?.forget();
        inject
            .send(apn::mesh::MeshEvent::Frame {
                frame,
                via: apn::mesh::FrameVia::Direct,
                transport_peer: None,
                gossip: None,
            })
            .await
            .map_err(|_| anyhow::anyhow!("peer manager stopped"))?;
    }
    match tokio::time::timeout(Duration::from_secs(300), finished).await {
        Ok(done) => done?,
        // A dropped frame is never routed; say why instead of only timing out.
        Err(_) => anyhow::bail!(
            "not every envelope was routed; drops: {:?}",
            metrics.dropped_by_reason()
        ),
    }
    let apn_rate = messages as f64 / started.elapsed().as_secs_f64();

    // Baseline: plain actix messages of the same size to a counting actor.
    let (plain, finished) = counter(messages, None);
    let started = Instant::now();
    for _ in 0..messages {
        plain.do_send(Plain(vec![0u8; frame_bytes]));
    }
    tokio::time::timeout(Duration::from_secs(300), finished).await??;
    let plain_rate = messages as f64 / started.elapsed().as_secs_f64();
    emit(
        "actors",
        "envelopes_verified_routed_per_s",
        apn_rate,
        "msg/s",
        "actix_plain_messages_per_s",
        plain_rate,
    );
    let verify_rate = ed25519_verify_per_s_all_cores(&senders, frame_bytes, messages)?;
    emit(
        "actors",
        "envelopes_verified_routed_per_s",
        apn_rate,
        "msg/s",
        "ed25519_verify_per_s_all_cores",
        verify_rate,
    );
    Ok(())
}

/// Bare Ed25519 verifications per second of `count` messages of `bytes` bytes, signed by
/// `senders`, split over every core the machine has (one thread per core).
fn ed25519_verify_per_s_all_cores(
    senders: &[apn::identity::Identity],
    bytes: usize,
    count: usize,
) -> anyhow::Result<f64> {
    let signed: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..count)
        .map(|n| {
            let sender = &senders[n % senders.len()];
            let mut message = vec![0u8; bytes];
            message[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let signature = sender.sign(&message);
            (sender.public_key().to_vec(), message, signature)
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = signed.len().div_ceil(cores);
    let started = Instant::now();
    let verified: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = signed
            .chunks(share.max(1))
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .filter(|(key, message, signature)| {
                            apn::identity::verify_signature(key, message, signature)
                        })
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    let elapsed = started.elapsed().as_secs_f64();
    if verified != signed.len() {
        anyhow::bail!("{} of {} signatures verified", verified, signed.len());
    }
    Ok(signed.len() as f64 / elapsed)
}
