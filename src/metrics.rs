//! Counters shared by the roles and exported at `GET /metrics`. Plain atomics: any actor or
//! task bumps them without a message, and reading them never blocks a role. Besides the
//! network's counters, the HTTP layer counts its refusals here by reason
//! (`apn_http_refused_total{reason}`, see `web/access.rs`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::messages::DropReason;
use crate::web::Refusal;

/// Network counters of one node.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Envelopes that passed verification.
    pub messages_in: AtomicU64,
    /// Envelopes this node sent (a broadcast counts once per path).
    pub messages_out: AtomicU64,
    /// Frame bytes received and sent.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Sends that failed on every path.
    pub send_failures: AtomicU64,
    /// Relay reconnects since start.
    pub relay_reconnects: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    http_refused: [AtomicU64; Refusal::ALL.len()],
}

impl NetMetrics {
    /// Count one dropped frame.
    pub fn count_drop(&self, reason: DropReason) {
        self.count_drops(reason, 1);
    }

    /// Count `frames` dropped frames.
    pub fn count_drops(&self, reason: DropReason, frames: u64) {
        self.dropped[reason as usize].fetch_add(frames, Ordering::Relaxed);
    }

    /// Frames dropped for `reason` since start.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Every reason with its count.
    pub fn dropped_by_reason(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|&reason| (reason, self.dropped(reason)))
            .collect()
    }

    /// Count one refused HTTP request.
    pub fn count_refusal(&self, reason: Refusal) {
        self.http_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// HTTP requests refused for `reason` since start.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.http_refused[reason as usize].load(Ordering::Relaxed)
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Add to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }
}

/// A gauge that can go down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
