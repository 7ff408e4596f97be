//! The projection against its file: reopening, an edited file refused, credits, history and paging.

use super::*;
use crate::identity::Identity;
use crate::messages::Vibe;
use crate::network_ledger::entry::{EntryBody, sign, subject_of};

fn message(sequence: u64, account: &AccountKey, payload: Vec<u8>) -> StoredMessage {
    StoredMessage {
        subject: subject_of(account),
        sequence,
        time_ms: 1_000_000 + i64::try_from(sequence).unwrap(),
        payload,
    }
}

#[test]
fn a_reopened_projection_has_the_same_state_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROJECTION_FILE);
    let treasury = Identity::ephemeral();
    let node = Identity::ephemeral();
    let t = treasury.public_key();
    let mint = EntryBody::Mint {
        to: node.public_key(),
        amount: Vibe::from_whole(5),
        memo: String::new(),
    };
    let pay = EntryBody::Transfer {
        to: t,
        amount: Vibe::from_whole(2),
        memo: String::new(),
    };
    let batch = vec![
        message(1, &t, sign(&treasury, Uuid::new_v4(), 0, mint).unwrap()),
        message(2, &node.public_key(), b"junk".to_vec()),
        message(
            3,
            &node.public_key(),
            sign(&node, Uuid::new_v4(), 2, pay).unwrap(),
        ),
    ];
    let mut projection = Projection::open(&path, &[t]).unwrap();
    let outcome = projection.apply(&batch).unwrap();
    assert_eq!((outcome.applied, outcome.skipped), (2, 1));
    // The mint credited the node; the node's transfer credited the treasury.
    let credited: Vec<(AccountKey, u64, &str)> = outcome
        .credits
        .iter()
        .map(|c| (c.to, c.amount, c.kind))
        .collect();
    assert_eq!(
        credited,
        [
            (node.public_key(), Vibe::from_whole(5).micros(), "mint"),
            (t, Vibe::from_whole(2).micros(), "transfer"),
        ]
    );
    // Read twice (a consumer restart): nothing changes.
    assert_eq!(projection.apply(&batch).unwrap().already_projected, 3);
    let before = projection.state().clone();
    drop(projection);
    let reopened = Projection::open(&path, &[t]).unwrap();
    assert_eq!(reopened.position(), 3);
    assert_eq!(reopened.state(), &before);
    assert_eq!(
        reopened.state().balance(&node.public_key()),
        Vibe::from_whole(3).micros()
    );
    // Its own entries and the mint that named it, newest first.
    let history = reopened.history(&node.public_key(), None, 10).unwrap();
    let kinds: Vec<&str> = history.iter().map(|row| row.kind.as_str()).collect();
    assert_eq!(kinds, ["transfer", "junk", "mint"]);
    assert_eq!(history[1].skipped.as_deref(), Some("malformed"));
    assert_eq!(history[2].account, hex::encode(t));
    assert_eq!(history[2].amount, Some(Vibe::from_whole(5)));
    // Paging: before the transfer's sequence.
    let page = reopened.history(&node.public_key(), Some(3), 10).unwrap();
    assert_eq!(page.len(), 2);
    let report = read_report(&path, &node.public_key(), None, 10).unwrap();
    assert_eq!(report.balance, Vibe::from_whole(3));
    assert_eq!(report.position, 3);
    assert_eq!(report.history, history);
}

#[test]
fn a_projection_whose_balances_were_edited_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(PROJECTION_FILE);
    let treasury = Identity::ephemeral();
    let t = treasury.public_key();
    let mint = EntryBody::Mint {
        to: t,
        amount: Vibe::from_whole(5),
        memo: String::new(),
    };
    let mut projection = Projection::open(&path, &[t]).unwrap();
    projection
        .apply(&[message(
            1,
            &t,
            sign(&treasury, Uuid::new_v4(), 0, mint).unwrap(),
        )])
        .unwrap();
    drop(projection);
    let connection = Connection::open(&path).unwrap();
    connection
        .execute("UPDATE net_balances SET balance = balance + 1", [])
        .unwrap();
    drop(connection);
    assert!(matches!(
        Projection::open(&path, &[t]),
        Err(ProjectionError::Inconsistent)
    ));
}
