//! Cross-ledger audit: given every node's ledger, check that each payment was debited once
//! by its payer and credited once by its payee, for the same amount, and that nothing is
//! left half-done (escrow held, payments undelivered, tasks open). Used by `apn-soak` after
//! a run with faults; `reconcile` is a plain function so the rule itself is unit-tested.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Ledger, LedgerError, node_account};

/// What the audit needs from one node's ledger.
#[derive(Debug, Clone, Default)]
pub struct LedgerDump {
    /// `node:<hex>` of the ledger's owner.
    pub account: String,
    /// Payments this node made: (payee account, payment id, micro-VIBE). A released escrow's
    /// payment id is the escrow's id.
    pub paid: Vec<(String, String, i64)>,
    /// Payments this node received: (payer account, payment id, micro-VIBE).
    pub received: Vec<(String, String, i64)>,
    /// Escrows still `held`; a clean shutdown leaves none.
    pub escrows_held: u64,
    /// Signed payments in the outbox still awaiting their payee's receipt.
    pub undelivered: u64,
    /// Journaled tasks not yet in a final state.
    pub open_tasks: u64,
    /// The ledger's own invariant check, as text when it failed.
    pub invariant_error: Option<String>,
}

/// Read a node's ledger (the node should be stopped, or at least idle).
pub fn dump(path: &Path, own_key: &[u8]) -> Result<LedgerDump, LedgerError> {
    let ledger = Ledger::open(path, own_key)?;
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let account = node_account(own_key);
    let mut paid = Vec::new();
    let mut received = Vec::new();
    let mut statement = connection.prepare(
        "SELECT id, from_account, to_account, amount, kind FROM transfers
         WHERE kind IN ('release', 'payment', 'incoming')",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
            row.get::<_, String>(4)?,
        ))
    })?;
    // A payee stores a payment under an id derived from the payer's key and the payment's
    // tx id (`rules::incoming_transfer_id`); the payer's side is translated to match.
    let as_received = |tx_id: &str| match uuid::Uuid::parse_str(tx_id) {
        Ok(tx_id) => super::rules::incoming_transfer_id(own_key, &tx_id).to_string(),
        Err(_) => tx_id.to_string(),
    };
    for row in rows {
        let (id, from, to, amount, kind) = row?;
        match kind.as_str() {
            // The release's own id derives from the escrow; the payment carries the escrow id.
            "release" => {
                let escrow = from.strip_prefix("escrow:").unwrap_or(&from);
                paid.push((to, as_received(escrow), amount));
            }
            "payment" => paid.push((to, as_received(&id), amount)),
            _ => received.push((from, id, amount)),
        }
    }
    Ok(LedgerDump {
        account,
        paid,
        received,
        escrows_held: ledger.escrow_count(super::EscrowState::Held)?,
        undelivered: ledger.undelivered_payments()?,
        open_tasks: ledger.open_tasks()?,
        invariant_error: ledger.check_invariants().err().map(|e| e.to_string()),
    })
}

/// Totals of a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Payments between audited nodes that matched on both sides.
    pub payments_matched: u64,
    /// Everything that is wrong, one line each.
    pub problems: Vec<String>,
}

