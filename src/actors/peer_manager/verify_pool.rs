//! The peer manager's signature verification pool: worker threads that run the stateless
//! envelope checks ([`check_frame`]: decode, audience, Ed25519 signature, clock skew, body
//! decode) so that verification uses every core instead of the actor's one.
//!
//! ```text
//!  PeerManager (actor thread)                workers (std threads, one per core)
//!  on_frame ── frame budget ── submit ──▶ shard k queue ──▶ worker k: check_frame
//!                                  (bounded, try_send)            │
//!  StreamHandler<Checked> ◀──────── results (bounded) ◀───────────┘ (blocking_send)
//!    admit (replay cache), route
//! ```
//!
//! Order: frames are sharded by sender (the transport peer when there is one, else the
//! signer key the frame claims). While a sender has frames in flight, its next frame goes to
//! the same shard; each worker takes its queue in order and every result comes back through
//! one channel, so the frames of one sender are admitted and routed in the order they
//! arrived. A sender with nothing in flight goes to the least loaded shard: a fixed hash of
//! the sender would keep order just as well, but a handful of busy senders would then load
//! the workers unevenly (with two cores, 16 senders split 11 to 5 or worse about one time
//! in five), and the busiest worker would set the pace of the whole node.
//!
//! Bounds: each shard queue holds at most `shard_frames_max` frames and `shard_bytes_max`
//! bytes (counted from submission until the actor takes the result back); a frame that does
//! not fit is refused at once (the actor counts it as `QueueFull`), never queued without
//! bound and never waited for on the actor thread. The results channel is bounded too: a
//! worker waits for room there, which backs its shard up until submissions are refused.
//!
//! Shutdown: the pool owns the only senders of the shard queues; when the peer manager stops
//! and drops it, each worker finds its queue closed and exits. A worker also exits when the
//! results channel's receiver (the actor's stream) is gone.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::identity::PUBLIC_KEY_BYTES;
use crate::mesh::{FrameVia, GossipReceipt};
use crate::messages::envelope::{CheckedEnvelope, check_frame, claimed_signer_key};
use crate::messages::{DropReason, EnvelopeLimits};

/// Frames queued to one verification worker. At 10k to 20k verifications per second per
/// core this is 50 to 100 ms of work: enough to ride out a burst, little enough that a full
/// queue means overload rather than jitter.
pub const SHARD_FRAMES_MAX: usize = 1024;
/// Bytes of frames all shards together may hold from submission until the actor takes the
/// results back, split evenly between the shards: half a transport's event queue
/// (`MESH_EVENT_BYTES_MAX`), so a flood of frames at the size limit costs tens of MiB
/// however many cores there are, not a frame count times 512 KiB.
pub const QUEUED_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Checked frames waiting for the actor. Workers wait when it is full.
pub const RESULTS_MAX: usize = 1024;

/// Sizes of a pool; [`PoolLimits::for_this_machine`] in production, smaller in tests.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Worker threads, one shard each.
    pub workers: usize,
    /// Frames queued to one worker.
    pub shard_frames_max: usize,
    /// Bytes of frames one shard holds from submission to the result's return.
    pub shard_bytes_max: usize,
    /// Results waiting for the actor.
    pub results_max: usize,
}

impl PoolLimits {
    /// One worker per core the process may use (at least one), default queue bounds.
    pub fn for_this_machine() -> PoolLimits {
        let workers = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        PoolLimits {
            workers,
            shard_frames_max: SHARD_FRAMES_MAX,
            shard_bytes_max: QUEUED_BYTES_MAX / workers,
            results_max: RESULTS_MAX,
        }
    }
}

/// Why the pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum VerifyPoolError {
    /// The operating system refused a worker thread.
    #[error("cannot start verification worker {worker}: {source}")]
    Spawn {
        /// Index of the worker that did not start.
        worker: usize,
        /// The operating system's answer.
        source: std::io::Error,
    },
}

/// Why a frame was not queued. The gossip receipt comes back so the caller can still tell
/// gossipsub what became of the message.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The sender's shard holds its most frames or bytes already.
    #[error("verification shard {shard} is full")]
    Full {
        /// The shard that refused the frame.
        shard: usize,
        /// The refused frame's gossip receipt, if it came by gossip.
        gossip: Option<GossipReceipt>,
    },
    /// The shard's worker is gone (it can only have stopped because the results channel
    /// closed, i.e. the actor is stopping).
    #[error("verification worker {shard} stopped")]
    Stopped {
        /// The shard whose worker is gone.
        shard: usize,
        /// The refused frame's gossip receipt, if it came by gossip.
        gossip: Option<GossipReceipt>,
    },
}

