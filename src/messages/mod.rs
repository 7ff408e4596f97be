//! Wire types: every `APNMessage` variant, the signed `Envelope` that carries them,
//! the codec and the limits.
//!
//! Layout:
//! - `vibe`: fixed-point VIBE amounts (`Vibe`).
//! - `types` (this file): `APNMessage` and its parts.
//! - `envelope`: signing, verification (signature, version, clock skew, replay, size) and
//!   the reasons an inbound frame is dropped.
//! - `codec`: bytes ⇄ values, size checked before decoding.
//!
//! Nothing here does I/O: it is pure and fuzzable.

pub mod codec;
pub mod envelope;
pub mod payloads;
pub mod replay;
pub mod samples;
pub mod vibe;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use uuid::Uuid;

pub use codec::{CodecError, decode_message, encode_message};
pub use envelope::{Audience, DropReason, Envelope, EnvelopeLimits, ReplayCache, VerifiedEnvelope};
pub use vibe::{Vibe, VibeParseError};

use crate::identity::NodeId;

/// Protocol version in every envelope; an envelope with another version is dropped.
pub const PROTOCOL_VERSION: u16 = 1;

/// Gossip topics (also the suffix of the relay broadcast subject `apn.v1.broadcast.<topic>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// Node announcements.
    Announce,
    /// Task distribution requests.
    Tasks,
}

impl Topic {
    /// Every topic, for subscribing.
    pub const ALL: [Topic; 2] = [Topic::Announce, Topic::Tasks];

    /// The topic's name on gossipsub and in relay subjects.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Announce => "announce",
            Topic::Tasks => "tasks",
        }
    }

    /// The topic with this name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Every message nodes exchange. Each travels inside a signed [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "body")]
pub enum APNMessage {
    /// Who a node is and what it offers (announce topic; also sent to each new connection).
    NodeAnnouncement(NodeAnnouncement),
    /// An originator looking for an executor (tasks topic); carries no prompt and no code.
    TaskDistributionRequest(TaskDistributionRequest),
    /// A bidder's offer to run a task, sent directly to the originator.
    TaskBid(TaskBid),
    /// The originator's award to the winning bidder, with the task sealed in a Noise handshake.
    TaskAssigned(TaskAssigned),
    /// The executor began a run; completes the Noise handshake.
    ExecutionStarted(ExecutionStarted),
    /// Heartbeat and stage/percent of a run; silence past the deadline means reassignment.
    ExecutionProgress(ExecutionProgress),
    /// A sealed, sequenced batch of the run's log lines.
    ExecutionLogs(ExecutionLogs),
    /// The run finished; the sealed result and the signed result hash.
    ExecutionCompleted(ExecutionCompleted),
    /// The run failed, or the executor refused the assignment before running.
    ExecutionFailed(ExecutionFailed),
    /// Bandwidth one node gave another over a period, and its value.
    BandwidthContribution(BandwidthContribution),
    /// Compute a node gave to a task, and its value.
    ComputeContribution(ComputeContribution),
    /// A payment signed by the payer (escrow release, bandwidth share, relay).
    VibeTransaction(VibeTransaction),
    /// The payee of a `VibeTransaction` recorded it (or had already): the payer stops
    /// delivering it.
    PaymentReceipt(PaymentReceipt),
    /// A chunk of a git bundle of the task's base commit (originator → executor).
    RepoChunk(RepoChunk),
    /// The originator withdrew an assignment (cancel, or it gave up on the executor).
    TaskCancelled(TaskCancelled),
    /// Round-trip probe answered by the receiving node's peer manager.
    PingRequest(PingRequest),
    /// Answer to a `PingRequest`; the round trip gives the peer's latency.
    PingReply(PingReply),
    /// A chunk of a result too large to travel inline in `ExecutionCompleted`
    /// (executor → originator).
    ResultChunk(ResultChunk),
    /// A node that runs the requested profile will not bid for a request: the originator's
    /// bid window need not wait for it.
    TaskBidDeclined(TaskBidDeclined),
}

