//! The treasury: the one kind of account whose `Mint` entries count.
//!
//! A treasury is an Ed25519 key kept in a directory of its own (`identity.key`, mode 0600),
//! away from any node's data dir; nodes list its public key in `settlement.treasury`. Minting
//! is an ordinary append on the treasury's subject, so it is ordered, de-duplicated and
//! judged by every projection like any other entry.

use std::path::Path;

use uuid::Uuid;

use super::entry::{AccountKey, EntryBody, MAX_TEXT_BYTES};
use super::stream::{Appended, LedgerStream, StreamError};
use crate::identity::{Identity, IdentityError, PUBLIC_KEY_BYTES, public_key_of};
use crate::messages::Vibe;

/// Why a treasury operation was refused before anything was published.
#[derive(Debug, thiserror::Error)]
pub enum TreasuryError {
    /// The treasury key could not be read or created.
    #[error(transparent)]
    Key(#[from] IdentityError),
    /// The account is neither a hex public key nor a peer id.
    #[error("{0:?} is not an account: give a 64-digit hex Ed25519 public key or a peer id")]
    Account(String),
    /// Minting nothing is not an entry.
    #[error("the amount must be more than zero")]
    ZeroAmount,
    /// The memo is longer than an entry carries.
    #[error("the memo is over the {MAX_TEXT_BYTES}-byte limit")]
    MemoTooLong,
    /// The stream refused or could not be reached.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Load the treasury key from `dir`, creating it on first use (the directory is made
/// private). Returns the key and whether it was created now.
pub fn init(dir: &Path) -> Result<(Identity, bool), TreasuryError> {
    let existed = dir.join(crate::identity::IDENTITY_FILE).exists();
    let identity = Identity::load_or_create(dir)?;
    Ok((identity, !existed))
}

/// Load an existing treasury key from `dir`; a missing key is an error, never a new treasury.
pub fn load(dir: &Path) -> Result<Identity, TreasuryError> {
    let path = dir.join(crate::identity::IDENTITY_FILE);
    if !path.exists() {
        return Err(TreasuryError::Key(IdentityError::Io {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no treasury key here (apn treasury init creates one)",
            ),
        }));
    }
    Ok(Identity::load_or_create(dir)?)
}

/// Parse an account: a 64-digit hex Ed25519 public key, or a libp2p peer id (`12D3KooW…`)
/// whose key is Ed25519.
pub fn parse_account(text: &str) -> Result<AccountKey, TreasuryError> {
    let text = text.trim();
    if let Some(key) = hex::decode(text)
        .ok()
        .and_then(|bytes| <[u8; PUBLIC_KEY_BYTES]>::try_from(bytes).ok())
    {
        return Ok(key);
    }
    text.parse::<libp2p::PeerId>()
        .ok()
        .and_then(|peer| public_key_of(&peer))
        .ok_or_else(|| TreasuryError::Account(text.to_string()))
}

/// Mint `amount` into `to` as the treasury `treasury`: one `Mint` entry on the stream.
/// Returns where it was stored; every projection that lists `treasury` applies it.
pub async fn mint(
    stream: &LedgerStream,
    treasury: &Identity,
    to: AccountKey,
    amount: Vibe,
    memo: &str,
) -> Result<Appended, TreasuryError> {
    if amount.micros() == 0 {
        return Err(TreasuryError::ZeroAmount);
    }
    if memo.len() > MAX_TEXT_BYTES {
        return Err(TreasuryError::MemoTooLong);
    }
    let body = EntryBody::Mint {
        to,
        amount,
        memo: memo.to_string(),
    };
    Ok(stream.append(treasury, Uuid::new_v4(), body, None).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_a_hex_key_or_a_peer_id() {
        let node = Identity::ephemeral();
        let key = node.public_key();
        assert_eq!(parse_account(&hex::encode(key)).unwrap(), key);
        assert_eq!(parse_account(&node.peer_id().to_string()).unwrap(), key);
        for bad in ["", "zz", &hex::encode([1u8; 31]), "12D3KooWnotapeer"] {
            assert!(
                matches!(parse_account(bad), Err(TreasuryError::Account(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn init_creates_once_and_load_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let treasury_dir = dir.path().join("treasury");
        assert!(load(&treasury_dir).is_err());
        assert!(!treasury_dir.exists(), "load must not create a treasury");
        let (first, created) = init(&treasury_dir).unwrap();
        assert!(created);
        let (again, created) = init(&treasury_dir).unwrap();
        assert!(!created);
        assert_eq!(first.public_key(), again.public_key());
        assert_eq!(
            load(&treasury_dir).unwrap().public_key(),
            first.public_key()
        );
    }
}
