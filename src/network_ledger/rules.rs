//! The validation rules of the network ledger: one pure function every node applies to every
//! entry in stream order, so every projection derives the same balances and holds.
//!
//! An entry is applied whole or skipped whole, and a skip changes nothing but the account's
//! last subject sequence (which every message on the subject moves, junk included). Rules:
//! the entry is on its signer's subject and names the subject's previous sequence; its id was
//! never applied; only a treasury key mints; amounts are positive and balances never go below
//! zero nor past `u64`; a hold is released by its payer, committed and claimed by its payee,
//! disputed by its payer before the deadline and refunded to it after a deadline that saw no
//! commit, and leaves the held state exactly once. Deadlines are judged by the stream's own
//! timestamp of the entry, never by a local clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use super::entry::{self, AccountKey, Entry, EntryBody};

/// Longest escrow a hold may ask for: a week in stream milliseconds.
pub const MAX_HOLD_MS: i64 = 7 * 24 * 3600 * 1000;

/// Where a message sat in the stream: everything the rules need besides its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSlot {
    /// The account whose subject carried the message.
    pub account: AccountKey,
    /// The message's stream sequence (also its subject sequence for `prev` checks).
    pub sequence: u64,
    /// The stream's timestamp of the message, milliseconds since the epoch.
    pub time_ms: i64,
}

/// Where an escrow stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// Held: the money is in neither account.
    Held,
    /// Paid to the payee by the payer.
    Released,
    /// Taken by the payee after the deadline, on its commit.
    Claimed,
    /// Returned to the payer by a dispute before the deadline.
    Disputed,
    /// Returned to the payer after a deadline that saw no commit.
    Refunded,
}

/// One escrow as every projection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Who put the money in.
    pub payer: AccountKey,
    /// Who the money is for.
    pub payee: AccountKey,
    /// How much is held, micro-VIBE.
    pub amount: u64,
    /// The task attempt it pays for.
    pub task: Uuid,
    /// Stream time the deadline falls at.
    pub deadline_ms: i64,
    /// The payee's committed result hash and the stream time of the commit.
    pub commit: Option<([u8; 32], i64)>,
    /// Where it stands.
    pub state: HoldState,
}

/// Why an entry was skipped. Every projection skips the same entries for the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// The subject is not an account subject.
    #[error("not an account subject")]
    NotAnAccountSubject,
    /// The bytes are not a well-formed signed entry.
    #[error("malformed or unsigned entry")]
    Malformed,
    /// Signed by another account than the subject's.
    #[error("signed for another account")]
    WrongAccount,
    /// `prev` is not the subject's previous sequence (a replay or a race lost).
    #[error("stale previous sequence")]
    StalePrev,
    /// The id was applied before.
    #[error("replayed entry id")]
    Replayed,
    /// A mint by a key that is not a treasury key.
    #[error("mint by a non-treasury key")]
    NotTreasury,
    /// A zero amount.
    #[error("zero amount")]
    ZeroAmount,
    /// Paying oneself.
    #[error("payee is the payer")]
    SelfPayment,
    /// The debit exceeds the balance.
    #[error("overdraft")]
    Overdraft,
    /// A credit would pass `u64::MAX`.
    #[error("balance overflow")]
    Overflow,
    /// A hold id already in use.
    #[error("hold id already used")]
    HoldExists,
    /// A hold whose deadline is not in the future, or too far in it.
    #[error("deadline out of range")]
    BadDeadline,
    /// An entry about a hold that does not exist.
    #[error("no such hold")]
    UnknownHold,
    /// An entry about a hold by a party that may not write it.
    #[error("not this hold's party")]
    WrongParty,
    /// The hold is no longer held.
    #[error("hold already settled")]
    HoldSettled,
    /// Too early (claim or refund before the deadline) or too late (commit or dispute after).
    #[error("wrong time for this entry")]
    WrongTime,
    /// A claim without a commit, a second commit, or a refund of a committed hold.
    #[error("commit state does not allow it")]
    CommitState,
}