impl APNMessage {
    /// The variant's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            APNMessage::NodeAnnouncement(_) => "node_announcement",
            APNMessage::TaskDistributionRequest(_) => "task_distribution_request",
            APNMessage::TaskBid(_) => "task_bid",
            APNMessage::TaskAssigned(_) => "task_assigned",
            APNMessage::ExecutionStarted(_) => "execution_started",
            APNMessage::ExecutionProgress(_) => "execution_progress",
            APNMessage::ExecutionLogs(_) => "execution_logs",
            APNMessage::ExecutionCompleted(_) => "execution_completed",
            APNMessage::ExecutionFailed(_) => "execution_failed",
            APNMessage::BandwidthContribution(_) => "bandwidth_contribution",
            APNMessage::ComputeContribution(_) => "compute_contribution",
            APNMessage::VibeTransaction(_) => "vibe_transaction",
            APNMessage::PaymentReceipt(_) => "payment_receipt",
            APNMessage::RepoChunk(_) => "repo_chunk",
            APNMessage::TaskCancelled(_) => "task_cancelled",
            APNMessage::PingRequest(_) => "ping_request",
            APNMessage::PingReply(_) => "ping_reply",
            APNMessage::ResultChunk(_) => "result_chunk",
            APNMessage::TaskBidDeclined(_) => "task_bid_declined",
        }
    }
}

/// A node tells the mesh who it is and what it offers. Sent on the announce topic at start,
/// periodically, and to each new connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAnnouncement {
    /// Display name derived from the sender's key; never trusted for authorisation.
    pub node_id: NodeId,
    /// Capability tags: `[node] capabilities` (roles) then `[node] languages` (language tags).
    pub capabilities: Vec<String>,
    /// Executor profiles this node can run (configured and present).
    pub executor_profiles: Vec<String>,
    /// What this node charges per CPU-hour; bids are priced from it.
    pub compute_rate_per_cpu_hour: Vibe,
    /// This node never bids below this amount.
    pub min_task_reward: Vibe,
    /// Slots for concurrently running tasks (`max_concurrent_tasks` in the config).
    pub max_concurrent_tasks: u32,
    /// Slots free when announced; a node with none does not bid.
    pub free_slots: u32,
    /// X25519 static key for end-to-end encryption to this node.
    pub noise_static_key: ByteBuf,
    /// The identity key's signature over the Noise key.
    pub noise_key_signature: ByteBuf,
    /// Multiaddrs this node listens on.
    pub listen_addrs: Vec<String>,
    /// True when the node only talks through the relay.
    pub relay_only: bool,
    /// The node software version.
    pub version: String,
}

/// What a task needs from the node that runs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskRequirements {
    /// Capability tags the executor must have.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Memory the agent needs, in megabytes (0 = no requirement).
    #[serde(default)]
    pub memory_mb: u64,
    /// Wall-clock limit for the run, in seconds (0 = the executor's default).
    #[serde(default)]
    pub timeout_s: u64,
}

/// Broadcast by an originator looking for an executor. Carries only what a bidder needs:
/// no prompt, no code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDistributionRequest {
    /// Chosen by the originator; every later message about the task carries it.
    pub task_id: Uuid,
    /// Executor profile the task runs with (e.g. `CLAUDE_CODE`); bidders must have it.
    pub executor_profile: String,
    /// What the executing node must have (capabilities, memory, timeout).
    pub requirements: TaskRequirements,
    /// The most the originator will pay.
    pub reward: Vibe,
    /// SHA-256 (hex) of the prompt and base commit, so the executor can check what it gets.
    pub content_hash: String,
    /// Bids arriving after this instant are ignored.
    pub bid_deadline: DateTime<Utc>,
}

/// A node's offer to run a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBid {
    /// The originator's `task_id` this bid answers.
    pub task_id: Uuid,
    /// The bidding node; the originator checks it against the envelope's signer key.
    pub bidder: NodeId,
    /// What the bidder asks; within the request's `reward`, never below its `min_task_reward`.
    pub price: Vibe,
    /// The bidder's estimate of the run's wall-clock time, in seconds; used in scoring.
    pub estimated_duration_s: u64,
    /// The bidder's capability tags, for matching the request's requirements.
    pub capabilities: Vec<String>,
    /// The slot is reserved for the bidder until this instant.
    pub valid_until: DateTime<Utc>,
    /// Slots the bidder has free once this bid's slot is reserved; the originator prefers
    /// the less loaded of near-tied bids. Absent from older nodes' bids.
    #[serde(default)]
    pub free_slots: Option<u32>,
}

