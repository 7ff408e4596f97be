//! Who may write where on the ledger's NATS server.
//!
//! Without permissions, anyone who can reach the server can publish junk on any account's
//! subject (every projection skips it, but it moves the subject's sequence, so the owner has
//! to sign again) and, worse, call the JetStream API to update or delete the stream itself.
//! With `settlement.identity_nkey`, a node logs in to the ledger's server as the NATS nkey
//! user whose key *is* its Ed25519 identity key (NATS nkeys are Ed25519), so the server can
//! name each node by the same key the ledger does. [`authorization_block`] writes the
//! server's `authorization` section for a list of accounts: each may publish on its own
//! account subject and use the read side of the JetStream API for the ledger stream, and
//! nothing else. Only a treasury may create the stream; nobody may update, purge or delete
//! it (the operator does that, if ever, as the server's system user).

use super::entry::{AccountKey, subject_of};
use crate::identity::Identity;

/// The nkey prefix byte of a user public key (`U…`).
const USER_PREFIX: u8 = 20 << 3;
/// The nkey prefix bytes of a user seed (`SU…`).
const USER_SEED_PREFIX: [u8; 2] = [(18 << 3) | (USER_PREFIX >> 5), (USER_PREFIX & 31) << 3];

/// The NATS nkey user public key (`U…`, 56 characters) of an account.
pub fn nkey_user(account: &AccountKey) -> String {
    encode(&[USER_PREFIX], account)
}

/// The NATS nkey user seed (`SU…`) of an identity: what the node logs in with. A secret.
pub fn nkey_user_seed(identity: &Identity) -> String {
    encode(&USER_SEED_PREFIX, &identity.secret_key_bytes())
}

/// Base32 (no padding) of prefix ‖ key ‖ CRC-16, as NATS encodes nkeys.
fn encode(prefix: &[u8], key: &[u8]) -> String {
    let mut raw = Vec::with_capacity(prefix.len() + key.len() + 2);
    raw.extend_from_slice(prefix);
    raw.extend_from_slice(key);
    let crc = crc16_xmodem(&raw);
    raw.extend_from_slice(&crc.to_le_bytes());
    data_encoding::BASE32_NOPAD.encode(&raw)
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), the checksum of nkeys.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The subjects an account may publish to: its own account subject, and the JetStream API
/// calls a node makes on the ledger stream `stream` (stream info, the last message of a
/// subject, its ordered pull consumer: create, fetch, info, delete, flow control). A treasury may also
/// create the stream.
pub fn publish_allowed(stream: &str, account: &AccountKey, treasury: bool) -> Vec<String> {
    let mut subjects = vec![
        subject_of(account),
        "$JS.API.INFO".to_string(),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ];
    if treasury {
        subjects.push(format!("$JS.API.STREAM.CREATE.{stream}"));
    } else {
        // Ask the faucet, if one runs (its answer comes back on an inbox).
        subjects.push(super::faucet::FAUCET_SUBJECT.to_string());
    }
    subjects
}

/// The subjects an account may subscribe to: replies on its inboxes, and for a treasury the
/// faucet's requests (when it runs one).
pub fn subscribe_allowed(treasury: bool) -> Vec<String> {
    let mut subjects = vec!["_INBOX.>".to_string()];
    if treasury {
        subjects.push(super::faucet::FAUCET_SUBJECT.to_string());
    }
    subjects
}

/// The `authorization { users = [...] }` section of a nats-server config that lets each of
/// `treasury` and `nodes` in under its identity nkey with [`publish_allowed`] and
/// [`subscribe_allowed`], and nobody else.
pub fn authorization_block(stream: &str, treasury: &[AccountKey], nodes: &[AccountKey]) -> String {
    let mut text = String::from("authorization {\n  users = [\n");
    let users = treasury
        .iter()
        .map(|account| (account, true))
        .chain(nodes.iter().map(|account| (account, false)));
    for (account, is_treasury) in users {
        let quoted = |subjects: Vec<String>| {
            subjects
                .iter()
                .map(|subject| format!("\"{subject}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let publish = quoted(publish_allowed(stream, account, is_treasury));
        let subscribe = quoted(subscribe_allowed(is_treasury));
        let role = if is_treasury { "treasury" } else { "node" };
        text.push_str(&format!(
            "    # {role} {}\n    {{ nkey: \"{}\", permissions: {{ publish: {{ allow: [{publish}] }}, subscribe: {{ allow: [{subscribe}] }} }} }}\n",
            hex::encode(account),
            nkey_user(account),
        ));
    }
    text.push_str("  ]\n}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nkey_of_an_identity_is_its_own_key_as_nats_encodes_it() {
        let identity = Identity::ephemeral();
        let seed = nkey_user_seed(&identity);
        let from_seed = nkeys::KeyPair::from_seed(&seed).unwrap();
        assert_eq!(from_seed.public_key(), nkey_user(&identity.public_key()));
        assert!(seed.starts_with("SU") && seed.len() == 58, "{}", seed.len());
        // It signs like the identity: a nonce signed by the nkey verifies with the key.
        let signature = from_seed.sign(b"nonce").unwrap();
        assert!(crate::identity::verify_signature(
            &identity.public_key(),
            b"nonce",
            &signature
        ));
    }

    #[test]
    fn each_account_may_publish_on_its_own_subject_only_and_never_touch_the_stream() {
        let (node, other, treasury) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let node_may = publish_allowed("APN_LEDGER", &node, false);
        assert!(node_may.contains(&subject_of(&node)));
        assert!(!node_may.contains(&subject_of(&other)));
        assert!(!node_may.iter().any(|s| s.contains("apn.v1.ledger.>")
            || s.contains("STREAM.CREATE")
            || s.contains("STREAM.UPDATE")
            || s.contains("STREAM.DELETE")
            || s.contains("STREAM.PURGE")
            || s == "$JS.API.>"));
        assert!(
            publish_allowed("APN_LEDGER", &treasury, true)
                .contains(&"$JS.API.STREAM.CREATE.APN_LEDGER".to_string())
        );
        // Nodes may ask the faucet; only the treasury may answer it.
        let faucet = crate::network_ledger::faucet::FAUCET_SUBJECT.to_string();
        assert!(node_may.contains(&faucet));
        assert!(subscribe_allowed(true).contains(&faucet));
        assert!(!subscribe_allowed(false).contains(&faucet));
        let block = authorization_block("APN_LEDGER", &[treasury], &[node, other]);
        assert_eq!(block.matches("nkey:").count(), 3);
        assert!(block.contains(&nkey_user(&other)));
    }
}