/// Match every payment between the audited nodes: debited once by the payer, credited once
/// by the payee, same amount; and nothing left held, undelivered or open.
pub fn reconcile(ledgers: &[LedgerDump]) -> Reconciliation {
    let audited: Vec<&str> = ledgers.iter().map(|l| l.account.as_str()).collect();
    let mut problems = Vec::new();
    // (payer, payee, id) -> amounts seen on each side.
    let mut debits: BTreeMap<(String, String, String), Vec<i64>> = BTreeMap::new();
    let mut credits: BTreeMap<(String, String, String), Vec<i64>> = BTreeMap::new();
    for ledger in ledgers {
        let short = short(&ledger.account);
        if let Some(error) = &ledger.invariant_error {
            problems.push(format!("{short}: invariant broken: {error}"));
        }
        if ledger.escrows_held > 0 {
            problems.push(format!(
                "{short}: {} escrow(s) still held",
                ledger.escrows_held
            ));
        }
        if ledger.undelivered > 0 {
            problems.push(format!(
                "{short}: {} payment(s) never confirmed by their payee",
                ledger.undelivered
            ));
        }
        if ledger.open_tasks > 0 {
            problems.push(format!("{short}: {} task(s) still open", ledger.open_tasks));
        }
        for (payee, id, amount) in &ledger.paid {
            if audited.contains(&payee.as_str()) {
                debits
                    .entry((ledger.account.clone(), payee.clone(), id.clone()))
                    .or_default()
                    .push(*amount);
            }
        }
        for (payer, id, amount) in &ledger.received {
            if audited.contains(&payer.as_str()) {
                credits
                    .entry((payer.clone(), ledger.account.clone(), id.clone()))
                    .or_default()
                    .push(*amount);
            }
        }
    }
    let mut payments_matched = 0;
    for (key, debited) in &debits {
        let (payer, payee, id) = key;
        let what = format!("payment {id} {} -> {}", short(payer), short(payee));
        match credits.get(key) {
            None => problems.push(format!("{what}: debited, never credited")),
            Some(credited) if debited.len() != 1 || credited.len() != 1 => problems.push(format!(
                "{what}: debited {} time(s), credited {} time(s)",
                debited.len(),
                credited.len()
            )),
            Some(credited) if debited[0] != credited[0] => problems.push(format!(
                "{what}: debited {} µVIBE, credited {}",
                debited[0], credited[0]
            )),
            Some(_) => payments_matched += 1,
        }
    }
    for key in credits.keys().filter(|key| !debits.contains_key(*key)) {
        let (payer, payee, id) = key;
        problems.push(format!(
            "payment {id} {} -> {}: credited, never debited",
            short(payer),
            short(payee)
        ));
    }
    Reconciliation {
        payments_matched,
        problems,
    }
}

fn short(account: &str) -> String {
    account.chars().take(17).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> LedgerDump {
        LedgerDump {
            account: format!("node:{name}"),
            ..LedgerDump::default()
        }
    }

    fn pay(payer: &mut LedgerDump, payee: &mut LedgerDump, id: &str, amount: i64) {
        payer.paid.push((payee.account.clone(), id.into(), amount));
        payee
            .received
            .push((payer.account.clone(), id.into(), amount));
    }

    #[test]
    fn matched_payments_reconcile_clean() {
        let (mut a, mut b) = (node("a"), node("b"));
        pay(&mut a, &mut b, "t1", 5);
        pay(&mut b, &mut a, "t2", 7);
        let result = reconcile(&[a, b]);
        assert_eq!(result.problems, Vec::<String>::new());
        assert_eq!(result.payments_matched, 2);
    }

    #[test]
    fn a_lost_a_doubled_and_a_wrong_payment_are_each_reported() {
        let (mut a, mut b) = (node("a"), node("b"));
        a.paid.push((b.account.clone(), "lost".into(), 5));
        pay(&mut a, &mut b, "twice", 3);
        b.received.push((a.account.clone(), "twice".into(), 3));
        a.paid.push((b.account.clone(), "wrong".into(), 4));
        b.received.push((a.account.clone(), "wrong".into(), 40));
        b.received.push((a.account.clone(), "invented".into(), 1));
        let result = reconcile(&[a, b]);
        assert_eq!(result.payments_matched, 0);
        let text = result.problems.join("\n");
        assert!(
            text.contains("lost") && text.contains("never credited"),
            "{text}"
        );
        assert!(
            text.contains("twice") && text.contains("credited 2 time(s)"),
            "{text}"
        );
        assert!(
            text.contains("wrong") && text.contains("credited 40"),
            "{text}"
        );
        assert!(
            text.contains("invented") && text.contains("never debited"),
            "{text}"
        );
        assert_eq!(result.problems.len(), 4);
    }

    #[test]
    fn payments_to_nodes_outside_the_audit_are_not_judged() {
        let mut a = node("a");
        a.paid.push(("node:elsewhere".into(), "x".into(), 5));
        assert_eq!(reconcile(&[a]), Reconciliation::default());
    }

    #[test]
    fn leftovers_are_problems() {
        let mut a = node("a");
        a.escrows_held = 1;
        a.undelivered = 2;
        a.open_tasks = 3;
        a.invariant_error = Some("sum is 1".into());
        assert_eq!(reconcile(&[a]).problems.len(), 4);
    }
}
