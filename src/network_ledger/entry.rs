//! The entries of the network ledger and their wire form.
//!
//! An entry is signed by the account it is written for and published on that account's
//! subject (`apn.v1.ledger.<hex key>`). The signature covers the exact CBOR bytes of the
//! [`Entry`] (never a re-encoding), prefixed with a domain tag so a ledger signature can never
//! be mistaken for a mesh envelope's. Each entry names the subject sequence it was written
//! after (`prev`): JetStream enforces it at publish time with
//! `Nats-Expected-Last-Subject-Sequence`, and every projection checks it again, so an entry
//! replayed later, or published without the header, is skipped.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::{Identity, PUBLIC_KEY_BYTES, verify_signature};
use crate::messages::Vibe;
use crate::messages::codec::{self, CodecError};

/// An account: the Ed25519 public key of a node or of the treasury.
pub type AccountKey = [u8; PUBLIC_KEY_BYTES];

/// Largest signed entry on the wire; anything longer is skipped unread.
pub const MAX_ENTRY_BYTES: usize = 4096;
/// Longest memo of a mint or transfer, and reason of a dispute, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Subject prefix of every account's entries; the account's hex key follows.
pub const SUBJECT_PREFIX: &str = "apn.v1.ledger.";
/// Prepended to an entry's bytes before signing (domain separation from other signatures).
const SIGNING_CONTEXT: &[u8] = b"apn.v1.ledger-entry\0";

/// What an entry does. Amounts are micro-VIBE; times are stream milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryBody {
    /// The treasury creates `amount` in `to` (only a treasury key may write it).
    Mint {
        /// The account credited.
        to: AccountKey,
        /// Amount created.
        amount: Vibe,
        /// Why (a grant, a faucet), for the history.
        memo: String,
    },
    /// The signer pays `to` from its balance.
    Transfer {
        /// The account credited.
        to: AccountKey,
        /// Amount moved.
        amount: Vibe,
        /// What the payment is for (bandwidth, compute), for the history.
        memo: String,
    },
    /// The signer (payer) puts `amount` in escrow for `payee`'s run of `task`, until
    /// `deadline_ms`. Neither side can take it back alone: see the other kinds.
    Hold {
        /// The escrow's id, named by every later entry about it.
        hold: Uuid,
        /// The executor the escrow is for.
        payee: AccountKey,
        /// Amount held, taken from the payer's balance.
        amount: Vibe,
        /// The task attempt the escrow pays for.
        task: Uuid,
        /// Stream time after which a commit can be claimed or a missing one refunded.
        deadline_ms: i64,
    },
    /// The payee commits to the hash of the result it is delivering (before the deadline).
    Commit {
        /// The escrow committed to.
        hold: Uuid,
        /// SHA-256 of the signed result the payee delivers.
        result_hash: [u8; 32],
    },
    /// The payer pays the escrow to the payee.
    Release {
        /// The escrow released.
        hold: Uuid,
    },
    /// The payee takes the escrow after the deadline: it committed in time and no dispute came.
    Claim {
        /// The escrow claimed.
        hold: Uuid,
    },
    /// The payer rejects the result before the deadline: refunded, and visible to everyone.
    Dispute {
        /// The escrow disputed.
        hold: Uuid,
        /// Why, for the payee's reputation.
        reason: String,
    },
    /// The payer takes the escrow back after the deadline: no commit came in time.
    Refund {
        /// The escrow refunded.
        hold: Uuid,
    },
}

impl EntryBody {
    /// A short name for logs, metrics and the history.
    pub fn kind(&self) -> &'static str {
        match self {
            EntryBody::Mint { .. } => "mint",
            EntryBody::Transfer { .. } => "transfer",
            EntryBody::Hold { .. } => "hold",
            EntryBody::Commit { .. } => "commit",
            EntryBody::Release { .. } => "release",
            EntryBody::Claim { .. } => "claim",
            EntryBody::Dispute { .. } => "dispute",
            EntryBody::Refund { .. } => "refund",
        }
    }
}

/// The signed content of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique forever; also the `Nats-Msg-Id`, so a retried publish is stored once.
    pub id: Uuid,
    /// The account whose subject carries the entry; it must have signed it.
    pub account: AccountKey,
    /// The subject sequence of the account's last entry when this one was written (0: none).
    pub prev: u64,
    /// What the entry does.
    pub body: EntryBody,
}

/// An entry as published: its exact CBOR bytes and the account's signature over them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// CBOR of an [`Entry`].
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
    /// Ed25519 signature of `SIGNING_CONTEXT ‖ entry` by `Entry::account`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// Why bytes from the stream are not a valid entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// Longer than [`MAX_ENTRY_BYTES`].
    #[error("entry of {0} bytes is over the {MAX_ENTRY_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not CBOR of the expected shape.
    #[error("malformed entry: {0}")]
    Malformed(#[from] CodecError),
    /// The signature is not the account's.
    #[error("the signature is not the account's")]
    BadSignature,
    /// A memo or reason is longer than [`MAX_TEXT_BYTES`].
    #[error("text of {0} bytes is over the {MAX_TEXT_BYTES}-byte limit")]
    TextTooLong(usize),
}

