//! The HTTP API of a real node on an ephemeral port: every endpoint's shape, access control,
//! bad JSON, oversized bodies.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // a test fails loudly by design

mod common;

use std::time::Duration;

use apn::client::ApiClient;
use common::*;
use serde_json::{Value, json};

/// A node with its HTTP API on an ephemeral port, a small body limit, and loopback listed as
/// a trusted proxy, so that `X-Forwarded-For` lets a test act as another host.
fn web_config(dir: &std::path::Path) -> apn::config::Config {
    let mut config = test_config(dir);
    config.http.bind = "127.0.0.1:0".into();
    config.http.body_bytes_max = 4096;
    config.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    config
}

/// Blocking HTTP calls run off the actix thread.
async fn call<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

fn raw(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let response = match method {
        "GET" => {
            let mut request = agent.get(url);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            request.call()
        }
        _ => {
            let mut request = agent.post(url).header("content-type", "application/json");
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            request.send(body.unwrap_or(""))
        }
    };
    let mut response = response.expect("HTTP call");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[actix_rt::test]
async fn every_endpoint_answers_with_its_shape() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (first, second) =
        connected_pair(web_config(dirs[0].path()), test_config(dirs[1].path())).await;
    let base = format!("http://{}", first.http_addr.unwrap());
    let client_base = base.clone();
    let (status, peers, resources, transactions, tasks, health, metrics, index, ledger) =
        call(move || {
            let client = ApiClient::new(&client_base, None);
            let metrics = ureq::get(&format!("{client_base}/metrics"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            let index = ureq::get(&format!("{client_base}/"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            (
                client.get("/api/status").unwrap(),
                client.get("/api/peers").unwrap(),
                client.get("/api/resources").unwrap(),
                client.get("/api/transactions?limit=10").unwrap(),
                client.get("/api/tasks").unwrap(),
                client.get("/healthz").unwrap(),
                metrics,
                index,
                client.get("/api/ledger?limit=5").unwrap(),
            )
        })
        .await;
    assert_eq!(status["node_id"], first.identity.node_id().as_str());
    assert_eq!(status["peer_id"], first.identity.peer_id().to_string());
    assert_eq!(status["peers"], 1);
    assert_eq!(status["relay"], "disabled");
    assert_eq!(status["balance"], "1000");
    assert_eq!(status["escrowed"], "0");
    assert_eq!(status["settlement"], "local (trust your peers)");
    // The node's own ledger, labelled as such: its self-granted starting balance.
    assert_eq!(ledger["mode"], "local");
    assert_eq!(ledger["balance"], "1000");
    assert!(ledger["transfers"].is_array(), "{ledger}");
    assert!(
        status["uptime_s"].is_i64()
            && status["version"].is_string()
            && status["listen_addrs"].is_array()
    );
    assert_eq!(peers[0]["node_id"], second.identity.node_id().as_str());
    assert!(peers[0]["capabilities"].is_array() && peers[0]["path"] == "direct");
    assert!(resources["bandwidth"]["upload_mbps"].is_number() && resources["compute"]["max"] == 2);
    assert!(transactions.is_array() && tasks.is_array());
    assert_eq!(health["status"], "ok");
    assert!(metrics.contains("apn_peers 1"), "{metrics}");
    assert!(metrics.contains("apn_messages_dropped_total{reason=\"bad_signature\"} 0"));
    assert!(metrics.contains("apn_relay_state{state=\"disabled\"} 1"));
    assert!(metrics.contains("apn_websocket_clients"));
    // The node's own grant was one durable write at least, in as many commits or fewer.
    let gauge = |name: &str| -> f64 {
        let prefix = format!("{name} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    let (commits, writes) = (
        gauge("apn_ledger_commits_total"),
        gauge("apn_ledger_writes_total"),
    );
    assert!(
        writes >= 1.0 && commits >= 1.0 && commits <= writes,
        "{commits} {writes}"
    );
    assert!(index.contains("APN Mesh Panel"));

    // Errors are JSON with the right status.
    let url = base.clone();
    let (missing, bad_id, bad_type, unknown, bad_page) = call(move || {
        (
            raw(
                "GET",
                &format!("{url}/api/tasks/00000000-0000-0000-0000-000000000000"),
                &[],
                None,
            ),
            raw("GET", &format!("{url}/api/tasks/not-a-uuid"), &[], None),
            raw(
                "GET",
                &format!("{url}/api/transactions?type=nonsense"),
                &[],
                None,
            ),
            raw("GET", &format!("{url}/api/nothing-here"), &[], None),
            raw("GET", &format!("{url}/api/ledger?limit=0"), &[], None),
        )
    })
    .await;
    assert_eq!(bad_page.0, 400, "{bad_page:?}");
    assert_eq!(bad_page.1["error"], "bad_request");
    assert_eq!(missing.0, 404);
    assert_eq!(missing.1["error"], "not_found");
    assert_eq!(bad_id.0, 400);
    assert_eq!(bad_type.0, 400);
    assert!(
        bad_type.1["detail"]
            .as_str()
            .unwrap()
            .contains("task_distributed")
    );
    assert_eq!(unknown.0, 404);
    first.shutdown().await;
    second.shutdown().await;
}

#[actix_rt::test]
async fn mutations_need_the_token_and_bodies_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(web_config(dir.path())).await;
    let token = std::fs::read_to_string(dir.path().join(apn::web::TOKEN_FILE)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(apn::web::TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let url = format!("http://{}/api/tasks", node.http_addr.unwrap());
    let repo = dir.path().display().to_string();
    let results = call(move || {
        let body =
            json!({"prompt": "x", "executor_profile": "SHELL", "repo_path": repo, "reward": "1"})
                .to_string();
        let remote = [("x-forwarded-for", "203.0.113.9")];
        let bearer = format!("Bearer {token}");
        let remote_with_token = [
            ("x-forwarded-for", "203.0.113.9"),
            ("authorization", bearer.as_str()),
        ];
        let wrong = [
            ("x-forwarded-for", "203.0.113.9"),
            ("authorization", "Bearer wrong"),
        ];
        let local = [("authorization", bearer.as_str())];
        vec![
            raw("POST", &url, &remote, Some(&body)),
            raw("POST", &url, &wrong, Some(&body)),
            raw("POST", &url, &remote_with_token, Some(&body)),
            raw("GET", &url, &remote, None),
            raw("POST", &url, &local, Some("{not json")),
            raw(
                "POST",
                &url,
                &local,
                Some(&format!("{{\"prompt\": \"{}\"}}", "x".repeat(10_000))),
            ),
            raw(
                "POST",
                &url,
                &local,
                Some(r#"{"prompt":"x","executor_profile":"SHELL","repo_path":"/","reward":"-1"}"#),
            ),
            // Loopback is not trust: no token, no mutation.
            raw("POST", &url, &[], Some(&body)),
            raw("GET", &url, &remote_with_token, None),
        ]
    })
    .await;
    assert_eq!(results[0].0, 401, "{:?}", results[0].1);
    assert_eq!(results[0].1["error"], "missing_token");
    assert_eq!(results[1].0, 401);
    assert_eq!(results[1].1["error"], "bad_token");
    // With the token the request reaches the market (which refuses the non-repository).
    assert_eq!(results[2].0, 400, "{:?}", results[2].1);
    assert!(
        results[2].1["detail"].as_str().unwrap().contains("base"),
        "{:?}",
        results[2].1
    );
    // Reads from other hosts are off by default; the token opens them.
    assert_eq!(results[3].0, 403, "{:?}", results[3].1);
    assert_eq!(results[3].1["error"], "remote_read");
    assert_eq!(results[8].0, 200, "{:?}", results[8].1);
    assert_eq!(results[7].0, 401, "{:?}", results[7].1);
    assert_eq!(results[7].1["error"], "missing_token");
    assert_eq!(results[4].0, 400);
    assert!(
        results[4].1["detail"].as_str().unwrap().contains("JSON"),
        "{:?}",
        results[4].1
    );
    assert_eq!(results[5].0, 413, "{:?}", results[5].1);
    assert_eq!(results[6].0, 400);
    assert!(
        results[6].1["detail"]
            .as_str()
            .unwrap()
            .contains("negative"),
        "{:?}",
        results[6].1
    );
    node.shutdown().await;
}

/// The `/api/...` and other routes the server has (`src/web/api/mod.rs`), each with its method.
const ROUTES: [(&str, &str); 14] = [
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/api/openapi.json"),
    ("get", "/api/status"),
    ("get", "/api/peers"),
    ("get", "/api/resources"),
    ("get", "/api/transactions"),
    ("get", "/api/ledger"),
    ("get", "/api/tasks"),
    ("post", "/api/tasks"),
    ("get", "/api/tasks/{id}"),
    ("post", "/api/tasks/{id}/cancel"),
    ("get", "/api/events/execution-processes/{id}/logs"),
    ("get", "/api/execution-processes/{id}/raw-logs"),
];

#[actix_rt::test]
async fn the_openapi_description_matches_the_routes_and_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(web_config(dir.path())).await;
    let base = format!("http://{}", node.http_addr.unwrap());
    let (status, spec) = call({
        let url = format!("{base}/api/openapi.json");
        move || raw("GET", &url, &[], None)
    })
    .await;
    assert_eq!(status, 200);
    assert!(
        spec["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{spec}"
    );
    // Both ways: every route is described, every described operation is a route.
    let mut described = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            described.push((method.clone(), path.clone()));
        }
    }
    described.sort();
    let mut routes: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    routes.sort();
    assert_eq!(described, routes);
    // Each described path answers with something other than the catch-all 404 (with the
    // token, so that mutations reach their handlers).
    let bearer = format!("Bearer {}", node.api_token().expect("a token"));
    let unknown_id = uuid::Uuid::new_v4().to_string();
    for (method, path) in &routes {
        if path.starts_with("/api/events") {
            continue; // an unknown task's stream is a 404 by design; checked below
        }
        let concrete = path.replace("{id}", &unknown_id);
        let url = format!("{base}{concrete}");
        let method = method.to_uppercase();
        let catch_all = format!("{method} {concrete} not found");
        let authorization = bearer.clone();
        let (status, body) = call(move || {
            raw(
                &method,
                &url,
                &[("authorization", authorization.as_str())],
                Some("{}"),
            )
        })
        .await;
        assert_ne!(status, 401, "{path}: {body}");
        assert_ne!(
            body["detail"].as_str().unwrap_or(""),
            catch_all,
            "{path}: {status} {body}"
        );
    }
    let (status, body) = call({
        let url = format!("{base}/api/events/execution-processes/{unknown_id}/logs");
        move || raw("GET", &url, &[], None)
    })
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    // The status answer carries exactly the properties the description lists.
    let (_, answer) = call({
        let url = format!("{base}/api/status");
        move || raw("GET", &url, &[], None)
    })
    .await;
    let schema = &spec["components"]["schemas"]["StatusDoc"];
    let mut listed: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let mut answered: Vec<&String> = answer.as_object().unwrap().keys().collect();
    listed.sort();
    answered.sort();
    assert_eq!(listed, answered);
    for required in schema["required"].as_array().unwrap() {
        assert!(
            answer.get(required.as_str().unwrap()).is_some(),
            "{required}"
        );
    }
    // Another method on a known path is 405, not 404 (with the token: without it, any POST
    // is refused before routing).
    let (status, body) = call({
        let url = format!("{base}/api/status");
        move || {
            raw(
                "POST",
                &url,
                &[("authorization", bearer.as_str())],
                Some("{}"),
            )
        }
    })
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // The documented limit is the real one.
    let limit = spec["paths"]["/api/transactions"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .expect("limit parameter")["schema"]["maximum"]
        .as_u64();
    assert_eq!(
        limit,
        Some(apn::actors::panel_hub::TRANSACTION_LOG_MAX as u64)
    );
    node.shutdown().await;
}
