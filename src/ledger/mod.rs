//! SQLite double-entry ledger (no actix here).
