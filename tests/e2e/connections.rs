use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const BOT_TOKEN: &str = "123456:AAE-very-secret-bot-token";

/// Connections are created, listed, changed and deleted; secrets are write-only and sealed
/// on disk; the master key survives a restart.
#[tokio::test]
async fn connections_keep_their_secrets_write_only_and_sealed() {
    let t = TestServer::start().await;
    let (status, c) = t.call(Method::POST,
        "/api/v1/connections",
        Some(json!({"name": "Support bot", "platform": "telegram", "config": {"bot_token": BOT_TOKEN, "mode": "polling"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    assert_eq!(c["platform"], "telegram");
    assert_eq!(c["status"], "Active");
    assert_eq!(c["enabled"], false);
    assert_eq!(
        c["config"],
        json!({"mode": "polling", "streaming": true, "bot_token_set": true})
    );
    assert_eq!(c["inbound_url"], format!("/hooks/{id}"));
    assert!(!c.to_string().contains(BOT_TOKEN));

    let (_, slack) = t.call(Method::POST,
        "/api/v1/connections",
        Some(json!({"name": "Slack", "platform": "slack", "config": {"bot_token": "xoxb-1", "signing_secret": "sig"}})),
    )
    .await;
    assert_eq!(slack["config"]["signing_secret_set"], true);
    assert_eq!(slack["config"]["app_token_set"], false);

    let (status, list) = t
        .call(Method::GET, "/api/v1/connections?platform=telegram", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["summary"],
        json!({"total": 2, "connected": 0, "error": 0})
    );
    let (_, found) = t
        .call(Method::GET, "/api/v1/connections?q=SUPP", None)
        .await;
    assert_eq!(found["connections"][0]["id"], id.as_str());
    let (_, none) = t
        .call(Method::GET, "/api/v1/connections?status=connected", None)
        .await;
    assert_eq!(none["connections"], json!([]));
    assert!(!list.to_string().contains(BOT_TOKEN));

    // Rotation by PATCH; the answer never has the secret.
    let rotated = "654321:AAE-rotated-token";
    let (status, c2) = t
        .call(
            Method::PATCH,
            &format!("/api/v1/connections/{id}"),
            Some(json!({"enabled": true, "config": {"bot_token": rotated, "mode": "webhook"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c2}");
    assert_eq!(
        (c2["enabled"].as_bool(), c2["config"]["mode"].as_str()),
        (Some(true), Some("webhook"))
    );
    assert!(!c2.to_string().contains(rotated));

    // Sealed at rest: neither token is anywhere in the database files.
    let dir = t.dir.clone();
    let mut disk = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("parley.db")
        {
            disk.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(!disk.is_empty());
    let text = String::from_utf8_lossy(&disk);
    assert!(
        text.contains("Support bot"),
        "the connection is in the files"
    );
    assert!(
        !text.contains(BOT_TOKEN) && !text.contains(rotated),
        "a secret is stored in clear"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // After a restart the same key opens the secrets.
    let (dir, guard) = t.stop().await;
    let t = TestServer::start_in(dir, |_| {}).await;
    let (status, again) = t
        .call(Method::GET, &format!("/api/v1/connections/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["config"]["bot_token_set"], true);

    let (status, _) = t
        .call(Method::DELETE, &format!("/api/v1/connections/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = t
        .call(Method::GET, &format!("/api/v1/connections/{id}"), None)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found")
    );
    drop(guard);
}

/// Bad requests get a clear JSON error with the failing fields' paths.
#[tokio::test]
async fn connection_errors_are_json_with_paths() {
    let t = TestServer::start().await;
    let (status, body) = t.call(Method::POST,
        "/api/v1/connections",
        Some(json!({"name": "d", "platform": "discord", "config": {"bot_token": "x", "session_duration_ms": 2_592_000_001u64, "colour": 1}})),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
    );
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for p in [
        "config.application_id",
        "config.public_key",
        "config.session_duration_ms",
        "config.colour",
    ] {
        assert!(paths.contains(&p), "{p} missing: {body}");
    }
    let (status, body) = t
        .call(
            Method::POST,
            "/api/v1/connections",
            Some(json!({"name": "x", "platform": "myspace"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
    );

    let ok = json!({"name": "Hooks", "platform": "webhook", "config": {"url": "https://example.com/in", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}});
    let (status, c) = t
        .call(Method::POST, "/api/v1/connections", Some(ok.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let (status, body) = t.call(Method::POST, "/api/v1/connections", Some(ok)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );

    let id = c["id"].as_str().unwrap();
    let (status, body) = t
        .call(
            Method::PATCH,
            &format!("/api/v1/connections/{id}"),
            Some(json!({"platform": "slack"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
    );
    let (status, _) = t
        .call(
            Method::PATCH,
            &format!("/api/v1/connections/{id}"),
            Some(json!({"config": {"secret": "not-whsec"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = t
        .call(Method::GET, "/api/v1/connections/not-an-id", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t
        .call(Method::GET, "/api/v1/connections?platform=icq", None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = t
        .http
        .get(t.url("/api/v1/connections"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// `test` makes a real call with the stored credentials and says what the platform
/// answered, without ever showing a secret.
#[tokio::test]
async fn testing_a_connection_calls_the_platform() {
    use std::sync::{Arc, Mutex};

    use axum::http::HeaderMap;
    use axum::routing::{any, post};
    use axum::{Json, Router};

    let t = TestServer::start().await;
    // A Telegram Bot API that knows one token.
    let telegram = serve_fake(Router::new().route(
        "/{bot}/getMe",
        any(|axum::extract::Path(bot): axum::extract::Path<String>| async move {
            if bot == format!("bot{BOT_TOKEN}") {
                (axum::http::StatusCode::OK, Json(json!({"ok": true, "result": {"id": 42, "is_bot": true, "first_name": "Help", "username": "help_bot"}})))
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})))
            }
        }),
    ))
    .await;
    // A webhook receiver that checks the Standard Webhooks signature.
    let received: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen = received.clone();
    let hooks = serve_fake(Router::new().route(
        "/in",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let secret = parley_connectors::webhook::WebhookSecret::parse(
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                )
                .unwrap();
                let ok = parley_connectors::webhook::verify(
                    &secret,
                    &headers,
                    &body,
                    chrono::Utc::now().timestamp(),
                )
                .is_ok();
                seen.lock().unwrap().push(ok);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    ))
    .await;

    let create = |body: Value| t.call(Method::POST, "/api/v1/connections", Some(body));
    let (_, good) = create(json!({"name": "tg", "platform": "telegram", "config": {"bot_token": BOT_TOKEN, "api_base": telegram}})).await;
    let (_, bad) = create(json!({"name": "tg2", "platform": "telegram", "config": {"bot_token": "1:wrong-token", "api_base": telegram}})).await;
    let (_, hook) = create(json!({"name": "hook", "platform": "webhook", "config": {"url": format!("{hooks}/in"), "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}})).await;

    let test = |c: &Value| format!("/api/v1/connections/{}/test", c["id"].as_str().unwrap());
    let (status, ok) = t.call(Method::POST, &test(&good), None).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!(
        ok,
        json!({"ok": true, "platform": "telegram", "detail": {"bot_id": 42, "username": "help_bot"}})
    );
    let (_, refused) = t.call(Method::POST, &test(&bad), None).await;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("Unauthorized"),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains("wrong-token"),
        "the token leaked: {refused}"
    );
    let (_, delivered) = t.call(Method::POST, &test(&hook), None).await;
    assert_eq!(delivered["ok"], true, "{delivered}");
    assert_eq!(
        *received.lock().unwrap(),
        [true],
        "one signed, verifiable test event"
    );
}

/// Agents list the connections they talk on; a connection answers to one inbound agent.
#[tokio::test]
async fn agents_take_channels_and_one_agent_takes_a_connections_inbound() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let b = t.agent(&basic_agent("")).await;
    let (_, c) = t
        .call(
            Method::POST,
            "/api/v1/connections",
            Some(json!({"name": "tg", "platform": "telegram", "config": {"bot_token": BOT_TOKEN}})),
        )
        .await;
    let cid = c["id"].as_str().unwrap().to_string();
    let put = |agent: &str| format!("/api/v1/agents/{agent}/channels");

    let (status, body) = t
        .call(
            Method::PUT,
            &put(&a.id),
            Some(json!([{"connection_id": cid, "inbound": true}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!([{"connection_id": cid, "inbound": true}]));
    let (status, body) = t
        .call(
            Method::PUT,
            &put(&b.id),
            Some(json!([{"connection_id": cid, "inbound": true}])),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::CONFLICT, "conflict")
    );
    let (status, body) = t
        .call(
            Method::PUT,
            &put(&b.id),
            Some(json!([{"connection_id": cid, "inbound": false}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "outbound sharing is fine: {body}");

    let missing = uuid::Uuid::new_v4();
    let (status, body) = t.call(Method::PUT, &put(&b.id), Some(json!([{"connection_id": missing, "inbound": false}, {"connection_id": cid, "inbound": false}, {"connection_id": cid, "inbound": false}]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["[0].connection_id", "[2].connection_id"]);
    let (_, kept) = t
        .call(
            Method::GET,
            &format!("/api/v1/agents/{}/channels", b.id),
            None,
        )
        .await;
    assert_eq!(
        kept,
        json!([{"connection_id": cid, "inbound": false}]),
        "a refused change changes nothing"
    );

    // Deleting the connection removes it from every agent.
    let (status, _) = t
        .call(Method::DELETE, &format!("/api/v1/connections/{cid}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, left) = t
        .call(
            Method::GET,
            &format!("/api/v1/agents/{}/channels", a.id),
            None,
        )
        .await;
    assert_eq!(left, json!([]));
    let (status, _) = t
        .call(
            Method::GET,
            &format!("/api/v1/agents/{}/channels", uuid::Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The platforms a connection can be made for come with the schema their forms are drawn
/// from, and that schema is what creating a connection checks.
#[tokio::test]
async fn platforms_are_listed_with_the_schema_connections_are_checked_against() {
    let t = TestServer::start().await;
    let r = t.http.get(t.url("/api/v1/platforms")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = t.call(Method::GET, "/api/v1/platforms", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let platforms = body["platforms"].as_array().unwrap();
    let names: Vec<&str> = platforms
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["telegram", "discord", "slack", "whatsapp", "teams", "webhook"]
    );
    let telegram = &platforms[0];
    assert_eq!(telegram["rate_limits"]["per_second"], 30.0);
    let fields = telegram["fields"].as_array().unwrap();
    let token = fields.iter().find(|f| f["name"] == "bot_token").unwrap();
    assert_eq!(token["required"], true);
    assert_eq!(token["secret"], true);
    let mode = fields.iter().find(|f| f["name"] == "mode").unwrap();
    assert_eq!(mode["type"], "one_of");
    assert_eq!(mode["values"], json!(["webhook", "polling"]));
    assert_eq!(mode["default"], "webhook");

    // Every required field the schema names is required by creation, by that path.
    let (status, body) = t
        .call(
            Method::POST,
            "/api/v1/connections",
            Some(json!({"name": "wa", "platform": "whatsapp"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let whatsapp = platforms.iter().find(|p| p["name"] == "whatsapp").unwrap();
    for f in whatsapp["fields"].as_array().unwrap() {
        let path = format!("config.{}", f["name"].as_str().unwrap());
        let named = body.to_string().contains(&format!("\"{path}\""));
        assert_eq!(named, f["required"] == true, "{path}: {body}");
    }
}
