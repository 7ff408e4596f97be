//! The soak's nodes: separate `apn node` child processes (started, SIGKILLed, paused,
//! restarted, stopped), their config files, the sample repository they work on, and their
//! resident memory.

use super::*;

/// One node process and everything needed to restart it the same way.
pub(super) struct NodeProc {
    pub(super) name: String,
    pub(super) data_dir: PathBuf,
    pub(super) config: PathBuf,
    pub(super) log: PathBuf,
    pub(super) http: SocketAddr,
    pub(super) public_key: [u8; 32],
    pub(super) originator: bool,
    pub(super) child: Option<Child>,
    pub(super) exits: Vec<String>,
}

impl NodeProc {
    pub(super) fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub(super) fn start(&mut self, apn: &Path) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(apn)
            .args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,libp2p=warn,async_nats=warn")
            .env_remove("APN_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", apn.display()))?;
        self.child = Some(child);
        let client = ApiClient::new(&self.url(), None);
        let deadline = Instant::now() + START_TIMEOUT;
        while client.get("/healthz").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer /healthz within {START_TIMEOUT:?}",
                    self.name
                );
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!("{} exited at start: {status}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub(super) fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub(super) fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(pid, signal) };
        }
    }

    pub(super) fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; records how it ended.
    pub(super) fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            self.exits.push(format!("exit on SIGTERM: {status}"));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        self.exits
                            .push("did not stop within 20 s of SIGTERM".into());
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

pub(super) fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[allow(clippy::too_many_arguments)]
pub(super) fn node_config(
    data_dir: &Path,
    listen: Option<u16>,
    bootstrap: &[String],
    relay_url: &str,
    http: SocketAddr,
) -> String {
    let listen = listen
        .map(|port| vec![format!("/ip4/127.0.0.1/tcp/{port}")])
        .unwrap_or_default();
    format!(
        r#"[node]
data_dir = {data_dir:?}
listen = [{listen}]
bootstrap = [{bootstrap}]
mdns = false
relay_only = {relay_only}
announce_interval_s = 2
peer_timeout_s = 30

[resources]
max_concurrent_tasks = 2

[economics]
initial_balance = "100000"
min_task_reward = "1"
bandwidth_settle_bytes = 4096
bandwidth_settle_interval_s = 5

[relay]
url = "{relay_url}"
reconnect_backoff_max_ms = 1000

[http]
bind = "{http}"

[market]
bid_window_ms = 300
bid_rounds_max = 8
reassignments_max = 4
heartbeat_timeout_s = {HEARTBEAT_TIMEOUT_S}
requests_per_peer_per_minute = 100000

[executor]
timeout_s = 30

[executor.profiles.SHELL]
program = "sh"
args = ["-c", "{{prompt}}"]
enabled = true
"#,
        data_dir = data_dir.display().to_string(),
        listen = quoted(&listen),
        bootstrap = quoted(bootstrap),
        relay_only = listen.is_empty(),
    )
}

pub(super) fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("git")
        .args(["-c", "user.name=soak", "-c", "user.email=soak@apn.invalid"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("git {args:?} failed in {}", dir.display());
    }
    Ok(())
}

pub(super) fn sample_repo(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join("README"), "soak\n")?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "initial"])?;
    Ok(())
}

/// Resident memory of a process, in KiB.
pub(super) fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}
