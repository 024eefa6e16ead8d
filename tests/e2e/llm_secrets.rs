//! An agent's LLM API key and header values are sealed at rest (on SQLite and Postgres),
//! yet the agent calls its LLM with them, an export carries them to an import, and
//! definitions older releases stored in clear are sealed when the node starts.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::{routing::post, Router};
use parley_engine::store::pg_testing::{self, sqlx};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

const API_KEY: &str = "sk-sealed-e2e-key-4711";
const ORG: &str = "org-sealed-e2e-header-0815";

/// A fake OpenAI-compatible server that records the credentials of every call.
async fn fake_llm(seen: Arc<Mutex<Vec<(String, String)>>>) -> String {
    serve_fake(Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                seen.lock().unwrap().push((h("authorization"), h("x-org")));
                let body = format!(
                    "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": "sealed and working"}}]}),
                    json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                );
                ([("content-type", "text/event-stream")], body)
            }
        }),
    ))
    .await
}

fn agent_yaml(name: &str, llm: &str) -> String {
    basic_agent(&format!(
        "llm:\n  - {{name: gpt, kind: openai, base_url: '{llm}/v1', model: m, api_key: {API_KEY}, headers: {{X-Org: {ORG}}}}}\n"
    ))
    .replacen("name: Test Agent", &format!("name: {name}"), 1)
}

/// Every stored definition of every agent, as raw text.
async fn raw_definitions(database_url: &str) -> Vec<String> {
    let sql = "SELECT definition FROM agent_versions";
    if database_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        let rows = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    }
}

async fn execute(database_url: &str, sql: &str, bind: &str) {
    if database_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        sqlx::query(sql).bind(bind).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query(&sql.replace("$1", "?"))
            .bind(bind)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

fn assert_sealed(rows: &[String]) {
    assert!(!rows.is_empty());
    for r in rows {
        assert!(
            !r.contains(API_KEY) && !r.contains(ORG),
            "a secret in clear: {r}"
        );
        assert!(r.contains("sealed_definition"), "{r}");
    }
}

async fn chat_uses_the_secrets(t: &TestServer, agent: &Agent, seen: &Mutex<Vec<(String, String)>>) {
    let sid = t.session(agent, json!({})).await;
    let r = t.say(agent, &sid, "hello").await;
    assert_eq!(r["response"], "sealed and working", "{r}");
    assert_eq!(
        seen.lock().unwrap().last().cloned().unwrap(),
        (format!("Bearer {API_KEY}"), ORG.to_string())
    );
}

async fn sealed_at_rest_on(database_url: Option<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let llm = fake_llm(seen.clone()).await;
    let db = database_url.clone();
    let t = TestServer::start_with(move |c| c.database_url = db).await;
    let url = database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", t.dir.join("parley.db").display()));
    let agent = t.agent(&agent_yaml("Sealed", &llm)).await;
    chat_uses_the_secrets(&t, &agent, &seen).await;

    // A new version that sends the redacted secrets back keeps them, sealed.
    let (status, got) = t
        .call(Method::GET, &format!("/api/v1/agents/{}", agent.id), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!got.to_string().contains(API_KEY), "{got}");
    let (status, body) = t
        .call(
            Method::PUT,
            &format!("/api/v1/agents/{}", agent.id),
            Some(got["definition"].clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    chat_uses_the_secrets(&t, &agent, &seen).await;
    assert_eq!(raw_definitions(&url).await.len(), 2);
    assert_sealed(&raw_definitions(&url).await);

    // Export, delete, import: the import is sealed again and still has the secrets.
    let resp = t
        .admin(Method::POST, &format!("/api/v1/agents/{}/export", agent.id))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let key = resp.headers()["x-parley-export-key"]
        .to_str()
        .unwrap()
        .to_string();
    let zip = resp.bytes().await.unwrap().to_vec();
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/agents/{}", agent.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(zip).file_name("agent.zip"),
        )
        .text("secret_key", key);
    let (status, imported) = json_of(
        t.admin(Method::POST, "/api/v1/agents/import")
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    let imported = Agent {
        id: imported["id"].as_str().unwrap().to_string(),
        token: imported["token"].as_str().unwrap().to_string(),
    };
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/agents/{}/start", imported.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    chat_uses_the_secrets(&t, &imported, &seen).await;
    assert_sealed(&raw_definitions(&url).await);

    // A definition stored in clear (as older releases did) is sealed at the next start
    // and keeps working.
    let plain = json!({"name": "Sealed", "workflow": [{"name": "Main", "init_state": true}],
        "llm": [{"name": "gpt", "kind": "openai", "base_url": format!("{llm}/v1"), "model": "m",
                 "api_key": API_KEY, "headers": {"X-Org": ORG}}]});
    execute(
        &url,
        "UPDATE agent_versions SET definition = $1",
        &plain.to_string(),
    )
    .await;
    assert!(raw_definitions(&url).await[0].contains(API_KEY));
    let (dir, guard) = t.stop().await;
    let db = database_url.clone();
    let t = TestServer::start_in(dir, move |c| c.database_url = db).await;
    assert_sealed(&raw_definitions(&url).await);
    chat_uses_the_secrets(&t, &imported, &seen).await;
    t.stop().await;
    drop(guard);
}

#[tokio::test]
async fn llm_secrets_are_sealed_at_rest_on_sqlite() {
    sealed_at_rest_on(None).await;
}

#[tokio::test]
async fn llm_secrets_are_sealed_at_rest_on_postgres() {
    let Some(db) = pg_testing::fresh_database().await else {
        return;
    };
    sealed_at_rest_on(Some(db.url().to_string())).await;
    db.drop_now().await;
}
