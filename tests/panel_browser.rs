//! The Mesh Panel in a real browser: headless Chromium driven over the DevTools protocol.
//! The browser opens the login URL the node logs (`/?token=…`), which sets the HttpOnly
//! session cookie and redirects to the clean URL; the panel's websocket then works with that
//! cookie alone; a task's diff, which the websocket does not carry, is fetched by the
//! panel's diff button. Two real nodes; the header shows the node id and 1 peer, the peers list shows the other
//! node, and a transaction log entry appears live (no reload) after an event. An executor's
//! panel lists the runs it does for peers, with their origin. Screenshots at 1280 px and
//! phone width are saved under target/.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apn::actors::distributor::Prefer;
use base64::Engine;
use common::*;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browsers this test can drive, looked up on PATH in this order.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// The browser to drive. Without one the test fails rather than skips: a skipped browser
/// test would pass while checking nothing.
fn chromium() -> String {
    BROWSERS
        .into_iter()
        .find(|p| apn::actors::executor::program_exists(p))
        .map(String::from)
        .unwrap_or_else(|| {
            panic!(
                "chromium is missing: none of {BROWSERS:?} is on PATH ({}). Install it \
                 (`sudo apt-get install chromium` on Debian), or run scripts/test.sh, which \
                 installs it.",
                std::env::var("PATH").unwrap_or_default()
            )
        })
}

