//! `apn ledger`: this node's balance, escrow and last transfers, read from its data dir
//! (the node need not be running).

use std::path::Path;
use std::process::ExitCode;

/// Prints the report for `data_dir` with its `last` transfers.
pub(crate) fn ledger(data_dir: &Path, last: usize, json: bool) -> anyhow::Result<ExitCode> {
    let report = apn::ledger::report(data_dir, last)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