impl Skip {
    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Skip::NotAnAccountSubject => "not_account_subject",
            Skip::Malformed => "malformed",
            Skip::WrongAccount => "wrong_account",
            Skip::StalePrev => "stale_prev",
            Skip::Replayed => "replayed",
            Skip::NotTreasury => "not_treasury",
            Skip::ZeroAmount => "zero_amount",
            Skip::SelfPayment => "self_payment",
            Skip::Overdraft => "overdraft",
            Skip::Overflow => "overflow",
            Skip::HoldExists => "hold_exists",
            Skip::BadDeadline => "bad_deadline",
            Skip::UnknownHold => "unknown_hold",
            Skip::WrongParty => "wrong_party",
            Skip::HoldSettled => "hold_settled",
            Skip::WrongTime => "wrong_time",
            Skip::CommitState => "commit_state",
        }
    }
}

/// What an applied entry changed, for the projection's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The entry as read.
    pub entry: Entry,
    /// Accounts whose balance changed.
    pub touched: Vec<AccountKey>,
    /// The hold the entry created or moved, if any.
    pub hold: Option<Uuid>,
}

/// The state every projection derives from the stream: balances, holds, applied ids and
/// each account's last subject sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerState {
    treasury: BTreeSet<AccountKey>,
    balances: BTreeMap<AccountKey, u64>,
    holds: BTreeMap<Uuid, Hold>,
    applied_ids: HashSet<Uuid>,
    last_sequence: HashMap<AccountKey, u64>,
    minted: u128,
}

impl LedgerState {
    /// An empty ledger whose mints are accepted only from `treasury` keys.
    pub fn new(treasury: impl IntoIterator<Item = AccountKey>) -> Self {
        LedgerState {
            treasury: treasury.into_iter().collect(),
            balances: BTreeMap::new(),
            holds: BTreeMap::new(),
            applied_ids: HashSet::new(),
            last_sequence: HashMap::new(),
            minted: 0,
        }
    }

    /// An account's balance in micro-VIBE (0 when it never had one).
    pub fn balance(&self, account: &AccountKey) -> u64 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// Every account with a balance, in key order.
    pub fn balances(&self) -> &BTreeMap<AccountKey, u64> {
        &self.balances
    }

    /// An escrow by id.
    pub fn hold(&self, hold: &Uuid) -> Option<&Hold> {
        self.holds.get(hold)
    }

    /// Every escrow, in id order.
    pub fn holds(&self) -> &BTreeMap<Uuid, Hold> {
        &self.holds
    }

    /// The subject sequence of an account's last message (0: none): the `prev` its next
    /// entry must name.
    pub fn last_sequence(&self, account: &AccountKey) -> u64 {
        self.last_sequence.get(account).copied().unwrap_or(0)
    }

    /// Whether entry `id` was applied (not skipped).
    pub fn was_applied(&self, id: &Uuid) -> bool {
        self.applied_ids.contains(id)
    }

    /// What `account` has in escrows it paid into that are still held.
    pub fn escrowed_by(&self, account: &AccountKey) -> u64 {
        self.holds
            .values()
            .filter(|h| h.state == HoldState::Held && h.payer == *account)
            .fold(0u64, |sum, h| sum.saturating_add(h.amount))
    }

    /// Everything the treasury created.
    pub fn minted(&self) -> u128 {
        self.minted
    }

    /// Balances plus money still held: equal to [`LedgerState::minted`] after any sequence
    /// of entries, valid or not.
    pub fn circulating(&self) -> u128 {
        let balances: u128 = self.balances.values().map(|b| u128::from(*b)).sum();
        let held: u128 = self
            .holds
            .values()
            .filter(|h| h.state == HoldState::Held)
            .map(|h| u128::from(h.amount))
            .sum();
        balances + held
    }

    /// Apply the message at `slot` with `bytes`: the whole entry or nothing.
    pub fn apply(&mut self, slot: &StreamSlot, bytes: &[u8]) -> Result<Applied, Skip> {
        let verdict = self.check_and_apply(slot, bytes);
        // Every message on a subject moves its sequence, even junk: the owner's next entry
        // names it as `prev` (a retry, never a lost or doubled debit).
        self.last_sequence.insert(slot.account, slot.sequence);
        verdict
    }

