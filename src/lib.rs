//! # APN node
//!
//! The Alpha Protocol Network node: machines running AI coding agents share work. A node
//! that cannot run a task offers it to the mesh, peers bid, the winner runs the agent and
//! returns a git diff, and is paid in VIBE credits from escrow.
//!
//! ## Layout
//! - [`client`]: typed blocking client of a node's HTTP API, for the `apn` binary's CLI
//!   commands (`src/cli/`) and `apn-soak`.
//! - [`config`]: typed configuration (file, flags, `APN_*` variables) with clear errors.
//! - [`identity`]: the node's Ed25519 key, `NodeId`, and its Noise static key.
//! - [`messages`]: every `APNMessage`, the signed `Envelope`, the codec, `Vibe` amounts.
//! - [`mesh`]: the libp2p swarm task and the NATS relay client task (I/O only).
//! - [`actors`]: one actix actor per role, and `node.rs` that wires them.
//! - [`market`]: bid, scoring and assignment rules (pure) and the encrypted payload types.
//! - [`ledger`]: SQLite double-entry ledger (no actix).
//! - [`network_ledger`]: VIBE on a JetStream stream: signed entries, pure rules, projection.
//! - [`metrics`]: counters shared by the roles, exported by the HTTP layer.
//! - [`demo`]: `apn demo`, several nodes and a stream of tasks in one process.
//! - [`harness`]: a real nats-server child for tests and benchmarks.
//! - [`workspace`]: git operations for runs (bundle, checkout, diff, apply check).
//! - [`agent_process`]: running an agent command (process group, limits, metering).
//! - [`sandbox`]: the Landlock + namespace sandbox every peer's run and verify command runs in.
//! - [`web`]: the Mesh Panel and the HTTP API.
//! - [`transaction_log`]: the panel's transaction log on disk (SQLite, batched writer).

pub mod actors;
pub mod agent_process;
pub mod client;
pub mod config;
pub mod demo;
pub mod harness;
pub mod identity;
pub mod ledger;
pub mod market;
pub mod mesh;
pub mod messages;
pub mod metrics;
pub mod network_ledger;
pub mod protocol;
pub mod sandbox;
pub mod storage;
pub mod transaction_log;
pub mod web;
pub mod workspace;
