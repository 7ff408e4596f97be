//! Ledger rules as plain functions: which accounts may go negative, debit and credit checks, transfer
//! identity, escrow state transitions, settlement ids, the ids of payments from peers and
//! the reputation score.

use serde::Serialize;
use uuid::Uuid;

use crate::messages::Vibe;

/// True for accounts allowed below zero: the mint (it balances grants) and mirrors of remote
/// nodes (a mirror is debited when that node pays us). This node's own account and every
/// escrow never go negative.
pub fn may_go_negative(account: &str, own_account: &str) -> bool {
    account == super::MINT || (account.starts_with("node:") && account != own_account)
}

/// A debit the account cannot cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdraft;

/// Refuse a debit that would take a non-negative account below zero (or overflow).
pub fn check_debit(
    available_micros: i64,
    amount: Vibe,
    may_go_negative: bool,
) -> Result<(), Overdraft> {
    let amount = i64::try_from(amount.micros()).map_err(|_| Overdraft)?;
    if may_go_negative {
        return available_micros
            .checked_sub(amount)
            .map(|_| ())
            .ok_or(Overdraft);
    }
    if available_micros < amount {
        Err(Overdraft)
    } else {
        Ok(())
    }
}

/// A credit that would take a balance past `i64::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// The balance after crediting `amount` to `balance_micros`, or [`Overflow`]: a balance
/// never wraps, and never leaves SQLite's integers (past them it would turn into a float).
pub fn check_credit(balance_micros: i64, amount: Vibe) -> Result<i64, Overflow> {
    let amount = i64::try_from(amount.micros()).map_err(|_| Overflow)?;
    balance_micros.checked_add(amount).ok_or(Overflow)
}

/// Whether a stored transfer and a new one with the same id are the same transfer.
pub fn same_transfer(existing: (&str, &str, i64, &str), new: (&str, &str, i64, &str)) -> bool {
    existing == new
}

/// Where an escrow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EscrowState {
    /// Money is in the escrow account, waiting for the task's outcome.
    Held,
    /// Paid out to the executor; final.
    Released,
    /// Returned to this node's own account; final.
    Refunded,
}

impl EscrowState {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            EscrowState::Held => "held",
            EscrowState::Released => "released",
            EscrowState::Refunded => "refunded",
        }
    }

    /// From the stored name (unknown names read as settled, never as held).
    pub fn from_name(name: &str) -> EscrowState {
        match name {
            "held" => EscrowState::Held,
            "released" => EscrowState::Released,
            _ => EscrowState::Refunded,
        }
    }
}

/// Held → released or refunded, once. Anything else returns the current state as the error.
pub fn escrow_transition(
    current: EscrowState,
    to: EscrowState,
) -> Result<EscrowState, EscrowState> {
    match (current, to) {
        (EscrowState::Held, EscrowState::Released | EscrowState::Refunded) => Ok(to),
        _ => Err(current),
    }
}

/// The id of an escrow's settlement transfer: derived, so a retry is the same transfer.
pub fn settlement_id(escrow_id: &Uuid, kind: &str) -> Uuid {
    Uuid::new_v5(escrow_id, kind.as_bytes())
}

/// Namespace of the ids under which payments from peers are stored.
const INCOMING_NAMESPACE: Uuid = Uuid::from_u128(0x6170_6e2d_696e_636f_6d69_6e67_2d76_3100);

/// The stored id of a payment a peer signed with `tx_id`: derived from the payer's key and
/// its id, in a namespace of its own. A peer chooses `tx_id` freely, so storing it as is
/// would let a payment take an id this node needs (an escrow's refund or release, a mint);
/// derived, a payer can only ever collide with its own payments, and a repeat of the same
/// payment is still the same transfer.
pub fn incoming_transfer_id(payer_key: &[u8], tx_id: &Uuid) -> Uuid {
    let mut name = Vec::with_capacity(payer_key.len() + 16);
    name.extend_from_slice(payer_key);
    name.extend_from_slice(tx_id.as_bytes());
    Uuid::new_v5(&INCOMING_NAMESPACE, &name)
}

/// What happened when a peer ran a task for this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// The peer returned a result that verified.
    Completed,
    /// The peer reported `ExecutionFailed`.
    Failed,
    /// The peer went silent past the task's deadline (weighs twice a failure).
    TimedOut,
    /// The result failed verification: bad signature, hash or verify command (weighs 3x).
    BadResult,
}

/// A peer's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReputationCounts {
    /// Tasks the peer completed with a verified result.
    pub completed: u64,
    /// Tasks the peer reported as failed.
    pub failed: u64,
    /// Tasks the peer let pass their deadline without an outcome.
    pub timed_out: u64,
    /// Results that failed verification.
    pub bad_results: u64,
}