/// End-to-end encrypted bytes: a Noise transport message with its explicit nonce, so messages
/// arriving out of order (gossip, relay) still decrypt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// Noise nonce of the first segment (later ones count up), so out-of-order messages decrypt.
    pub nonce: u64,
    /// The Noise transport messages, one per plaintext segment, each with its authentication tag.
    pub ciphertext: ByteBuf,
}

/// The originator gives a task to the winning bidder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskAssigned {
    /// The task being assigned (the originator's `task_id`).
    pub task_id: Uuid,
    /// The winning bidder, who alone may run the task.
    pub executor: NodeId,
    /// The winning bid's price, held in escrow and paid on a verified result.
    pub agreed_price: Vibe,
    /// The escrow transfer holding the payment.
    pub escrow_id: Uuid,
    /// No progress heartbeat for this long and the originator reassigns.
    pub deadline: DateTime<Utc>,
    /// First Noise handshake message (KK: it carries the encrypted task as its payload).
    pub noise_handshake: ByteBuf,
}

/// The executor started a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionStarted {
    /// The task this run belongs to (the originator's `task_id`).
    pub task_id: Uuid,
    /// Chosen by the executor for this run; a reassignment gets a new one.
    pub execution_id: Uuid,
    /// The node running the task.
    pub executor: NodeId,
    /// When the executor began the run (executor's clock).
    pub started_at: DateTime<Utc>,
    /// Second Noise handshake message; after it both sides have transport keys.
    pub noise_handshake: ByteBuf,
}

/// Stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStage {
    /// Checking out the project and preparing the workspace.
    Setup,
    /// The agent is running.
    Coding,
    /// The profile's tests or verify step are running.
    Testing,
    /// The run is finished.
    Done,
}

/// Heartbeat and progress of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionProgress {
    /// The task this run belongs to (the originator's `task_id`).
    pub task_id: Uuid,
    /// The run being reported (from `ExecutionStarted`).
    pub execution_id: Uuid,
    /// The stage the run is in now.
    pub stage: ExecutionStage,
    /// 0..=100.
    pub percent: u8,
    /// What the agent is doing now (encrypted: it can quote code).
    pub current_action: Option<Sealed>,
}

/// A batch of log lines (encrypted); `sequence` orders batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionLogs {
    /// The task this batch belongs to (the originator's `task_id`).
    pub task_id: Uuid,
    /// The run that produced these lines (from `ExecutionStarted`).
    pub execution_id: Uuid,
    /// Position of this batch in the run's log stream, from 0; the receiver reorders by it.
    pub sequence: u64,
    /// The log lines, sealed in the run's Noise session.
    pub lines: Sealed,
}

/// Compute a run used, measured from the child process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ComputeUsage {
    /// CPU time the agent's processes used, in seconds.
    pub cpu_seconds: f64,
    /// Resident memory integrated over time, in GB·seconds.
    pub memory_gb_seconds: f64,
    /// Elapsed wall-clock time of the run, in seconds.
    pub wall_seconds: f64,
}

/// The run finished; the result (summary, files modified, diff) is sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionCompleted {
    /// The task this run belongs to (the originator's `task_id`).
    pub task_id: Uuid,
    /// The run that finished (from `ExecutionStarted`).
    pub execution_id: Uuid,
    /// SHA-256 (hex) of the plaintext result.
    pub result_hash: String,
    /// The executor's Ed25519 signature over `result_hash`.
    pub result_signature: ByteBuf,
    /// Summary, files modified and git diff, sealed in the run's Noise session; for a
    /// chunked result (see `delivery`) an empty payload, the result travelling in
    /// `ResultChunk`s.
    pub result: Sealed,
    /// What the run used, measured by the executor; the basis of its compute contribution.
    pub usage: ComputeUsage,
    /// Whether the result is in `result` or in `ResultChunk`s. Absent from older nodes'
    /// messages, whose result is always inline.
    #[serde(default)]
    pub delivery: ResultDelivery,
}

/// How a run's result reaches the originator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultDelivery {
    /// The encoded result is sealed in `ExecutionCompleted::result` (it fits one frame).
    #[default]
    Inline,
    /// The encoded result is cut into `total_chunks` sealed `ResultChunk`s.
    Chunked {
        /// Size of the whole encoded result, in bytes.
        bytes: u64,
        /// Number of `ResultChunk`s it is cut into.
        total_chunks: u32,
        /// SHA-256 (hex) of the whole encoded result, checked on the reassembled bytes
        /// before they are decoded.
        sha256: String,
    },
}