    fn check_and_apply(&mut self, slot: &StreamSlot, bytes: &[u8]) -> Result<Applied, Skip> {
        let entry = entry::open(bytes).map_err(|_| Skip::Malformed)?;
        if entry.account != slot.account {
            return Err(Skip::WrongAccount);
        }
        if entry.prev != self.last_sequence(&slot.account) {
            return Err(Skip::StalePrev);
        }
        if self.applied_ids.contains(&entry.id) {
            return Err(Skip::Replayed);
        }
        let signer = entry.account;
        let (touched, hold) = match &entry.body {
            EntryBody::Mint { to, amount, .. } => {
                if !self.treasury.contains(&signer) {
                    return Err(Skip::NotTreasury);
                }
                let amount = positive(amount.micros())?;
                let credited = self.credited(to, amount)?;
                self.balances.insert(*to, credited);
                self.minted += u128::from(amount);
                (vec![*to], None)
            }
            EntryBody::Transfer { to, amount, .. } => {
                let amount = positive(amount.micros())?;
                if *to == signer {
                    return Err(Skip::SelfPayment);
                }
                let debited = self.debited(&signer, amount)?;
                let credited = self.credited(to, amount)?;
                self.balances.insert(signer, debited);
                self.balances.insert(*to, credited);
                (vec![signer, *to], None)
            }
            EntryBody::Hold {
                hold,
                payee,
                amount,
                task,
                deadline_ms,
            } => {
                let amount = positive(amount.micros())?;
                if *payee == signer {
                    return Err(Skip::SelfPayment);
                }
                if self.holds.contains_key(hold) {
                    return Err(Skip::HoldExists);
                }
                let ahead = deadline_ms.saturating_sub(slot.time_ms);
                if ahead <= 0 || ahead > MAX_HOLD_MS {
                    return Err(Skip::BadDeadline);
                }
                let debited = self.debited(&signer, amount)?;
                self.balances.insert(signer, debited);
                self.holds.insert(
                    *hold,
                    Hold {
                        payer: signer,
                        payee: *payee,
                        amount,
                        task: *task,
                        deadline_ms: *deadline_ms,
                        commit: None,
                        state: HoldState::Held,
                    },
                );
                (vec![signer], Some(*hold))
            }
            EntryBody::Commit { hold, result_hash } => {
                let held = self.held(hold, &signer, Party::Payee)?;
                if slot.time_ms >= held.deadline_ms {
                    return Err(Skip::WrongTime);
                }
                if held.commit.is_some() {
                    return Err(Skip::CommitState);
                }
                let time_ms = slot.time_ms;
                if let Some(h) = self.holds.get_mut(hold) {
                    h.commit = Some((*result_hash, time_ms));
                }
                (vec![], Some(*hold))
            }
            EntryBody::Release { hold } => {
                let held = self.held(hold, &signer, Party::Payer)?;
                let payee = held.payee;
                self.settle(hold, payee, HoldState::Released)?;
                (vec![payee], Some(*hold))
            }
            EntryBody::Claim { hold } => {
                let held = self.held(hold, &signer, Party::Payee)?;
                if slot.time_ms < held.deadline_ms {
                    return Err(Skip::WrongTime);
                }
                match held.commit {
                    Some((_, committed_at)) if committed_at < held.deadline_ms => {}
                    _ => return Err(Skip::CommitState),
                }
                self.settle(hold, signer, HoldState::Claimed)?;
                (vec![signer], Some(*hold))
            }
            EntryBody::Dispute { hold, .. } => {
                let held = self.held(hold, &signer, Party::Payer)?;
                if slot.time_ms >= held.deadline_ms {
                    return Err(Skip::WrongTime);
                }
                self.settle(hold, signer, HoldState::Disputed)?;
                (vec![signer], Some(*hold))
            }
            EntryBody::Refund { hold } => {
                let held = self.held(hold, &signer, Party::Payer)?;
                if slot.time_ms < held.deadline_ms {
                    return Err(Skip::WrongTime);
                }
                if held.commit.is_some() {
                    return Err(Skip::CommitState);
                }
                self.settle(hold, signer, HoldState::Refunded)?;
                (vec![signer], Some(*hold))
            }
        };
        self.applied_ids.insert(entry.id);
        Ok(Applied {
            entry,
            touched,
            hold,
        })
    }

