//! Task market rules: plain functions and state machines with no I/O, called by the
//! distributor, bidder and executor actors. The plaintext types that travel end-to-end
//! encrypted (the task, log batches, the result) live in `messages::payloads` and are
//! re-exported here.
//!
//! - [`decide_bid`]: whether a node bids for a request and at what price; [`may_reserve`]:
//!   whether its bid may hold a slot (a free one, within the requester's share).
//! - [`score_bid`] / [`rank_bids`]: how an originator orders the bids it collected.
//! - [`check_bid`] / [`check_bid_price`]: what an originator refuses outright (a price of
//!   zero or below its `min_task_reward`, above the reward, a profile the bidder lacks).
//! - [`admit_assignment`] / [`admit_payload`]: what an executor accepts as an assignment
//!   (only for a live bid it made, at its price; never a path on its own disk from a peer;
//!   a bundle only with the chunk count its size implies, [`check_bundle_shape`]).
//! - [`bidder::BidBook`]: the bidder's side of the life cycle as a state machine (which
//!   requests it answers, per-peer rate, live bids).
//! - [`offers`]: the fast path, which executor's live offer (its latest announcement) a
//!   task is asked of first, before any bid window.
//! - [`originator`]: the originator's clock-driven decisions (next bid, re-offer, give up;
//!   silence and deadline of an assignment).
//! - [`result_assembly`]: a large result's `ResultChunk`s, collected under the
//!   originator's `executor.result_bytes_max` and checked against their hash.

pub mod admission;
pub mod bidder;
pub mod bids;
pub mod log_order;
pub mod offers;
pub mod origin_task;
pub mod originator;
pub mod result_assembly;

pub use crate::messages::payloads::*;
pub use admission::*;
pub use bids::*;

/// Plaintext bytes per repository chunk: a sealed chunk in its envelope stays under the
/// 512 KiB frame limit, and a large transfer takes few frames of a peer's frame budget
/// (`node.frames_per_peer_per_second`).
pub const REPO_CHUNK_BYTES: usize = 448 * 1024;

/// The ref a task's bundle carries its base commit under: the originator names it so, the
/// executor fetches it by that name into its repository cache.
pub fn bundle_reference(task_id: uuid::Uuid) -> String {
    format!("refs/apn/bundle/{task_id}")
}

/// Default estimate of a run when the request names no timeout, in seconds.
pub const DEFAULT_ESTIMATE_S: u64 = 600;
