//! VIBE on a network ledger: signed entries on a replicated NATS JetStream stream.
//!
//! Every account (a node's or the treasury's Ed25519 key) writes its own entries on its own
//! subject, each naming the subject sequence it follows, so JetStream orders an account's
//! debits and never takes two written against one balance. Every node reads the whole stream
//! and applies the same pure rules ([`rules`]) to derive the same balances and escrows; only a
//! treasury key mints, and an escrow is an entry neither party can take back alone.
//!
//! - [`entry`]: the entry kinds, their signed wire form, subjects.
//! - [`rules`]: validation and application, a pure function of the stream.
//! - [`stream`]: the JetStream stream: creating it, appending in order, reading it back.
//! - [`projection`]: the node's SQLite projection of the stream, resumable after a crash,
//!   and the account report `apn ledger` and `/api/ledger` show.
//! - [`treasury`]: the treasury key and minting.
//! - [`permissions`]: the nkey login and the server's per-account publish permissions.
//! - [`faucet`]: the optional faucet: one signed-for grant per identity, rate limited.

pub mod entry;
pub mod faucet;
pub mod permissions;
pub mod projection;
pub mod rules;
pub mod stream;
pub mod treasury;
