//! Opening the ledger file (WAL, `synchronous=FULL`) and migrating its schema, one
//! version at a time, each step in its own transaction.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params};
use uuid::Uuid;

use super::{Ledger, LedgerError, SCHEMA_VERSION, node_account, rules};

impl Ledger {
    /// Open (or create) the ledger at `path` for the node with `own_key`.
    pub fn open(path: &Path, own_key: &[u8]) -> Result<Ledger, LedgerError> {
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a settlement that returned is on disk even if the machine loses power.
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ledger::with_connection(connection, own_key)
    }

    /// An in-memory ledger (tests, property checks).
    pub fn open_in_memory(own_key: &[u8]) -> Result<Ledger, LedgerError> {
        Ledger::with_connection(Connection::open_in_memory()?, own_key)
    }

    fn with_connection(connection: Connection, own_key: &[u8]) -> Result<Ledger, LedgerError> {
        let mut ledger = Ledger {
            connection,
            own: node_account(own_key),
            stats: super::WriteStats::default(),
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS accounts (
                     name TEXT PRIMARY KEY,
                     balance INTEGER NOT NULL DEFAULT 0
                 );
                 CREATE TABLE IF NOT EXISTS transfers (
                     id TEXT PRIMARY KEY,
                     from_account TEXT NOT NULL,
                     to_account TEXT NOT NULL,
                     amount INTEGER NOT NULL CHECK (amount > 0),
                     kind TEXT NOT NULL,
                     task_id TEXT,
                     reason TEXT,
                     created_at TEXT NOT NULL,
                     seq INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS transfers_by_seq ON transfers(seq);
                 CREATE TABLE IF NOT EXISTS escrows (
                     id TEXT PRIMARY KEY,
                     payer TEXT NOT NULL,
                     amount INTEGER NOT NULL,
                     state TEXT NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS reputation (
                     peer TEXT PRIMARY KEY,
                     completed INTEGER NOT NULL DEFAULT 0,
                     failed INTEGER NOT NULL DEFAULT 0,
                     timed_out INTEGER NOT NULL DEFAULT 0,
                     bad_results INTEGER NOT NULL DEFAULT 0
                 );
                 PRAGMA user_version = 1;",
            )?;
            transaction.commit()?;
        }
        if version < 2 {
            // Version 2: payments awaiting the payee's receipt, and the task journal.
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS outbox (
                     tx_id TEXT PRIMARY KEY,
                     payee TEXT NOT NULL,
                     body BLOB NOT NULL,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     next_attempt_ms INTEGER NOT NULL
                 );
                 CREATE TABLE IF NOT EXISTS tasks (
                     id TEXT PRIMARY KEY,
                     open INTEGER NOT NULL,
                     view TEXT NOT NULL,
                     interrupted TEXT,
                     updated_at TEXT NOT NULL
                 );
                 PRAGMA user_version = 2;",
            )?;
            transaction.commit()?;
        }
        if version < 3 {
            // Version 3: payments from peers are stored under ids derived from the payer's key
            // (`rules::incoming_transfer_id`); rename the ones stored under their raw tx id.
            let transaction = self
                .connection
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let incoming: Vec<(String, String)> = {
                let mut statement = transaction
                    .prepare("SELECT id, from_account FROM transfers WHERE kind = 'incoming'")?;
                statement
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            for (id, from) in incoming {
                let payer = from
                    .strip_prefix("node:")
                    .and_then(|key| hex::decode(key).ok());
                let (Some(payer), Ok(tx_id)) = (payer, id.parse::<Uuid>()) else {
                    return Err(LedgerError::Invariant(format!(
                        "incoming transfer {id} from {from} cannot be migrated"
                    )));
                };
                let derived = rules::incoming_transfer_id(&payer, &tx_id);
                transaction.execute(
                    "UPDATE transfers SET id = ?2 WHERE id = ?1",
                    params![id, derived.to_string()],
                )?;
            }
            // And the peers this node has a relationship with (it admitted a task of theirs):
            // the only ones whose payments it accepts.
            transaction.execute_batch(
                "CREATE TABLE IF NOT EXISTS counterparties (
                     peer TEXT PRIMARY KEY,
                     since TEXT NOT NULL
                 );
                 PRAGMA user_version = 3;",
            )?;
            transaction.commit()?;
        }
        Ok(())
    }
}
