//! `apn ledger`: this node's balance, escrow and history, read from its data dir (the node
//! need not be running): the projection of the network ledger when the node settles in
//! `jetstream` mode (its data dir holds one), else its own SQLite ledger.

use std::path::Path;
use std::process::ExitCode;

use apn::network_ledger::projection::{PROJECTION_FILE, read_report};

/// Prints the report for `data_dir` with its `last` transfers or history rows, the
/// network ledger's rows below stream sequence `before` when given.
pub(crate) fn ledger(
    data_dir: &Path,
    last: usize,
    before: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let projection = data_dir.join(PROJECTION_FILE);
    if projection.exists() {
        let identity = apn::identity::Identity::load_or_create(data_dir)?;
        let report = read_report(&projection, &identity.public_key(), before, last.max(1))?;
        return print_report(&report, "jetstream", json);
    }
    if before.is_some() {
        anyhow::bail!(
            "--before pages the network ledger's history; {} has no {PROJECTION_FILE}",
            data_dir.display()
        );
    }
    let report = apn::ledger::report(data_dir, last)?;
    print_report(&report, "local", json)
}

/// For people, or as JSON tagged with the settlement `mode` (as `/api/ledger` tags it).
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    mode: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        let mut value = serde_json::to_value(report)?;
        value["mode"] = mode.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
