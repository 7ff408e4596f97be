//! `ledger`: durable settlements (hold + release) per second, one SQLite transaction each
//! and batched, against bare SQLite single-row inserts with the same durability (WAL,
//! `synchronous=FULL`); the p99 of one settlement through the settlement actor, against its
//! median; and settlements through the network ledger on JetStream, R1 and R3, against bare
//! JetStream publishes awaited for their ack (`ledger_jetstream.rs`).

use std::time::Instant;

use crate::{emit, median_p99_ms};

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
    use apn::ledger::{Ledger, LedgerOp};
    let rounds = if quick { 300 } else { 2000 };
    let dir = tempfile::tempdir()?;
    let own = apn::identity::Identity::ephemeral();
    let payee = apn::identity::Identity::ephemeral().public_key();
    let mut ledger = Ledger::open(&dir.path().join("single.sqlite3"), &own.public_key())?;
    let account = ledger.own_account().to_string();
    ledger.mint(
        uuid::Uuid::new_v4(),
        &account,
        apn::messages::Vibe::from_whole(1_000_000),
    )?;
    let amount = apn::messages::Vibe::from_micros(10);
    let started = Instant::now();
    for _ in 0..rounds {
        let escrow = uuid::Uuid::new_v4();
        ledger.hold(escrow, None, amount)?;
        ledger.release(escrow, &payee)?;
    }
    let single_rate = rounds as f64 / started.elapsed().as_secs_f64();

    let mut batched = Ledger::open(&dir.path().join("batched.sqlite3"), &own.public_key())?;
    let account = batched.own_account().to_string();
    batched.mint(
        uuid::Uuid::new_v4(),
        &account,
        apn::messages::Vibe::from_whole(1_000_000),
    )?;
    const BATCH: usize = 32;
    let started = Instant::now();
    for _ in 0..rounds / BATCH {
        let mut operations = Vec::with_capacity(BATCH * 2);
        for _ in 0..BATCH {
            let escrow = uuid::Uuid::new_v4();
            operations.push(LedgerOp::Hold { escrow, amount });
            operations.push(LedgerOp::Release { escrow, payee });
        }
        batched.apply_batch(&operations)?;
    }
    let batched_rate = (rounds / BATCH * BATCH) as f64 / started.elapsed().as_secs_f64();

    // Baseline: bare SQLite, one row per transaction, same WAL + synchronous=FULL.
    let bare = rusqlite::Connection::open(dir.path().join("bare.sqlite3"))?;
    bare.pragma_update(None, "journal_mode", "WAL")?;
    bare.pragma_update(None, "synchronous", "FULL")?;
    bare.execute_batch("CREATE TABLE rows (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)")?;
    let started = Instant::now();
    for _ in 0..rounds {
        bare.execute(
            "INSERT INTO rows (id, amount) VALUES (?1, 10)",
            [uuid::Uuid::new_v4().to_string()],
        )?;
    }
    let bare_rate = rounds as f64 / started.elapsed().as_secs_f64();
    emit(
        "ledger",
        "settlements_per_s_one_transaction_each",
        single_rate,
        "settlements/s",
        "sqlite_single_row_inserts_per_s",
        bare_rate,
    );
    emit(
        "ledger",
        &format!("settlements_per_s_batched_{BATCH}"),
        batched_rate,
        "settlements/s",
        "sqlite_single_row_inserts_per_s",
        bare_rate,
    );

    // Through the actor: one hold + release request pair, p99.
    let engine = apn::actors::settler::start_settlement_engine(
        &dir.path().join("actor.sqlite3"),
        own.clone(),
        apn::messages::Vibe::from_whole(1_000_000),
        None,
    )?;
    let mut latencies = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let escrow = uuid::Uuid::new_v4();
        let started = Instant::now();
        engine
            .send(apn::actors::settler::HoldEscrow {
                transfer_id: escrow,
                task_id: escrow,
                amount,
                payee: None,
                deadline: chrono::Utc::now() + chrono::Duration::hours(1),
            })
            .await??;
        engine
            .send(apn::actors::settler::ReleaseEscrow {
                task_id: escrow,
                payee,
                amount,
            })
            .await??;
        latencies.push(started.elapsed());
    }
    let (median, p99) = median_p99_ms(&mut latencies);
    emit(
        "ledger",
        "settlement_through_actor_p99",
        p99,
        "ms",
        "settlement_through_actor_median",
        median,
    );
    crate::ledger_concurrent::run(quick, bare_rate).await?;

    crate::ledger_jetstream::run(quick, bare_rate).await
}