impl SubmitError {
    /// The refused frame's gossip receipt.
    pub fn into_gossip(self) -> Option<GossipReceipt> {
        match self {
            SubmitError::Full { gossip, .. } | SubmitError::Stopped { gossip, .. } => gossip,
        }
    }
}

/// Who a frame is from, as far as sharding can tell before verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// The libp2p peer that handed the frame over (a peer's direct frames, a forwarder's
    /// gossip).
    Peer(PeerId),
    /// The signer key a relayed frame claims (unverified: a liar only chooses which queue
    /// its own frames wait in, as it could by choosing its key).
    Key([u8; PUBLIC_KEY_BYTES]),
    /// A relayed frame that claims no key; it fails to decode anyway, so all such frames
    /// share one sender and their order does not matter.
    Unknown,
}

impl Sender {
    /// The sender of a frame: its transport peer when there is one, else the signer key the
    /// frame claims.
    pub fn of(transport_peer: Option<PeerId>, frame: &[u8]) -> Sender {
        match transport_peer {
            Some(peer) => Sender::Peer(peer),
            None => claimed_signer_key(frame).map_or(Sender::Unknown, Sender::Key),
        }
    }
}

/// Which shard each sender with frames in flight is on. A pure rule, kept apart from the
/// threads so it can be tested alone.
#[derive(Debug, Default)]
pub struct ShardAssignments {
    /// Senders with frames in flight: their shard and how many. Never more entries than
    /// frames in flight (bounded by the shard queues), since an entry goes with its last
    /// frame.
    busy: HashMap<Sender, (usize, usize)>,
}

impl ShardAssignments {
    /// The shard for `sender`'s next frame: the one its frames in flight are on, else the
    /// one with the fewest frames in flight (`frames_in_flight`, one entry per shard; the
    /// lowest index on a tie).
    pub fn shard_for(&self, sender: &Sender, frames_in_flight: &[usize]) -> usize {
        match self.busy.get(sender) {
            Some((shard, _)) => *shard,
            None => frames_in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, frames)| **frames)
                .map_or(0, |(shard, _)| shard),
        }
    }

    /// A frame of `sender` was queued to `shard`.
    pub fn queued(&mut self, sender: Sender, shard: usize) {
        self.busy.entry(sender).or_insert((shard, 0)).1 += 1;
    }

    /// A frame of `sender` came back; the sender is free to move once none is in flight.
    pub fn released(&mut self, sender: &Sender) {
        if let Some((_, frames)) = self.busy.get_mut(sender) {
            *frames = frames.saturating_sub(1);
            if *frames == 0 {
                self.busy.remove(sender);
            }
        }
    }

    /// Senders with frames in flight.
    pub fn len(&self) -> usize {
        self.busy.len()
    }

    /// True when no frame is in flight.
    pub fn is_empty(&self) -> bool {
        self.busy.is_empty()
    }
}

/// A frame on its way to a worker.
struct Job {
    frame: Vec<u8>,
    via: FrameVia,
    transport_peer: Option<PeerId>,
    gossip: Option<GossipReceipt>,
    sender: Sender,
    shard: usize,
}

/// A frame a worker has checked, back on the actor: the stateless checks' verdict and what
/// the actor needs to finish (admit, route, answer gossipsub, release the shard's bytes).
#[derive(Debug)]
pub struct Checked {
    /// The stateless checks' verdict.
    pub result: Result<CheckedEnvelope, DropReason>,
    /// Size of the frame on the wire.
    pub frame_bytes: usize,
    /// The path the frame came by.
    pub via: FrameVia,
    /// The libp2p peer that handed us the frame; `None` for the relay.
    pub transport_peer: Option<PeerId>,
    /// For a gossip frame, what the swarm needs to forward or reject it.
    pub gossip: Option<GossipReceipt>,
    /// The shard that checked it (its frame is released when the actor takes this).
    pub shard: usize,
    /// Who the frame was sharded as.
    pub sender: Sender,
}

struct Shard {
    jobs: SyncSender<Job>,
    /// Bytes submitted to this shard whose results the actor has not taken back yet.
    bytes_in_flight: usize,
}