/// Reputation in [0, 1]: `(completed + 1) / (completed + failed + 2·timed_out +
/// 3·bad_results + 2)`. A peer never seen scores 0.5; silence costs twice a failure and a
/// bad result (a lie) three times, because they waste more of the originator's time.
pub fn reputation_score(counts: &ReputationCounts) -> f64 {
    let good = counts.completed as f64 + 1.0;
    let weighted = counts.completed as f64
        + counts.failed as f64
        + 2.0 * counts.timed_out as f64
        + 3.0 * counts.bad_results as f64
        + 2.0;
    (good / weighted).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mint_and_remote_mirrors_may_go_negative() {
        assert!(may_go_negative("mint", "node:aa"));
        assert!(may_go_negative("node:bb", "node:aa"));
        assert!(!may_go_negative("node:aa", "node:aa"));
        assert!(!may_go_negative("escrow:x", "node:aa"));
    }

    #[test]
    fn overdrafts_are_refused() {
        assert!(check_debit(5, Vibe::from_micros(5), false).is_ok());
        assert!(check_debit(4, Vibe::from_micros(5), false).is_err());
        assert!(check_debit(-10, Vibe::from_micros(5), true).is_ok());
    }

    #[test]
    fn credits_never_overflow() {
        assert_eq!(check_credit(5, Vibe::from_micros(5)), Ok(10));
        assert_eq!(
            check_credit(i64::MAX - 5, Vibe::from_micros(5)),
            Ok(i64::MAX)
        );
        assert_eq!(
            check_credit(i64::MAX - 5, Vibe::from_micros(6)),
            Err(Overflow)
        );
        assert_eq!(check_credit(0, Vibe::from_micros(u64::MAX)), Err(Overflow));
        assert_eq!(
            check_credit(-1, Vibe::from_micros(i64::MAX as u64)),
            Ok(i64::MAX - 1)
        );
    }

    #[test]
    fn escrow_settles_exactly_once() {
        assert_eq!(
            escrow_transition(EscrowState::Held, EscrowState::Released),
            Ok(EscrowState::Released)
        );
        assert_eq!(
            escrow_transition(EscrowState::Held, EscrowState::Refunded),
            Ok(EscrowState::Refunded)
        );
        assert_eq!(
            escrow_transition(EscrowState::Released, EscrowState::Refunded),
            Err(EscrowState::Released)
        );
        assert_eq!(
            escrow_transition(EscrowState::Refunded, EscrowState::Released),
            Err(EscrowState::Refunded)
        );
        assert_eq!(
            escrow_transition(EscrowState::Held, EscrowState::Held),
            Err(EscrowState::Held)
        );
    }

    #[test]
    fn reputation_starts_neutral_and_punishes_lies_most() {
        assert_eq!(reputation_score(&ReputationCounts::default()), 0.5);
        let good = ReputationCounts {
            completed: 8,
            ..Default::default()
        };
        assert!(reputation_score(&good) >= 0.9);
        let failed = ReputationCounts {
            failed: 1,
            ..Default::default()
        };
        let silent = ReputationCounts {
            timed_out: 1,
            ..Default::default()
        };
        let liar = ReputationCounts {
            bad_results: 1,
            ..Default::default()
        };
        assert!(reputation_score(&failed) > reputation_score(&silent));
        assert!(reputation_score(&silent) > reputation_score(&liar));
        assert!(reputation_score(&silent) < 0.5);
    }

    #[test]
    fn a_peers_payment_never_takes_an_internal_id() {
        let escrow = Uuid::new_v4();
        let (payer, other) = ([1u8; 32], [2u8; 32]);
        for internal in [
            escrow,
            settlement_id(&escrow, "refund"),
            settlement_id(&escrow, "release"),
        ] {
            let stored = incoming_transfer_id(&payer, &internal);
            assert_ne!(stored, internal);
            assert_ne!(stored, settlement_id(&escrow, "refund"));
            assert_ne!(stored, settlement_id(&escrow, "release"));
        }
        let tx = Uuid::new_v4();
        assert_eq!(
            incoming_transfer_id(&payer, &tx),
            incoming_transfer_id(&payer, &tx),
            "a repeat is the same transfer"
        );
        assert_ne!(
            incoming_transfer_id(&payer, &tx),
            incoming_transfer_id(&other, &tx),
            "two payers never share an id"
        );
    }

    #[test]
    fn settlement_ids_are_stable() {
        let escrow = Uuid::new_v4();
        assert_eq!(
            settlement_id(&escrow, "release"),
            settlement_id(&escrow, "release")
        );
        assert_ne!(
            settlement_id(&escrow, "release"),
            settlement_id(&escrow, "refund")
        );
    }
}