/// The subject an account's entries are published on.
pub fn subject_of(account: &AccountKey) -> String {
    format!("{SUBJECT_PREFIX}{}", hex::encode(account))
}

/// The account a subject belongs to, if it is an account subject.
pub fn account_of_subject(subject: &str) -> Option<AccountKey> {
    let hex_key = subject.strip_prefix(SUBJECT_PREFIX)?;
    let bytes = hex::decode(hex_key).ok()?;
    bytes.try_into().ok()
}

/// Sign `body` for `signer`'s account, written after subject sequence `prev`.
pub fn sign(
    signer: &Identity,
    id: Uuid,
    prev: u64,
    body: EntryBody,
) -> Result<Vec<u8>, EntryError> {
    let entry = Entry {
        id,
        account: signer.public_key(),
        prev,
        body,
    };
    let entry_bytes = codec::encode(&entry)?;
    let signature = signer.sign(&signing_input(&entry_bytes));
    let signed = codec::encode(&SignedEntry {
        entry: entry_bytes,
        signature,
    })?;
    if signed.len() > MAX_ENTRY_BYTES {
        return Err(EntryError::TooLarge(signed.len()));
    }
    Ok(signed)
}

/// Read and verify an entry from the stream: size, shape, text limits, signature.
pub fn open(bytes: &[u8]) -> Result<Entry, EntryError> {
    if bytes.len() > MAX_ENTRY_BYTES {
        return Err(EntryError::TooLarge(bytes.len()));
    }
    let signed: SignedEntry = codec::decode(bytes, MAX_ENTRY_BYTES)?;
    let entry: Entry = codec::decode(&signed.entry, MAX_ENTRY_BYTES)?;
    if !verify_signature(
        &entry.account,
        &signing_input(&signed.entry),
        &signed.signature,
    ) {
        return Err(EntryError::BadSignature);
    }
    let text_len = match &entry.body {
        EntryBody::Mint { memo, .. } | EntryBody::Transfer { memo, .. } => memo.len(),
        EntryBody::Dispute { reason, .. } => reason.len(),
        _ => 0,
    };
    if text_len > MAX_TEXT_BYTES {
        return Err(EntryError::TextTooLong(text_len));
    }
    Ok(entry)
}

fn signing_input(entry_bytes: &[u8]) -> Vec<u8> {
    let mut input = SIGNING_CONTEXT.to_vec();
    input.extend_from_slice(entry_bytes);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(to: AccountKey) -> EntryBody {
        EntryBody::Transfer {
            to,
            amount: Vibe::from_whole(3),
            memo: "bandwidth".into(),
        }
    }

    #[test]
    fn a_signed_entry_opens_to_what_was_signed() {
        let payer = Identity::ephemeral();
        let id = Uuid::new_v4();
        let bytes = sign(&payer, id, 7, transfer([9; 32])).unwrap();
        let entry = open(&bytes).unwrap();
        assert_eq!(entry.id, id);
        assert_eq!(entry.account, payer.public_key());
        assert_eq!(entry.prev, 7);
        assert_eq!(entry.body, transfer([9; 32]));
    }

    #[test]
    fn an_entry_claiming_another_account_fails_the_signature() {
        let thief = Identity::ephemeral();
        let victim = Identity::ephemeral();
        let bytes = sign(&thief, Uuid::new_v4(), 0, transfer(thief.public_key())).unwrap();
        let mut signed: SignedEntry = codec::decode(&bytes, MAX_ENTRY_BYTES).unwrap();
        let mut entry: Entry = codec::decode(&signed.entry, MAX_ENTRY_BYTES).unwrap();
        entry.account = victim.public_key();
        signed.entry = codec::encode(&entry).unwrap();
        let forged = codec::encode(&signed).unwrap();
        assert!(matches!(open(&forged), Err(EntryError::BadSignature)));
    }

    #[test]
    fn oversized_and_garbage_bytes_are_refused() {
        assert!(matches!(
            open(&vec![0u8; MAX_ENTRY_BYTES + 1]),
            Err(EntryError::TooLarge(_))
        ));
        assert!(matches!(open(b"junk"), Err(EntryError::Malformed(_))));
    }

    #[test]
    fn a_long_memo_is_refused() {
        let payer = Identity::ephemeral();
        let body = EntryBody::Transfer {
            to: [1; 32],
            amount: Vibe::from_whole(1),
            memo: "x".repeat(MAX_TEXT_BYTES + 1),
        };
        let bytes = sign(&payer, Uuid::new_v4(), 0, body).unwrap();
        assert!(matches!(open(&bytes), Err(EntryError::TextTooLong(_))));
    }

    #[test]
    fn subjects_name_accounts_and_nothing_else() {
        let key = [0xab; 32];
        assert_eq!(account_of_subject(&subject_of(&key)), Some(key));
        assert_eq!(account_of_subject("apn.v1.ledger.zz"), None);
        assert_eq!(account_of_subject("apn.v1.ledger.abab"), None);
        assert_eq!(account_of_subject("other.subject"), None);
    }
}
