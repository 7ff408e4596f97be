//! The messages and views that cross between roles. A role imports these and
//! `messages/` (the wire types), never another role; `actors/node.rs` alone names the
//! concrete actors and wires each role to the `Recipient`s it needs.
//!
//! - `mesh`: to and from the peer manager (inbound messages, sends, the peer table).
//! - `execution`: slots, local runs, cancellations, a run's updates, the execution stream.
//! - `ledger`: to the settlement engine (escrow, payments, reputation, the journal).
//! - `network_ledger`: escrow checks and result commits on the network ledger.
//! - `accounting`: bandwidth and compute metering.
//! - `panel`: deltas for the Mesh Panel and the transaction log.

pub mod accounting;
pub mod execution;
pub mod ledger;
pub mod mesh;
pub mod network_ledger;
pub mod panel;
