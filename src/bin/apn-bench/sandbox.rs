//! `sandbox`: a trivial run (`true`) through the agent runner in the sandbox (median and
//! p99), against the same run without it (median); the samples are interleaved.

use std::time::{Duration, Instant};

use anyhow::bail;
use apn::config::Config;

use crate::{emit, median_p99_ms};

/// One run of `true` through the agent runner; its wall time from spawn to reaped.
async fn trivial_run(
    dirs: &apn::actors::executor_run::RunDirs,
    sandbox: Option<apn::sandbox::SandboxPolicy>,
) -> anyhow::Result<Duration> {
    let spec = apn::agent_process::AgentSpec {
        argv: vec!["true".into()],
        workspace: dirs.workspace.clone(),
        pass_env: Vec::new(),
        extra_env: dirs.environment(),
        timeout: Duration::from_secs(30),
        output_bytes_max: 1024,
        sandbox,
        output: apn::agent_process::AgentOutputFormat::Text,
    };
    let (events, mut receiver) = tokio::sync::mpsc::channel(16);
    let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
    let started = Instant::now();
    let outcome =
        apn::agent_process::run_agent(spec, events, tokio_util::sync::CancellationToken::new())
            .await?;
    let elapsed = started.elapsed();
    drain.await?;
    if outcome.exit_code != Some(0) {
        bail!("the trivial run failed: {outcome:?}");
    }
    Ok(elapsed)
}

pub(crate) async fn run(quick: bool) -> anyhow::Result<()> {
    let support = apn::sandbox::probe();
    if let Some(problem) = &support.problem {
        bail!("this kernel cannot sandbox: {problem}");
    }
    let samples = if quick { 30 } else { 300 };
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.node.data_dir = dir.path().join("data");
    std::fs::create_dir_all(&config.node.data_dir)?;
    let dirs = apn::actors::executor_run::RunDirs::beside(&dir.path().join("workspace"));
    std::fs::create_dir_all(&dirs.workspace)?;
    dirs.create()?;
    let profile = apn::config::ProfileConfig::new("true", &[]);
    let policy = apn::actors::executor_run::agent_sandbox_policy(&config, &profile, &dirs, 30);
    let (mut plain, mut boxed) = (Vec::new(), Vec::new());
    for _ in 0..samples {
        plain.push(trivial_run(&dirs, None).await?);
        boxed.push(trivial_run(&dirs, Some(policy.clone())).await?);
    }
    let (plain_median, _) = median_p99_ms(&mut plain);
    let (boxed_median, boxed_p99) = median_p99_ms(&mut boxed);
    emit(
        "sandbox",
        "sandbox_run_median",
        boxed_median,
        "ms",
        "unsandboxed_run_median",
        plain_median,
    );
    emit(
        "sandbox",
        "sandbox_run_p99",
        boxed_p99,
        "ms",
        "unsandboxed_run_median",
        plain_median,
    );
    Ok(())
}