    fn credited(&self, account: &AccountKey, amount: u64) -> Result<u64, Skip> {
        self.balance(account)
            .checked_add(amount)
            .ok_or(Skip::Overflow)
    }

    fn debited(&self, account: &AccountKey, amount: u64) -> Result<u64, Skip> {
        self.balance(account)
            .checked_sub(amount)
            .ok_or(Skip::Overdraft)
    }

    /// The hold, still held, with `signer` as the given party.
    fn held(&self, hold: &Uuid, signer: &AccountKey, party: Party) -> Result<Hold, Skip> {
        let found = self.holds.get(hold).ok_or(Skip::UnknownHold)?;
        let expected = match party {
            Party::Payer => &found.payer,
            Party::Payee => &found.payee,
        };
        if expected != signer {
            return Err(Skip::WrongParty);
        }
        if found.state != HoldState::Held {
            return Err(Skip::HoldSettled);
        }
        Ok(found.clone())
    }

    /// Pay a held escrow out to `to` and mark it `state`.
    fn settle(&mut self, hold: &Uuid, to: AccountKey, state: HoldState) -> Result<(), Skip> {
        let amount = self.holds.get(hold).ok_or(Skip::UnknownHold)?.amount;
        let credited = self.credited(&to, amount)?;
        self.balances.insert(to, credited);
        if let Some(h) = self.holds.get_mut(hold) {
            h.state = state;
        }
        Ok(())
    }
}

/// Why an executor does not run on an escrow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldRefusal {
    /// The escrow is not on the ledger (yet, or it was skipped).
    #[error("no escrow {0} on the network ledger")]
    Missing(Uuid),
    /// The escrow is for another payee.
    #[error("escrow {0} pays another node")]
    OtherPayee(Uuid),
    /// The escrow holds less than the agreed price.
    #[error("escrow {hold} holds {held} µVIBE, {needed} agreed")]
    TooSmall {
        /// The escrow.
        hold: Uuid,
        /// What it holds, micro-VIBE.
        held: u64,
        /// The agreed price, micro-VIBE.
        needed: u64,
    },
    /// The escrow's deadline leaves no time to run and commit.
    #[error("escrow {0} ends before the run can finish")]
    TooShort(Uuid),
    /// The escrow was already paid out or refunded.
    #[error("escrow {0} is already settled")]
    Settled(Uuid),
}

/// Whether an escrow lets `payee` run for `price`: held for it, at least the price, and
/// not ending before `run_ends_ms` (when a run started now must have committed).
pub fn check_hold(
    id: Uuid,
    hold: Option<&Hold>,
    payee: &AccountKey,
    price: u64,
    run_ends_ms: i64,
) -> Result<(), HoldRefusal> {
    let hold = hold.ok_or(HoldRefusal::Missing(id))?;
    if hold.payee != *payee {
        return Err(HoldRefusal::OtherPayee(id));
    }
    if hold.state != HoldState::Held {
        return Err(HoldRefusal::Settled(id));
    }
    if hold.amount < price {
        return Err(HoldRefusal::TooSmall {
            hold: id,
            held: hold.amount,
            needed: price,
        });
    }
    if hold.deadline_ms < run_ends_ms {
        return Err(HoldRefusal::TooShort(id));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Party {
    Payer,
    Payee,
}

fn positive(micros: u64) -> Result<u64, Skip> {
    if micros == 0 {
        Err(Skip::ZeroAmount)
    } else {
        Ok(micros)
    }
}

#[cfg(test)]
mod tests;
