//! `apn ledger`: a node's balance, escrowed total and last transfers, read from its data
//! dir, and how they print.

use std::path::Path;

use serde::Serialize;

use super::{HistoryQuery, LEDGER_FILE, Ledger, LedgerError, TransferRecord};
use crate::messages::Vibe;

/// What `apn ledger` shows.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerReport {
    /// This node's own account, `node:<hex key>`.
    pub account: String,
    /// Spendable balance of the own account (escrowed money excluded).
    pub balance: Vibe,
    /// Total held in escrows not yet released or refunded.
    pub escrowed: Vibe,
    /// The most recent transfers, newest first (`--last`, at least one).
    pub transfers: Vec<TransferRecord>,
}

impl std::fmt::Display for LedgerReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "account   {}", self.account)?;
        writeln!(f, "balance   {} VIBE", self.balance)?;
        writeln!(f, "escrowed  {} VIBE", self.escrowed)?;
        writeln!(f, "last {} transfer(s):", self.transfers.len())?;
        for transfer in &self.transfers {
            writeln!(
                f,
                "  {}  {:<8} {:>14} VIBE  {} -> {}",
                transfer.created_at.format("%Y-%m-%d %H:%M:%S"),
                transfer.kind,
                transfer.amount.to_string(),
                short_account(&transfer.from),
                short_account(&transfer.to)
            )?;
        }
        Ok(())
    }
}

fn short_account(account: &str) -> String {
    match account.strip_prefix("node:") {
        Some(key) => format!("node:{}…", &key[..key.len().min(12)]),
        None => account.chars().take(20).collect(),
    }
}

/// Read the ledger of the node whose data dir is `data_dir` (its key names its account).
pub fn report(data_dir: &Path, last: usize) -> Result<LedgerReport, LedgerError> {
    let path = data_dir.join(LEDGER_FILE);
    if !path.exists() {
        return Err(LedgerError::NotFound(path.display().to_string()));
    }
    let identity = crate::identity::Identity::load_or_create(data_dir)
        .map_err(|e| LedgerError::Identity(e.to_string()))?;
    let ledger = Ledger::open(&path, &identity.public_key())?;
    Ok(LedgerReport {
        account: ledger.own_account().to_string(),
        balance: ledger.own_balance()?,
        escrowed: ledger.escrowed()?,
        transfers: ledger.history(&HistoryQuery {
            limit: last.max(1),
            ..HistoryQuery::default()
        })?,
    })
}