/// The actor's handle on the workers. Dropping it stops them.
pub struct VerifyPool {
    shards: Vec<Shard>,
    /// Frames submitted to each shard whose results the actor has not taken back yet.
    frames_in_flight: Vec<usize>,
    assignments: ShardAssignments,
    shard_bytes_max: usize,
}

impl VerifyPool {
    /// Start `limits.workers` workers (at least one) checking frames for the node `me` under
    /// `envelope_limits`. Results arrive on the returned receiver, in order per shard.
    pub fn start(
        limits: PoolLimits,
        me: PeerId,
        envelope_limits: EnvelopeLimits,
    ) -> Result<(VerifyPool, mpsc::Receiver<Checked>), VerifyPoolError> {
        let (results, checked) = mpsc::channel(limits.results_max.max(1));
        let mut shards = Vec::new();
        for worker in 0..limits.workers.max(1) {
            let (jobs, queue) = sync_channel(limits.shard_frames_max.max(1));
            let results = results.clone();
            std::thread::Builder::new()
                .name(format!("apn-verify-{worker}"))
                .spawn(move || run_worker(queue, results, me, envelope_limits))
                // Shards already started stop when `shards` is dropped on this error.
                .map_err(|source| VerifyPoolError::Spawn { worker, source })?;
            shards.push(Shard {
                jobs,
                bytes_in_flight: 0,
            });
        }
        Ok((
            VerifyPool {
                frames_in_flight: vec![0; shards.len()],
                shards,
                assignments: ShardAssignments::default(),
                shard_bytes_max: limits.shard_bytes_max,
            },
            checked,
        ))
    }

    /// Number of shards (one worker each).
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Queue `frame` to its sender's shard without waiting: refused when the shard is full.
    pub fn submit(
        &mut self,
        frame: Vec<u8>,
        via: FrameVia,
        transport_peer: Option<PeerId>,
        gossip: Option<GossipReceipt>,
    ) -> Result<(), SubmitError> {
        let sender = Sender::of(transport_peer, &frame);
        let shard = self.assignments.shard_for(&sender, &self.frames_in_flight);
        let bytes_max = self.shard_bytes_max;
        let Some(slot) = self.shards.get_mut(shard) else {
            return Err(SubmitError::Stopped { shard, gossip });
        };
        let frame_bytes = frame.len();
        if slot.bytes_in_flight.saturating_add(frame_bytes) > bytes_max {
            return Err(SubmitError::Full { shard, gossip });
        }
        let job = Job {
            frame,
            via,
            transport_peer,
            gossip,
            sender,
            shard,
        };
        match slot.jobs.try_send(job) {
            Ok(()) => {
                slot.bytes_in_flight += frame_bytes;
                if let Some(frames) = self.frames_in_flight.get_mut(shard) {
                    *frames += 1;
                }
                self.assignments.queued(sender, shard);
                Ok(())
            }
            Err(TrySendError::Full(job)) => Err(SubmitError::Full {
                shard,
                gossip: job.gossip,
            }),
            Err(TrySendError::Disconnected(job)) => Err(SubmitError::Stopped {
                shard,
                gossip: job.gossip,
            }),
        }
    }

    /// The actor took `checked` back: its frame no longer counts against its shard, nor
    /// holds its sender there. Call it before the frame is routed, and for every result.
    pub fn release(&mut self, checked: &Checked) {
        if let Some(slot) = self.shards.get_mut(checked.shard) {
            slot.bytes_in_flight = slot.bytes_in_flight.saturating_sub(checked.frame_bytes);
        }
        if let Some(frames) = self.frames_in_flight.get_mut(checked.shard) {
            *frames = frames.saturating_sub(1);
        }
        self.assignments.released(&checked.sender);
    }
}

