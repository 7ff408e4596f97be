//! Counters shared by the roles and exported at `GET /metrics`. Plain atomics: any actor or
//! task bumps them without a message, and reading them never blocks a role. Besides the
//! network's counters, the HTTP layer counts its refusals here by reason
//! (`apn_http_refused_total{reason}`, see `web/access/`), and a message one role could
//! not hand to another (`apn_role_drops_total{role, reason}`, see [`try_send_counted`]).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use actix::prelude::*;

use crate::messages::DropReason;
use crate::web::Refusal;

/// A role a message is handed to with `try_send` (which fails rather than wait when the
/// role's mailbox is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The distributor: bids for this node's tasks and their execution stream.
    Distributor,
    /// The bidder: task distribution requests from peers.
    Bidder,
    /// The executor: task assignments, repository chunks and cancellations.
    Executor,
    /// The payment courier: incoming payments and receipts.
    Payments,
    /// The accountant: traffic records and any other inbound message.
    Accountant,
    /// The panel hub: deltas for the Mesh Panel.
    Panel,
    /// Subscribers to copies of every verified inbound message.
    Taps,
}

impl Role {
    /// Every role, in declaration order (the order of the drop counters).
    pub const ALL: [Role; 7] = [
        Role::Distributor,
        Role::Bidder,
        Role::Executor,
        Role::Payments,
        Role::Accountant,
        Role::Panel,
        Role::Taps,
    ];

    /// The role's `role` label in `apn_role_drops_total`.
    pub fn label(self) -> &'static str {
        match self {
            Role::Distributor => "distributor",
            Role::Bidder => "bidder",
            Role::Executor => "executor",
            Role::Payments => "payments",
            Role::Accountant => "accountant",
            Role::Panel => "panel",
            Role::Taps => "taps",
        }
    }
}

/// Why a `try_send` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailure {
    /// The role's mailbox is full.
    Full,
    /// The role has stopped.
    Closed,
}

impl SendFailure {
    /// Every failure, in declaration order (the order of the drop counters).
    pub const ALL: [SendFailure; 2] = [SendFailure::Full, SendFailure::Closed];

    /// The failure's `reason` label in `apn_role_drops_total`.
    pub fn label(self) -> &'static str {
        match self {
            SendFailure::Full => "mailbox_full",
            SendFailure::Closed => "stopped",
        }
    }
}

/// Hand `message` to `role` without waiting; what cannot be delivered is counted in
/// `metrics` and dropped. Only for what may be lost (deltas, log lines, byte counts):
/// results, payments and receipts go with `do_send`, which a full mailbox never refuses.
pub fn try_send_counted<M>(
    recipient: &Recipient<M>,
    message: M,
    metrics: &NetMetrics,
    role: Role,
) -> bool
where
    M: Message + Send,
    M::Result: Send,
{
    match recipient.try_send(message) {
        Ok(()) => true,
        Err(SendError::Full(_)) => {
            metrics.count_role_drop(role, SendFailure::Full);
            false
        }
        Err(SendError::Closed(_)) => {
            metrics.count_role_drop(role, SendFailure::Closed);
            false
        }
    }
}

/// Network counters of one node.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Envelopes that passed verification.
    pub messages_in: AtomicU64,
    /// Envelopes this node sent (a broadcast counts once per path).
    pub messages_out: AtomicU64,
    /// Frame bytes received, counted before any check (dropped frames included).
    pub bytes_in: AtomicU64,
    /// Frame bytes sent (a broadcast counts once per path).
    pub bytes_out: AtomicU64,
    /// Sends that failed on every path.
    pub send_failures: AtomicU64,
    /// Relay reconnects since start.
    pub relay_reconnects: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    http_refused: [AtomicU64; Refusal::ALL.len()],
    role_drops: [[AtomicU64; SendFailure::ALL.len()]; Role::ALL.len()],
}

impl NetMetrics {
    /// Count a message `role` could not be handed.
    pub fn count_role_drop(&self, role: Role, failure: SendFailure) {
        self.role_drops[role as usize][failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages `role` could not be handed for `failure`, since start.
    pub fn role_drops(&self, role: Role, failure: SendFailure) -> u64 {
        self.role_drops[role as usize][failure as usize].load(Ordering::Relaxed)
    }

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
    /// Replace the value.
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod role_drop_tests {
    use super::*;

    struct Slow;

    impl Actor for Slow {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Delta;

    impl Handler<Delta> for Slow {
        type Result = ();

        fn handle(&mut self, _: Delta, _: &mut Context<Self>) {}
    }

    #[actix_rt::test]
    async fn a_full_mailbox_drops_what_may_be_lost_and_counts_it() {
        let mut context = Context::<Slow>::new();
        context.set_mailbox_capacity(1);
        let slow = context.run(Slow).recipient::<Delta>();
        let metrics = NetMetrics::default();
        // Nothing runs the actor between these sends: the second finds the mailbox full.
        assert!(try_send_counted(&slow, Delta, &metrics, Role::Panel));
        assert!(!try_send_counted(&slow, Delta, &metrics, Role::Panel));
        assert_eq!(metrics.role_drops(Role::Panel, SendFailure::Full), 1);
        assert_eq!(metrics.role_drops(Role::Distributor, SendFailure::Full), 0);
        // What must not be lost goes with do_send, which a full mailbox takes anyway.
        slow.do_send(Delta);
        assert_eq!(metrics.role_drops(Role::Panel, SendFailure::Full), 1);
    }
}