/// The run failed, or (with a nil `execution_id`) the executor refused the assignment
/// before running anything; `error` says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionFailed {
    /// The task this run or refusal belongs to (the originator's `task_id`).
    pub task_id: Uuid,
    /// The run that failed; nil when the executor refused before running anything.
    pub execution_id: Uuid,
    /// In clear text only for a refusal before any session exists (nil `execution_id`);
    /// for a run's failure `Setup`, and the real stage travels in `detail`.
    pub stage: ExecutionStage,
    /// In clear text only for a refusal (which names no task content); empty for a run's
    /// failure, whose error travels in `detail`.
    pub error: String,
    /// A run's failure: `market::FailureDetail` (stage and error) sealed in the run's
    /// Noise session, so the relay and other peers never read it.
    pub detail: Option<Sealed>,
    /// What the run used before it failed (zero for a refusal).
    pub usage: ComputeUsage,
}

/// What bandwidth was used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandwidthPurpose {
    /// Carrying task requests, assignments and results between nodes.
    TaskRelay,
    /// Streaming a run's progress and logs back to the originator.
    LogStream,
    /// Transferring the git bundle of a task's base commit.
    GitSync,
}

/// Bandwidth a node gave another over a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthContribution {
    /// The node that carried the bytes and earns the credit.
    pub contributor: NodeId,
    /// The node the bytes were carried for.
    pub beneficiary: NodeId,
    /// What the bytes were carried for.
    pub purpose: BandwidthPurpose,
    /// Bytes carried in the period.
    pub bytes: u64,
    /// Start of the measured period.
    pub period_start: DateTime<Utc>,
    /// End of the measured period.
    pub period_end: DateTime<Utc>,
    /// The credit earned for these bytes, at the configured bandwidth rate.
    pub amount: Vibe,
    /// The `tx_id` of the bandwidth-share `VibeTransaction` that paid `amount`; the
    /// contributor checks its own ledger for it. Absent from older nodes' records.
    #[serde(default)]
    pub payment_id: Option<Uuid>,
}

/// Compute a node gave to a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeContribution {
    /// The task the compute was given to (the originator's `task_id`).
    pub task_id: Uuid,
    /// The node that ran the task and earns the credit.
    pub contributor: NodeId,
    /// What the run used.
    pub usage: ComputeUsage,
    /// The credit earned for this usage: the escrow payment the contributor was credited.
    pub amount: Vibe,
    /// The escrow that paid `amount` (`TaskAssigned::escrow_id`, also the payment's
    /// `tx_id`); the originator checks its own ledger for its release. Absent from older
    /// nodes' records.
    #[serde(default)]
    pub escrow_id: Option<Uuid>,
}

/// Why credits moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransactionReason {
    /// Payment for running a task (escrow released to the executor).
    TaskExecution,
    /// Payment for bandwidth a node contributed.
    BandwidthShare,
    /// Payment for relaying traffic.
    Relay,
}

/// A payment, signed by the payer so the payee (and anyone) can check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VibeTransaction {
    /// Unique per payment; paying the same id twice is one transfer (idempotent ledger).
    pub tx_id: Uuid,
    /// The payer's Ed25519 public key.
    pub from: ByteBuf,
    /// The payee's Ed25519 public key.
    pub to: ByteBuf,
    /// The amount paid, in µVIBE fixed point.
    pub amount: Vibe,
    /// Why the credits moved.
    pub reason: TransactionReason,
    /// The task paid for; `None` for payments not tied to a task (e.g. bandwidth).
    pub task_id: Option<Uuid>,
    /// When the payer created the payment; covered by the signature.
    pub created_at: DateTime<Utc>,
    /// The payer's signature over [`VibeTransaction::signing_bytes`].
    pub signature: ByteBuf,
}

