//! The admin API: agents, versions, status, tokens.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn agents_crud_versions_and_tokens() {
    let t = TestServer::start().await;

    let r = t.http.get(t.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = t
        .http
        .get(t.url("/api/v1/agents"))
        .bearer_auth("pk_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // JSON definitions work as well as YAML; secrets never come back.
    let def = json!({
        "name": "Hooked",
        "workflow": [{"name": "A", "init_state": true, "available_tools": ["SendChatMessage"]}],
        "llm": [{"name": "main", "kind": "webhook", "url": "http://127.0.0.1:9/hook", "headers": {"Authorization": "Bearer s3cret"}}]
    });
    let r = t
        .admin(Method::POST, "/api/v1/agents")
        .json(&def)
        .send()
        .await
        .unwrap();
    let (status, created) = json_of(r).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "Stopped");
    assert_eq!(created["version"], 1);
    assert!(created["token"].as_str().unwrap().starts_with("pat_"));
    assert!(!created.to_string().contains("s3cret"));
    let id = created["id"].as_str().unwrap().to_string();

    let (_, got) = json_of(
        t.admin(Method::GET, &format!("/api/v1/agents/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        got["definition"]["llm"][0]["headers"]["Authorization"],
        "********"
    );
    assert!(got.get("token").is_none());
    assert!(!got.to_string().contains("s3cret"));

    // An invalid update is rejected with path-addressed details and changes nothing.
    let bad =
        "name: Hooked\nworkflow:\n  - name: A\n    init_state: true\n    transitions: [Sales]\n";
    let r = t
        .admin(Method::PUT, &format!("/api/v1/agents/{id}"))
        .header("content-type", "application/yaml")
        .body(bad)
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_definition");
    assert_eq!(
        body["error"]["details"][0]["path"],
        "workflow[0].transitions[0]"
    );
    assert_eq!(
        body["error"]["details"][0]["message"],
        "unknown state \"Sales\""
    );
    let (_, got) = json_of(
        t.admin(Method::GET, &format!("/api/v1/agents/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["version"], 1);

    // A valid update sent back with the redacted secret keeps the stored secret.
    let mut def2 = got["definition"].clone();
    def2["task"] = json!("new task");
    def2["name"] = json!("Hooked v2");
    let r = t
        .admin(Method::PUT, &format!("/api/v1/agents/{id}"))
        .json(&def2)
        .send()
        .await
        .unwrap();
    let (status, updated) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["definition"]["task"], "new task");
    let stored = t
        .node()
        .agent(
            t.server.as_ref().unwrap().tenant.tenant,
            uuid::Uuid::parse_str(&id).unwrap(),
        )
        .await
        .unwrap()
        .1;
    assert_eq!(stored.llm[0].headers["Authorization"], "Bearer s3cret");

    let (_, list) = json_of(t.admin(Method::GET, "/api/v1/agents").send().await.unwrap()).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["agents"][0]["id"], id.as_str());
    assert_eq!(list["agents"][0]["name"], "Hooked v2");

    // Token rotation: the old token stops working at once.
    let old = created["token"].as_str().unwrap().to_string();
    let (_, rotated) = json_of(
        t.admin(Method::POST, &format!("/api/v1/agents/{id}/token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let new = rotated["token"].as_str().unwrap().to_string();
    assert_ne!(old, new);
    let caps = |tok: String| {
        t.http
            .get(t.url(&format!("/chatbot/{id}/capabilities")))
            .bearer_auth(tok)
            .send()
    };
    assert_eq!(caps(old).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(caps(new).await.unwrap().status(), StatusCode::OK);

    let r = t
        .admin(Method::DELETE, &format!("/api/v1/agents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = t
        .admin(Method::GET, &format!("/api/v1/agents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn live_sessions_keep_their_version_and_new_ones_get_the_newest() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let old_session = t.session(&a, json!({})).await;
    let v2 = basic_agent("").replace("We are open from 9 to 17.", "Now open 8 to 20.");
    let r = t
        .admin(Method::PUT, &format!("/api/v1/agents/{}", a.id))
        .header("content-type", "application/yaml")
        .body(v2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let new_session = t.session(&a, json!({})).await;
    let q = "What are your opening hours?";
    assert_eq!(
        t.say(&a, &old_session, q).await["response"],
        "We are open from 9 to 17."
    );
    assert_eq!(
        t.say(&a, &new_session, q).await["response"],
        "Now open 8 to 20."
    );
    assert_eq!(t.get_session(&a, &old_session).await["agent_version"], 1);
    assert_eq!(t.get_session(&a, &new_session).await["agent_version"], 2);
}

#[tokio::test]
async fn an_agent_that_cannot_start_is_in_error_with_the_reason() {
    let t = TestServer::start().await;
    let yaml = basic_agent("llm:\n  - kind: openai\n    base_url: http://127.0.0.1:9/v1\n    model: m\n    api_key_env: PARLEY_TEST_SURELY_UNSET_KEY\n");
    let r = t
        .admin(Method::POST, "/api/v1/agents")
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    let (_, created) = json_of(r).await;
    let id = created["id"].as_str().unwrap();
    let r = t
        .admin(Method::POST, &format!("/api/v1/agents/{id}/start"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(r).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "agent_start_failed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("PARLEY_TEST_SURELY_UNSET_KEY"));
    let (_, got) = json_of(
        t.admin(Method::GET, &format!("/api/v1/agents/{id}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["status"], "Error");
    assert!(got["status_reason"]
        .as_str()
        .unwrap()
        .contains("is not set"));
}

#[tokio::test]
async fn the_first_start_generates_a_private_admin_key() {
    let t = TestServer::start_with(|c| c.admin_key = None).await;
    let setup = &t.server.as_ref().unwrap().tenant;
    let key = setup.generated_key.clone().expect("generated");
    let file = setup.key_file.clone().unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let r = t
        .http
        .get(t.url("/api/v1/agents"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// `parley serve` with an admin key that could never authenticate (no `pk_` prefix, or
/// too short) refuses to start and says why, instead of answering 401 to everything.
#[tokio::test]
async fn serve_refuses_an_admin_key_that_could_not_work() {
    for (key, says) in [
        (
            "a-long-enough-key-without-the-prefix",
            "must start with `pk_`",
        ),
        ("pk_short", "at least 24 characters"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-examples"])
            .args(["--admin-key", key, "--data-dir"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut waited = 0;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if waited >= 200 {
                child.kill().unwrap();
                panic!("parley serve started with the admin key {key:?}");
            }
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "{key}: {stderr}");
        assert!(stderr.contains(says), "{key}: {stderr}");
        assert!(!stderr.contains(key), "the key is echoed: {stderr}");
    }
}