fn run_worker(
    queue: Receiver<Job>,
    results: mpsc::Sender<Checked>,
    me: PeerId,
    envelope_limits: EnvelopeLimits,
) {
    while let Ok(job) = queue.recv() {
        let expected = job.via.expected_audience(&me);
        // The checks are meant never to panic on any input (the fuzz target holds them to
        // it); if one ever does, that frame is dropped as malformed and the worker (and its
        // shard's senders) carry on, instead of one hostile frame stalling a shard for good.
        let result = catch_unwind(AssertUnwindSafe(|| {
            check_frame(&job.frame, super::now_ms(), &envelope_limits, &expected)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(shard = job.shard, "envelope check panicked; frame dropped");
            Err(DropReason::Malformed)
        });
        let checked = Checked {
            result,
            frame_bytes: job.frame.len(),
            via: job.via,
            transport_peer: job.transport_peer,
            gossip: job.gossip,
            shard: job.shard,
            sender: job.sender,
        };
        // Waiting here is the backpressure: this shard's queue fills while the actor is
        // behind, and the actor refuses new frames for it instead of waiting itself.
        if results.blocking_send(checked).is_err() {
            break;
        }
    }
    tracing::debug!("verification worker stopped");
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::Identity;
    use crate::messages::{APNMessage, Audience, Envelope, PingRequest};

    fn sealed_for(me: &PeerId, sender: &Identity, nonce: u64) -> Vec<u8> {
        let message = APNMessage::PingRequest(PingRequest { nonce });
        Envelope::seal(
            sender,
            &Audience::peer(me),
            &message,
            super::super::now_ms(),
        )
        .unwrap()
    }

    #[test]
    fn a_sender_is_the_transport_peer_else_the_key_its_frame_claims() {
        let me = Identity::ephemeral().peer_id();
        let sender = Identity::ephemeral();
        let peer = sender.peer_id();
        let frame = sealed_for(&me, &sender, 1);
        assert_eq!(Sender::of(Some(peer), &frame), Sender::Peer(peer));
        assert_eq!(Sender::of(None, &frame), Sender::Key(sender.public_key()));
        assert_eq!(Sender::of(None, b"\xff junk"), Sender::Unknown);
    }

    #[test]
    fn a_busy_sender_stays_on_its_shard_and_an_idle_one_goes_to_the_least_loaded() {
        let mut assignments = ShardAssignments::default();
        let a = Sender::Key([1; PUBLIC_KEY_BYTES]);
        let b = Sender::Key([2; PUBLIC_KEY_BYTES]);
        let mut loads = vec![0usize, 0];
        // New senders spread over the shards.
        let shard_a = assignments.shard_for(&a, &loads);
        assert_eq!(shard_a, 0);
        assignments.queued(a, shard_a);
        loads[shard_a] += 1;
        let shard_b = assignments.shard_for(&b, &loads);
        assert_eq!(shard_b, 1);
        assignments.queued(b, shard_b);
        loads[shard_b] += 1;
        // A busy sender stays put however loaded its shard is.
        for _ in 0..10 {
            assert_eq!(assignments.shard_for(&a, &loads), 0);
            assignments.queued(a, 0);
            loads[0] += 1;
        }
        assert_eq!(assignments.len(), 2);
        // Once all of its frames are back, it may move to the least loaded shard.
        for _ in 0..11 {
            assignments.released(&a);
            loads[0] -= 1;
        }
        loads[1] += 5;
        assert_eq!(assignments.len(), 1);
        assert_eq!(assignments.shard_for(&a, &loads), 0);
        assert_eq!(assignments.shard_for(&b, &loads), 1);
        assignments.released(&b);
        assignments.released(&b);
        assert!(assignments.is_empty());
    }

    #[test]
    fn a_full_shard_refuses_at_once_and_workers_stop_with_the_pool() {
        let me = Identity::ephemeral().peer_id();
        let sender = Identity::ephemeral();
        let limits = PoolLimits {
            workers: 1,
            shard_frames_max: 1,
            shard_bytes_max: 4096,
            results_max: 1,
        };
        let (mut pool, mut results) =
            VerifyPool::start(limits, me, EnvelopeLimits::default()).unwrap();
        // Nobody takes results: one waits in the channel, one in the worker, one in the
        // queue; the fourth submission at the latest is refused, and none waits.
        let mut refused = None;
        for nonce in 0..4 {
            if let Err(e) = pool.submit(
                sealed_for(&me, &sender, nonce),
                FrameVia::Direct,
                None,
                None,
            ) {
                refused = Some(e);
                break;
            }
        }
        assert!(matches!(refused, Some(SubmitError::Full { shard: 0, .. })));
        // Past the byte bound: refused whatever the queue holds.
        let big = vec![0u8; 5000];
        assert!(matches!(
            pool.submit(big, FrameVia::RelayDirect, None, None),
            Err(SubmitError::Full { .. })
        ));
        // What was queued was checked, in order, and verifies.
        let first = results.blocking_recv().unwrap();
        pool.release(&first);
        let verified = first.result.unwrap();
        assert_eq!(verified.from_key(), &sender.public_key());
        // Dropping the pool closes the queue; the worker drains and exits, so the results
        // channel closes.
        drop(pool);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match results.try_recv() {
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                _ if std::time::Instant::now() > deadline => panic!("worker did not stop"),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}
