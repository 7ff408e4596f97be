//! `ledger`, concurrent callers: durable settlements (hold + release) per second through
//! the settlement engine with 64 callers at once, each waiting for its own answers, so the
//! engine's group commit can carry many callers' writes in one transaction and one fsync.
//! Every settlement is answered only after its commit: the durability is that of the
//! baseline, bare SQLite single-row inserts (WAL, `synchronous=FULL`) measured by `ledger`.

use std::time::Instant;

use apn::actors::settler::{GetWriteStats, HoldEscrow, ReleaseEscrow};
use apn::messages::Vibe;

use crate::emit;

/// Callers sending at once.
const CALLERS: usize = 64;

pub(crate) async fn run(quick: bool, bare_rate: f64) -> anyhow::Result<()> {
    let per_caller = if quick { 20 } else { 100 };
    let dir = tempfile::tempdir()?;
    let own = apn::identity::Identity::ephemeral();
    let payee = apn::identity::Identity::ephemeral().public_key();
    let engine = apn::actors::settler::start_settlement_engine(
        &dir.path().join("concurrent.sqlite3"),
        own,
        Vibe::from_whole(1_000_000),
        None,
    )?;
    let amount = Vibe::from_micros(10);
    let before = engine.send(GetWriteStats).await?;
    let started = Instant::now();
    let callers = (0..CALLERS).map(|_| {
        let engine = engine.clone();
        async move {
            for _ in 0..per_caller {
                let escrow = uuid::Uuid::new_v4();
                engine
                    .send(HoldEscrow {
                        transfer_id: escrow,
                        task_id: escrow,
                        amount,
                        payee: None,
                        deadline: chrono::Utc::now() + chrono::Duration::hours(1),
                    })
                    .await??;
                engine
                    .send(ReleaseEscrow {
                        task_id: escrow,
                        payee,
                        amount,
                    })
                    .await??;
            }
            anyhow::Ok(())
        }
    });
    for caller in futures::future::join_all(callers).await {
        caller?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = engine.send(GetWriteStats).await?;
    let settlements = CALLERS * per_caller;
    tracing::info!(
        settlements,
        writes = after.writes - before.writes,
        commits = after.commits - before.commits,
        "concurrent settlements through the engine"
    );
    emit(
        "ledger",
        "settlements_per_s_concurrent",
        settlements as f64 / elapsed,
        "settlements/s",
        "sqlite_single_row_inserts_per_s",
        bare_rate,
    );
    Ok(())
}
