//! Process helpers shared by the integration tests and the benchmark harness: a real
//! `nats-server` child on a free loopback port, with JetStream if asked, or a cluster of
//! them. Not used by a running node (only `apn demo --settlement jetstream` starts one).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports tried before giving up on starting a nats-server.
const START_ATTEMPTS: usize = 5;
/// How long to wait for a started nats-server to accept connections.
const NATS_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a helper process could not start.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The helper program could not be started (usually: not installed).
    #[error("cannot start {program}: {source} (install it: apt-get install -y nats-server)")]
    Spawn {
        /// The program tried (see [`nats_server_program`]).
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The server started but did not accept TCP connections on this port within 10 s.
    #[error("nats-server did not accept connections on port {0} in time")]
    NotReady(u16),
    /// Binding an ephemeral loopback port failed.
    #[error("no free port: {0}")]
    NoPort(std::io::Error),
    /// The temporary nats-server config file could not be written.
    #[error("cannot write the nats-server config: {0}")]
    Config(std::io::Error),
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16, HarnessError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(HarnessError::NoPort)
}

/// The nats-server program: `$APN_NATS_SERVER`, else `nats-server` on PATH, else Debian's
/// `/usr/sbin/nats-server`.
pub fn nats_server_program() -> String {
    if let Ok(program) = std::env::var("APN_NATS_SERVER") {
        return program;
    }
    if crate::actors::executor::program_exists("nats-server") {
        "nats-server".to_string()
    } else {
        "/usr/sbin/nats-server".to_string()
    }
}

/// A real `nats-server` on loopback, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    /// Loopback TCP port the server accepts clients on (`nats://127.0.0.1:<port>`).
    pub port: u16,
    child: Option<Child>,
    /// The server's configuration file, if it has one (kept until the server is dropped).
    config_file: Option<std::sync::Arc<tempfile::NamedTempFile>>,
    /// JetStream's store directory, if JetStream is on (kept across restarts and until drop).
    store_dir: Option<std::sync::Arc<tempfile::TempDir>>,
    /// More arguments (a cluster member's name, cluster listen address and routes).
    extra_args: Vec<String>,
}

impl NatsServer {
    /// Start on a free port and wait until it accepts connections. The port is free when
    /// picked but another process can take it before nats-server binds it, so a server that
    /// exits at start is retried on another port.
    pub fn start() -> Result<NatsServer, HarnessError> {
        NatsServer::start_with_config(None)
    }

    /// Start with `config` (nats-server configuration text, e.g. an `authorization`
    /// block) on a free port.
    pub fn start_with_config(config: Option<&str>) -> Result<NatsServer, HarnessError> {
        NatsServer::start_with(config, None)
    }

    /// Start with JetStream on, storing in a fresh temporary directory that survives
    /// [`NatsServer::restart`] (so a restarted server has its streams back).
    pub fn start_jetstream() -> Result<NatsServer, HarnessError> {
        let store = tempfile::tempdir().map_err(HarnessError::Config)?;
        NatsServer::start_with(None, Some(std::sync::Arc::new(store)))
    }

    /// Start with JetStream on and `config` (e.g. an `authorization` block with per-user
    /// permissions).
    pub fn start_jetstream_with_config(config: &str) -> Result<NatsServer, HarnessError> {
        let store = tempfile::tempdir().map_err(HarnessError::Config)?;
        NatsServer::start_with(Some(config), Some(std::sync::Arc::new(store)))
    }

    fn start_with(
        config: Option<&str>,
        store_dir: Option<std::sync::Arc<tempfile::TempDir>>,
    ) -> Result<NatsServer, HarnessError> {
        let config_file = match config {
            None => None,
            Some(text) => {
                let file = tempfile::NamedTempFile::new().map_err(HarnessError::Config)?;
                std::fs::write(file.path(), text).map_err(HarnessError::Config)?;
                Some(file)
            }
        };
        let config_file = config_file.map(std::sync::Arc::new);
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let mut server = NatsServer {
                port: free_port()?,
                child: None,
                config_file: config_file.clone(),
                store_dir: store_dir.clone(),
                extra_args: Vec::new(),
            };
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(HarnessError::NotReady(0)))
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL) and reap it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start (again) on the same port and wait until it accepts connections.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        let program = nats_server_program();
        let mut command = Command::new(&program);
        if let Some(file) = &self.config_file {
            command.arg("-c").arg(file.path());
        }
        if let Some(store) = &self.store_dir {
            command.arg("-js").arg("-sd").arg(store.path());
        }
        command.args(&self.extra_args);
        let child = command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| HarnessError::Spawn { program, source })?;
        self.child = Some(child);
        let deadline = Instant::now() + NATS_START_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // A server that lost the port exits within milliseconds; whoever answers
                // then is not ours.
                std::thread::sleep(Duration::from_millis(50));
                return match self.child.as_mut().map(|child| child.try_wait()) {
                    Some(Ok(None)) => Ok(()),
                    _ => {
                        self.child = None;
                        Err(HarnessError::NotReady(self.port))
                    }
                };
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady(self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Servers a JetStream cluster may have in the harness.
const CLUSTER_SIZE_MAX: usize = 5;

/// A cluster of nats-servers with JetStream on loopback, each with its own store, routed to
/// every other (what a replicated ledger stream runs on). Killed on drop.
#[derive(Debug)]
pub struct NatsCluster {
    /// The members; `servers[i].url()` is member `i`'s client URL.
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Start `size` members (2 to 5) and wait until each accepts client connections. The
    /// JetStream meta group elects its leader moments later: clients retry until it has.
    pub fn start(size: usize) -> Result<NatsCluster, HarnessError> {
        if !(2..=CLUSTER_SIZE_MAX).contains(&size) {
            return Err(HarnessError::Config(std::io::Error::other(format!(
                "a cluster has 2 to {CLUSTER_SIZE_MAX} servers, not {size}"
            ))));
        }
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match NatsCluster::try_start(size) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(HarnessError::NotReady(0)))
    }

    fn try_start(size: usize) -> Result<NatsCluster, HarnessError> {
        let mut ports = Vec::with_capacity(size);
        for _ in 0..size {
            ports.push((free_port()?, free_port()?));
        }
        let route = |port: u16| format!("nats://127.0.0.1:{port}");
        let mut servers: Vec<NatsServer> = Vec::with_capacity(size);
        for (index, (client_port, cluster_port)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, (_, port))| route(*port))
                .collect();
            let store = tempfile::tempdir().map_err(HarnessError::Config)?;
            servers.push(NatsServer {
                port: *client_port,
                child: None,
                config_file: None,
                store_dir: Some(std::sync::Arc::new(store)),
                extra_args: vec![
                    "-n".into(),
                    format!("apn-{index}"),
                    "--cluster_name".into(),
                    "apn".into(),
                    "--cluster".into(),
                    route(*cluster_port),
                    "--routes".into(),
                    routes.join(","),
                ],
            });
        }
        for server in &mut servers {
            server.restart()?;
        }
        Ok(NatsCluster { servers })
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
