use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// After some traffic, `/metrics` holds the documented families with their labels, and
/// `promtool check metrics` accepts the exposition (promtool is required in CI).
#[tokio::test]
async fn metrics_cover_turns_commits_http_and_pass_promtool() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    t.say(&a, &sid, "What are your opening hours?").await;
    let r = t.http.get(t.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for family in [
        "parley_turns_total{outcome=\"ok\"}",
        "parley_turn_duration_seconds_bucket",
        "parley_llm_requests_total{backend=\"builtin\",outcome=\"ok\"}",
        "parley_llm_request_duration_seconds_bucket",
        "parley_persistence_commits_total{outcome=\"ok\"}",
        "parley_persistence_batch_size_bucket",
        "parley_persistence_commit_duration_seconds_bucket",
        "parley_sessions_created_total",
        "parley_sessions_resident",
        "parley_session_activations_total",
        "parley_actors{kind=\"session_shard\"}",
        "parley_mailbox_depth_max{kind=\"session\"}",
        "parley_process_resident_memory_bytes",
        "parley_registry_operations_total{op=\"claim\"}",
        "parley_http_requests_total{route=\"/chatbot/{agent_id}/session/{session_id}/run_v2\",method=\"POST\",status=\"200\"}",
        "parley_http_request_duration_seconds_bucket",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    assert!(!text.contains(&sid), "a session id leaked into a label");
    assert!(
        !text.contains(&a.token) && !text.contains(ADMIN_KEY),
        "a secret leaked"
    );

    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool rejects the exposition:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) if std::env::var("PARLEY_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("promtool is required in CI (Debian package prometheus)")
        }
        Err(_) => eprintln!("skipping the promtool check: promtool not installed"),
    }
}

/// Every answer carries a request id: the caller's, or a new one.
#[tokio::test]
async fn requests_get_an_id_and_readiness_reports_the_store() {
    let t = TestServer::start().await;
    let r = t
        .http
        .get(t.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = t.http.get(t.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"].len(), 16);
    let (status, body) = json_of(t.http.get(t.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"ready": true, "store": "ok", "registry": "ok"})
    );
}

/// Callers choose methods and paths freely; the HTTP metrics' labels must not follow them,
/// or anyone could grow `/metrics` (and the recorder's memory) without bound.
#[tokio::test]
async fn random_methods_and_paths_do_not_grow_http_metric_labels() {
    let t = TestServer::start().await;
    let mut sent = Vec::new();
    for i in 0..50 {
        let token = format!("ZQX{}{i}", uuid::Uuid::new_v4().simple());
        let method = reqwest::Method::from_bytes(token.as_bytes()).unwrap();
        let path = format!("/zq-{token}/api/v1/agents/{token}");
        let r = t.http.request(method, t.url(&path)).send().await.unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        // A real route with a caller's id in it: counted under its template.
        let r = t
            .admin(reqwest::Method::GET, &format!("/api/v1/agents/{token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        sent.push(token);
    }
    let text = t
        .http
        .get(t.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for token in &sent {
        assert!(
            !text.contains(token.as_str()),
            "{token} became a label value"
        );
    }
    let label = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_string())
    };
    let known = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
    ];
    let mut routes: Vec<&str> = parley::api::routes().iter().map(|(d, _)| d.path).collect();
    // The one route between nodes, not in the API document.
    routes.push(parley::api::relay::PATH);
    let http_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("parley_http_"))
        .collect();
    assert!(http_lines.iter().any(|l| l.contains("method=\"other\"")));
    assert!(http_lines
        .iter()
        .any(|l| l.contains("route=\"/api/v1/agents/{agent_id}\"")));
    for line in http_lines {
        if let Some(m) = label(line, "method") {
            assert!(known.contains(&m.as_str()), "method label {m}: {line}");
        }
        if let Some(r) = label(line, "route") {
            assert!(
                r == "unmatched" || routes.contains(&r.as_str()),
                "route label {r}: {line}"
            );
        }
        if let Some(s) = label(line, "status") {
            assert!(s.len() == 3 || s == "other", "status label {s}: {line}");
        }
    }
}