impl Browser {
    fn open(program: &str, url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(program)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…" on stderr.
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = sender.send(line[at..].trim().to_string());
                }
            }
        });
        let browser_url = receiver
            .recv_timeout(BROWSER_TIMEOUT)
            .expect("DevTools address");
        let port = browser_url
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        let page_url = loop {
            let list: Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json().ok())
                .unwrap_or(Value::Null);
            if let Some(page) = list
                .as_array()
                .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            {
                break page["webSocketDebuggerUrl"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no page target");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (socket, _) = tungstenite::connect(page_url).expect("CDP connects");
        Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        }
    }

    fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::Text(
                json!({"id": id, "method": method, "params": params})
                    .to_string()
                    .into(),
            ))
            .unwrap();
        loop {
            let message = self.socket.read().expect("CDP reply");
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value["result"].clone();
                }
            }
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        self.command(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )["result"]["value"]
            .clone()
    }

    fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        while self.evaluate(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "the panel never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let data = self.command("Page.captureScreenshot", json!({"format": "png"}))["data"]
            .as_str()
            .unwrap()
            .to_string();
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

#[actix_rt::test]
async fn the_panel_shows_the_node_its_peer_and_live_transactions() {
    let program = chromium();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // The first node also runs a SHELL task of its own, whose diff the panel fetches.
    let mut config = shell_config(dirs[0].path());
    config.http.bind = "127.0.0.1:0".into();
    let (first, second) = connected_pair(config, test_config(dirs[1].path())).await;

    let url = first.login_url().expect("the panel's login URL");
    let node_id = first.identity.node_id().to_string();
    let peer_id = second.identity.peer_id().to_string();
    let target = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let (browser_sender, browser_receiver) = tokio::sync::oneshot::channel();
    let (event_sender, event_receiver) = std::sync::mpsc::channel::<String>();
    let screenshots = target.clone();
    let driver = std::thread::spawn(move || {
        let mut browser = Browser::open(&program, &url);
        browser.wait_for(
            "ONLINE",
            "document.getElementById('conn-badge').textContent === 'ONLINE'",
        );
        // The login redirected to the clean URL and the cookie is out of the page's reach.
        assert_eq!(
            browser.evaluate("location.pathname + location.search"),
            json!("/"),
            "the token stayed in the address bar"
        );
        assert_eq!(
            browser.evaluate("document.cookie.includes('apn_session')"),
            json!(false),
            "the session cookie is readable by scripts"
        );
        browser.wait_for(
            "the node id",
            &format!("document.getElementById('node-id').textContent === '{node_id}'"),
        );
        browser.wait_for(
            "1 peer",
            "document.getElementById('peer-count').textContent === '1'",
        );
        browser.wait_for(
            "the settlement mode, labelled as trusting the peers",
            "document.getElementById('settlement').textContent === 'local (trust your peers)'",
        );
        browser.wait_for(
            "the other node",
            &format!("!!document.querySelector('#peers-list tr[data-peer-id=\"{peer_id}\"]')"),
        );
        // Marks this page load: a reload would clear it.
        browser.evaluate(
            "window.__apnLoad = 'first'; document.querySelectorAll('#tx-log li[data-type]').length",
        );
        let _ = browser_sender.send(());
        let local_task = event_receiver.recv_timeout(BROWSER_TIMEOUT).unwrap();
        browser.wait_for(
            "a live transaction entry",
            "document.querySelectorAll('#tx-log li[data-type=\"task_distributed\"]').length > 0",
        );
        // The websocket carries only the diff's size; the button fetches the diff itself.
        let card = format!("document.querySelector('.exec[data-task-id=\"{local_task}\"]')");
        browser.wait_for(
            "the local task completed",
            &format!("!!{card} && {card}.classList.contains('completed')"),
        );
        browser.evaluate(&format!("{card}.click()"));
        browser.wait_for(
            "the diff button",
            "!document.getElementById('diff-button').hidden",
        );
        browser.evaluate("document.getElementById('diff-button').click()");
        browser.wait_for(
            "the fetched diff",
            "document.getElementById('log-view').textContent.includes('panel diff line')",
        );
        assert_eq!(
            browser.evaluate("window.__apnLoad"),
            json!("first"),
            "the page reloaded"
        );
        browser.screenshot(&screenshots.join("panel-screenshot.png"));
        browser.command(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
        );
        browser.wait_for("the phone width", "window.innerWidth === 390");
        let overflow =
            browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1");
        browser.screenshot(&screenshots.join("panel-screenshot-phone.png"));
        overflow
    });
    tokio::time::timeout(Duration::from_secs(60), browser_receiver)
        .await
        .expect("browser ready")
        .unwrap();
    // The event: a task offered to the mesh (nobody runs SHELL here, so it fails after the
    // bid window: two entries, task_distributed then execution_failed).
    let repo = git_repo(&[("f", "x")]);
    let task = mesh_shell_task(repo.path(), "Panel test task", "true", 2);
    first.distributor.send(task).await.unwrap().unwrap();
    let mut local = mesh_shell_task(
        repo.path(),
        "Panel local task",
        "echo 'panel diff line' >> f",
        1,
    );
    local.prefer = Prefer::Local;
    let local_id = first.distributor.send(local).await.unwrap().unwrap();
    event_sender.send(local_id.to_string()).unwrap();
    let phone_fits =
        tokio::task::spawn_blocking(move || driver.join().expect("browser checks pass"))
            .await
            .unwrap();
    assert_eq!(
        phone_fits,
        json!(true),
        "the page overflows a phone-width screen"
    );
    assert!(target.join("panel-screenshot.png").exists());
    first.shutdown().await;
    second.shutdown().await;
}

/// The executor's own panel shows the runs it does for peers, live: a card with the
/// originator for the hosted run (never "No executions yet"), and the "Execution started
/// locally … from apn_…, Earning: ~N VIBE" entry in its transaction log.
#[actix_rt::test]
async fn the_executor_panel_shows_the_runs_it_does_for_peers() {
    let program = chromium();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut executor_config = shell_config(dirs[1].path());
    executor_config.http.bind = "127.0.0.1:0".into();
    let (origin, executor) = connected_pair(test_config(dirs[0].path()), executor_config).await;
    let url = executor.login_url().expect("the panel's login URL");
    let origin_id = origin.identity.node_id().to_string();
    let screenshots = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let (ready_sender, ready) = tokio::sync::oneshot::channel();
    let (task_sender, task_receiver) = std::sync::mpsc::channel::<String>();
    let driver = std::thread::spawn(move || {
        let mut browser = Browser::open(&program, &url);
        browser.wait_for(
            "ONLINE",
            "document.getElementById('conn-badge').textContent === 'ONLINE'",
        );
        browser.wait_for(
            "no executions yet",
            "document.getElementById('executions').textContent.includes('No executions yet')",
        );
        let _ = ready_sender.send(());
        let task_id = task_receiver.recv_timeout(BROWSER_TIMEOUT).unwrap();
        let card = format!(
            "document.querySelector('.exec.hosted[data-task-id=\"{task_id}\"][data-origin=\"{origin_id}\"]')"
        );
        browser.wait_for(
            "the hosted run's card, completed",
            &format!("!!{card} && {card}.classList.contains('completed')"),
        );
        browser.wait_for(
            "the execution started entry",
            &format!(
                "[...document.querySelectorAll('#tx-log li[data-type=\"execution_started\"]')].some((li) => \
                 li.textContent.includes('Execution started locally') && li.textContent.includes('from {origin_id}') \
                 && li.textContent.includes('Earning: ~'))"
            ),
        );
        browser.screenshot(&screenshots.join("panel-screenshot-executor.png"));
        browser.evaluate("document.getElementById('executions').textContent")
    });
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("browser ready")
        .unwrap();
    let repo = git_repo(&[("f", "x")]);
    let task = mesh_shell_task(repo.path(), "Hosted panel task", "echo hosted >> f", 2);
    let id = origin.distributor.send(task).await.unwrap().unwrap();
    task_sender.send(id.to_string()).unwrap();
    let listed = tokio::task::spawn_blocking(move || driver.join().expect("browser checks pass"))
        .await
        .unwrap();
    let listed = listed.as_str().unwrap_or_default().to_string();
    assert!(
        listed.contains("Hosted panel task") && !listed.contains("No executions yet"),
        "{listed}"
    );
    origin.shutdown().await;
    executor.shutdown().await;
}
