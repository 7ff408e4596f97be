//! The `apn` subcommands behind the argument parser: each takes parsed values (and, for the
//! API commands, a typed [`apn::client::ApiClient`]), prints for people or `--json`, and
//! returns the exit status: 0 done, 1 the operation failed. Part of the binary, not the
//! library, so `anyhow` stops here.

pub(crate) mod config;
pub(crate) mod ledger;
pub(crate) mod node;
pub(crate) mod sandbox;
pub(crate) mod status;
pub(crate) mod task;
pub(crate) mod treasury;

use serde::Serialize;

/// An API answer as `--json` prints it: the same document the node sent, keys in the order
/// `serde_json::Value` keeps them (sorted), as before the client was typed.
fn print_answer(answer: &impl Serialize) -> anyhow::Result<()> {
    let value = serde_json::to_value(answer)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}