impl VibeTransaction {
    /// The exact bytes the payer signs: every field but the signature, in a fixed layout.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = b"apn-vibe-transaction-v1".to_vec();
        bytes.extend_from_slice(self.tx_id.as_bytes());
        bytes.extend_from_slice(&(self.from.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&self.from);
        bytes.extend_from_slice(&(self.to.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&self.to);
        bytes.extend_from_slice(&self.amount.micros().to_be_bytes());
        bytes.push(match self.reason {
            TransactionReason::TaskExecution => 0,
            TransactionReason::BandwidthShare => 1,
            TransactionReason::Relay => 2,
        });
        match self.task_id {
            Some(task_id) => {
                bytes.push(1);
                bytes.extend_from_slice(task_id.as_bytes());
            }
            None => bytes.push(0),
        }
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes
    }

    /// True when `signature` is the payer's over the content.
    pub fn verify(&self) -> bool {
        crate::identity::verify_signature(&self.from, &self.signing_bytes(), &self.signature)
    }

    /// A transaction from `payer`, signed.
    pub fn new_signed(
        payer: &crate::identity::Identity,
        to: [u8; crate::identity::PUBLIC_KEY_BYTES],
        amount: Vibe,
        reason: TransactionReason,
        task_id: Option<Uuid>,
    ) -> Self {
        Self::signed_with_id(
            payer,
            Uuid::new_v4(),
            to,
            amount,
            reason,
            task_id,
            Utc::now(),
        )
    }

    /// A transaction from `payer` with the given id and time, signed.
    pub fn signed_with_id(
        payer: &crate::identity::Identity,
        tx_id: Uuid,
        to: [u8; crate::identity::PUBLIC_KEY_BYTES],
        amount: Vibe,
        reason: TransactionReason,
        task_id: Option<Uuid>,
        created_at: DateTime<Utc>,
    ) -> Self {
        let mut transaction = VibeTransaction {
            tx_id,
            from: ByteBuf::from(payer.public_key().to_vec()),
            to: ByteBuf::from(to.to_vec()),
            amount,
            reason,
            task_id,
            created_at,
            signature: ByteBuf::new(),
        };
        transaction.signature = ByteBuf::from(payer.sign(&transaction.signing_bytes()));
        transaction
    }
}

/// A chunk of the git bundle of a task's base commit, encrypted to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoChunk {
    /// The task whose base commit this bundle holds (the originator's `task_id`).
    pub task_id: Uuid,
    /// Position of this chunk, from 0; must be below `total`.
    pub index: u32,
    /// Number of chunks in the bundle; the same in every chunk of a task.
    pub total: u32,
    /// Size of the whole bundle, in bytes; the same in every chunk of a task, and the
    /// chunk count it implies must be `total`.
    pub bytes: u64,
    /// This chunk's bytes of the bundle, sealed in the task's Noise session.
    pub data: Sealed,
}

/// A chunk of a run's encoded result, encrypted to the originator. Announced by
/// `ExecutionCompleted` with `ResultDelivery::Chunked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultChunk {
    /// The task whose result this is (the originator's `task_id`).
    pub task_id: Uuid,
    /// The run that produced the result (from `ExecutionStarted`).
    pub execution_id: Uuid,
    /// Position of this chunk, from 0; must be below `total`.
    pub index: u32,
    /// Number of chunks in the result; the same in every chunk of a run.
    pub total: u32,
    /// This chunk's bytes of the encoded result, sealed in the run's Noise session.
    pub data: Sealed,
}

/// The originator withdrew an assignment; the executor stops the run and is not paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCancelled {
    /// The task withdrawn (the originator's `task_id`).
    pub task_id: Uuid,
    /// Why the originator withdrew it, for logs and the panel.
    pub reason: String,
}

/// A payee's receipt for payment `tx_id`. Only the payee's receipt counts: the payer
/// matches the envelope's signer against the payment's `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentReceipt {
    /// The payment received (the `VibeTransaction`'s `tx_id`).
    pub tx_id: Uuid,
}

/// Round-trip probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingRequest {
    /// Random value the reply must echo, matching replies to probes.
    pub nonce: u64,
}

/// Answer to a [`PingRequest`], echoing its nonce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    /// The nonce of the `PingRequest` answered.
    pub nonce: u64,
}

/// Longest `reason` a [`TaskBidDeclined`] carries; the originator only logs it.
pub const DECLINE_REASON_MAX: usize = 200;

/// A bidder's answer that it will not bid for a request (sent directly to the originator,
/// only by nodes that run the requested profile). The originator counts it as an answer
/// from that executor when deciding whether its bid window may close early; it holds no
/// slot and promises nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskBidDeclined {
    /// The originator's `task_id` this refusal answers.
    pub task_id: Uuid,
    /// Why, for logs (at most [`DECLINE_REASON_MAX`] bytes when sent; longer ones are cut
    /// on receipt).
    pub reason: String,
}
