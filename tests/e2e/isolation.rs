//! Tenant and credential isolation: what a caller writes never reaches what is not theirs.

use std::collections::HashMap;
use std::time::Duration;

use parley::api::{routes, Auth};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::channels::telegram::{sent_texts, telegram, TOKEN};
use crate::channels::{act, connection};
use crate::support::*;
use parley::server::ServeConfig;

async fn put_session(t: &TestServer, a: &Agent, sid: &str, body: Value) -> (StatusCode, Value) {
    t.call_as(
        Method::PUT,
        &format!("/chatbot/{}/session/{sid}", a.id),
        &a.token,
        Some(body),
    )
    .await
}

async fn create_session(t: &TestServer, a: &Agent, body: Value) -> (StatusCode, Value) {
    t.call_as(
        Method::POST,
        &format!("/chatbot/{}/session", a.id),
        &a.token,
        Some(body),
    )
    .await
}

/// A Chat API customer who writes another tenant's connection and a chat id into their
/// session's fields cannot make an operator's reply go out through that connection.
#[tokio::test]
async fn customer_fields_never_route_operator_messages() {
    let t = TestServer::start_with(|c| {
        c.super_key = Some(SUPER_KEY.into());
        c.node.public_url = Some("https://parley.example".into());
    })
    .await;
    let fake = telegram().await;
    // Tenant A's running Telegram bot.
    let a_conn = connection(
        &t,
        "telegram",
        json!({"bot_token": TOKEN, "api_base": fake.base}),
        json!({}),
    )
    .await;
    assert_eq!(act(&t, &a_conn, "start").await["status"], "Connected");
    // Tenant B's chat customer names A's connection and a chat of their choosing.
    let b_key = t.tenant("B").await;
    let b = t.agent_as(&b_key, &basic_agent("")).await;
    const CHAT: i64 = 666;
    let routing = json!({"kwargs": {"connection_id": a_conn, "chat_id": CHAT.to_string(), "platform": "telegram"}});
    let (status, body) = create_session(&t, &b, routing.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_error", "{body}");
    let sid = t
        .session(
            &b,
            json!({"kwargs": {"connection_id": a_conn, "chat_id": CHAT.to_string()}}),
        )
        .await;
    let (status, body) = put_session(
        &t,
        &b,
        &sid,
        json!({"kwargs": {"connection_id": a_conn, "chat_id": CHAT.to_string()}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // B's operator answers; nothing goes out on A's bot.
    let (status, body) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/mode"),
            &b_key,
            Some(json!({"mode": "OPERATOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/messages"),
            &b_key,
            Some(json!({"text": "Your code is 1234"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sent_texts(&fake, CHAT).is_empty(), "{:?}", fake.requests());
}

/// The Chat API may ask for a person, but not take a conversation back from operators.
#[tokio::test]
async fn chat_api_callers_cannot_take_a_conversation_from_operators() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    for mode in ["COPILOT"] {
        let (status, body) = put_session(&t, &a, &sid, json!({"mode": mode})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: {body}");
    }
    let (status, body) = put_session(&t, &a, &sid, json!({"mode": "OPERATOR"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mode"], "OPERATOR");
    for mode in ["REGULAR", "COPILOT"] {
        let (status, body) = put_session(&t, &a, &sid, json!({"mode": mode})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{mode}: {body}");
        assert_eq!(error_code(&body), "forbidden");
    }
    assert_eq!(t.get_session(&a, &sid).await["mode"], "OPERATOR");
}

/// What a Chat API caller stores on a session is bounded, and the keys the server writes
/// are its own.
#[tokio::test]
async fn session_fields_are_bounded_and_server_keys_reserved() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let big = "x".repeat(20 * 1024);
    for body in [
        json!({"kwargs": {"blob": big}}),
        json!({"user_info": {"blob": big}}),
        json!({"name": "n".repeat(300)}),
        json!({"language": "l".repeat(300)}),
        json!({"start_phrase": "s".repeat(5000)}),
        json!({"name": "a\u{0}b"}),
        json!({"kwargs": {"communication_id": "c1"}}),
        json!({"kwargs": {"campaign_id": "c1"}}),
    ] {
        let (status, resp) = create_session(&t, &a, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {resp}");
    }
    let sid = t.session(&a, json!({"kwargs": {"plan": "gold"}})).await;
    // Each request small, together too big: refused, and nothing of it stored.
    let chunk = "y".repeat(9 * 1024);
    let (status, body) = put_session(&t, &a, &sid, json!({"kwargs": {"one": chunk}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put_session(&t, &a, &sid, json!({"kwargs": {"two": chunk}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let s = t.get_session(&a, &sid).await;
    assert_eq!(s["kwargs"]["plan"], "gold");
    assert!(s["kwargs"].get("two").is_none(), "{s}");
    let (status, body) = put_session(&t, &a, &sid, json!({"kwargs": {"platform": "slack"}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

fn flow(agent: &str, channel: &str, connection: Option<&str>) -> String {
    let conn = connection.map_or(String::new(), |c| format!("\n    connection_id: {c}"));
    format!(
        r#"
nodes:
  - {{id: created, type: participant_created, next: talk}}
  - id: talk
    type: start_communication
    name: HELLO
    channel: {channel}
    agent_id: {agent}{conn}
    duration: "08:00"
    start_phrase: "Hello"
"#
    )
}

async fn put_flow_as(t: &TestServer, key: &str, campaign: &str, yaml: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/campaigns/{campaign}/flows/main");
    t.call_yaml(Method::PUT, &path, key, yaml).await
}

/// A campaign flow names agents and connections of its own tenant only: another
/// tenant's ids are refused as if they did not exist, so nothing is opened, billed or sent
/// on the other tenant's behalf.
#[tokio::test]
async fn flows_cannot_name_another_tenants_agents_or_connections() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let a_conn = connection(
        &t,
        "webhook",
        json!({"url": "https://hooks.example/a"}),
        json!({}),
    )
    .await;
    let b_key = t.tenant("B").await;
    let b = t.agent_as(&b_key, &basic_agent("")).await;
    let (status, c) = t
        .call_as(
            Method::POST,
            "/api/v1/campaigns",
            &b_key,
            Some(json!({"name": "Outreach"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let campaign = c["id"].as_str().unwrap();

    let (status, body) = put_flow_as(&t, &b_key, campaign, &flow(&a.id, "chat", None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("nodes[1].agent_id"),
        "path-addressed: {body}"
    );
    let (status, body) =
        put_flow_as(&t, &b_key, campaign, &flow(&b.id, "webhook", Some(&a_conn))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("nodes[1].connection_id"),
        "{body}"
    );
    // The tenant's own agent goes through.
    let (status, body) = put_flow_as(&t, &b_key, campaign, &flow(&b.id, "chat", None)).await;
    assert!(status.is_success(), "{body}");
    // A's inbox and usage show nothing of B's campaign.
    let (_, usage) = t.call(Method::GET, "/api/v1/billing/usage", None).await;
    assert_eq!(usage["sessions"], 0, "{usage}");
}

/// Every route, called with another tenant's admin key, signed-in admin and agent token,
/// and with this tenant's ids in every path parameter: nothing is read, changed or opened.
/// Routes without ids answer only the caller's own data.
#[tokio::test]
async fn another_tenants_credentials_reach_nothing_on_any_route() {
    let t = TestServer::with_super_key().await;
    // Tenant A (the default), with one of everything.
    let a = t.agent(&basic_agent("")).await;
    let a_sid = t.session(&a, json!({"user_id": "cust-a"})).await;
    const SECRET: &str = "my pin is 4242";
    t.say(&a, &a_sid, SECRET).await;
    let a_conn = connection(
        &t,
        "webhook",
        json!({"url": "https://hooks.example/a"}),
        json!({}),
    )
    .await;
    let (status, c) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"name": "A's campaign", "fields": [
                {"title": "Name", "name": "name", "type": "string", "level": "customer_profile", "import": true}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let campaign = c["id"].as_str().unwrap().to_string();
    let (status, body) = put_flow_as(&t, ADMIN_KEY, &campaign, &flow(&a.id, "chat", None)).await;
    assert!(status.is_success(), "{body}");
    let (status, r) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{campaign}/participants"),
            Some(json!([{"attributes": {"external_id": "cust-a", "name": "Ann"}}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let participant = r["results"][0]["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = r["results"][0]["customer_id"].as_str().unwrap().to_string();
    let (a_user, _) = t.staff("operator", "olga@a.example", Value::Null).await;
    let a_ids = [
        a.id.clone(),
        a_sid.clone(),
        a_conn.clone(),
        campaign.clone(),
        participant.clone(),
        customer.clone(),
        a_user.clone(),
    ];
    let a_log_before = t.log(&a, &a_sid).await.len();

    // Tenant B: its admin key, a signed-in admin, an agent and its token.
    let b_key = t.tenant("B").await;
    let b = t.agent_as(&b_key, &basic_agent("")).await;
    let (_, b_admin) = t
        .staff_with(&b_key, "admin", "boss@b.example", Value::Null)
        .await;

    let params: HashMap<&str, String> = HashMap::from([
        ("{agent_id}", a.id.clone()),
        ("{session_id}", a_sid.clone()),
        ("{connection_id}", a_conn.clone()),
        ("{campaign_id}", campaign.clone()),
        ("{participant_id}", participant.clone()),
        ("{customer_id}", customer.clone()),
        ("{user_id}", a_user.clone()),
        ("{flow}", "main".to_string()),
        ("{actor}", format!("session:{a_sid}")),
        ("{log_id}", "2".to_string()),
        ("{upload_id}", uuid::Uuid::now_v7().to_string()),
        ("{attachment_id}", uuid::Uuid::now_v7().to_string()),
    ]);
    let mut walked = 0;
    for (doc, _) in routes() {
        let skip = matches!(doc.auth, Auth::None | Auth::Super)
            // Sockets are walked in websocket.rs; these end or replace B's own credentials.
            || doc.path.contains("/ws/")
            || doc.path.ends_with("/ws/conversations")
            || ["/api/v1/auth/logout", "/api/v1/auth/password", "/api/v1/tenant/key"]
                .contains(&doc.path);
        if skip {
            continue;
        }
        let mut path: String = doc
            .path
            .split('/')
            .map(|seg| params.get(seg).cloned().unwrap_or_else(|| seg.to_string()))
            .collect::<Vec<_>>()
            .join("/");
        if doc.path == "/api/v1/public/conversations" {
            path.push_str("?ext_id=cust-a");
        }
        let has_ids = doc.path.contains('{');
        let method = Method::from_bytes(doc.method.to_uppercase().as_bytes()).unwrap();
        let body = if doc.path.contains("/logs/") {
            json!({"feedback": "BAD", "ext_id": "cust-a"})
        } else {
            json!({})
        };
        for token in [b_key.as_str(), b_admin.as_str(), b.token.as_str()] {
            let (status, resp) = t
                .call_as(method.clone(), &path, token, Some(body.clone()))
                .await;
            let what = format!("{} {path}", doc.method);
            let text = resp.to_string();
            assert!(
                !text.contains(SECRET),
                "{what}: A's conversation leaked: {text}"
            );
            if has_ids {
                assert!(
                    !status.is_success(),
                    "{what} with B's credentials reached A's resource: {status} {text}"
                );
            } else if status.is_success() {
                for id in &a_ids {
                    assert!(!text.contains(id.as_str()), "{what}: A's id {id} in {text}");
                }
            }
            walked += 1;
        }
    }
    assert!(walked > 150, "walked {walked} calls");

    // A's things are all still there, unchanged.
    assert_eq!(t.log(&a, &a_sid).await.len(), a_log_before);
    let log = t.log(&a, &a_sid).await;
    assert!(log.iter().all(|m| m["feedback"] != "BAD"), "{log:?}");
    let s = t.get_session(&a, &a_sid).await;
    assert_eq!(
        (s["mode"].as_str(), s["status"].as_str()),
        (Some("REGULAR"), Some("active")),
        "{s}"
    );
    for path in [
        format!("/api/v1/agents/{}", a.id),
        format!("/api/v1/connections/{a_conn}"),
        format!("/api/v1/campaigns/{campaign}"),
        format!("/api/v1/campaigns/{campaign}/flows/main"),
        format!("/api/v1/users/{a_user}"),
        format!("/api/v1/customers/{customer}"),
    ] {
        let (status, body) = t.call(Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, agent) = t
        .call(Method::GET, &format!("/api/v1/agents/{}", a.id), None)
        .await;
    assert_eq!(agent["status"], "Running", "{agent}");
    let (_, usage) = t.call(Method::GET, "/api/v1/billing/usage", None).await;
    assert_eq!(usage["sessions"], 1, "{usage}");
}

fn rates(per_credential: (u32, u32), per_address: (u32, u32)) -> impl FnOnce(&mut ServeConfig) {
    use parley::api::open_limits::OpenRate;
    move |c: &mut ServeConfig| {
        c.limits.open_per_credential = OpenRate {
            per_second: per_credential.0,
            burst: per_credential.1,
        };
        c.limits.open_per_address = OpenRate {
            per_second: per_address.0,
            burst: per_address.1,
        };
    }
}

/// Opens until refused: how many opened, and the refusal. A bucket of `burst` that refills
/// one a second lets `burst` through at once, plus one per second the attempts took.
async fn open_until_limited<F, Fut>(mut open: F) -> (u64, StatusCode, Option<u64>, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Response>,
{
    let started = std::time::Instant::now();
    for opened in 0..50 {
        let r = open().await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let wait = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let (_, body) = json_of(r).await;
            assert_eq!(error_code(&body), "rate_limited", "{body}");
            return (
                opened,
                StatusCode::TOO_MANY_REQUESTS,
                wait,
                started.elapsed(),
            );
        }
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    panic!("50 openings were never limited");
}

/// Opening sessions and sockets is rate-limited per credential and per client address,
/// answered 429 with Retry-After.
#[tokio::test]
async fn opening_sessions_and_sockets_is_rate_limited() {
    let t = TestServer::start_with(rates((1, 3), (0, 0))).await;
    let a = t.agent(&basic_agent("")).await;
    let b = t.agent(&basic_agent("")).await;
    let open = |agent: &Agent| {
        t.http
            .post(t.url(&format!("/chatbot/{}/session", agent.id)))
            .bearer_auth(&agent.token)
            .json(&json!({}))
            .send()
    };
    let (opened, status, wait, took) =
        open_until_limited(|| async { open(&a).await.unwrap() }).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        (3..=3 + took.as_secs() + 1).contains(&opened),
        "{opened} opened in {took:?}"
    );
    assert!(wait.is_some_and(|w| (1..=2).contains(&w)), "{wait:?}");
    // Another agent has a bucket of its own; its sockets draw on it too.
    let sid = t.session(&b, json!({})).await;
    let started = std::time::Instant::now();
    let mut sockets = 0;
    let refused = loop {
        match ws_with_token(&t, &format!("/chatbot/{}/ws/{sid}", b.id), &b.token).await {
            Ok(_) => sockets += 1,
            Err(e) => break e,
        }
        assert!(sockets < 50, "sockets were never limited");
    };
    assert!(refused.to_string().contains("429"), "{refused}");
    assert!(
        (2..=2 + started.elapsed().as_secs() + 1).contains(&sockets),
        "{sockets} sockets"
    );

    // Per address: every agent from one address shares the bucket.
    let t = TestServer::start_with(rates((0, 0), (1, 2))).await;
    let a = t.agent(&basic_agent("")).await;
    let b = t.agent(&basic_agent("")).await;
    let mut turn = 0;
    let (opened, status, _, took) = open_until_limited(|| {
        turn += 1;
        let agent = if turn % 2 == 0 { &a } else { &b };
        let req = t
            .http
            .post(t.url(&format!("/chatbot/{}/session", agent.id)))
            .bearer_auth(&agent.token)
            .json(&json!({}))
            .send();
        async move { req.await.unwrap() }
    })
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        (2..=2 + took.as_secs() + 1).contains(&opened),
        "{opened} opened in {took:?}"
    );
}

async fn sign_in(t: &TestServer, body: Value) -> (StatusCode, Value) {
    json_of(
        t.http
            .post(t.url("/api/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// An e-mail address is unique within a tenant only: creating a user never tells one
/// tenant which addresses another tenant's users have, and each signs in to their own.
#[tokio::test]
async fn user_addresses_are_unique_per_tenant_only() {
    let t = TestServer::with_super_key().await;
    let b_key = t.tenant("B").await;
    const SAM: &str = "sam@shared.example";
    let (_, a_token) = t.staff("operator", SAM, Value::Null).await;
    // Created although tenant A has the address; A's user is untouched.
    let (_, b_token) = t.staff_with(&b_key, "admin", SAM, Value::Null).await;
    let (status, again) = t
        .call_as(
            Method::POST,
            "/api/v1/users",
            &b_key,
            Some(json!({"name": "Sam 2", "email": SAM, "role": "user", "password": "temporary-pass-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "in the same tenant: {again}");
    let (_, a_me) = t.call_as(Method::GET, "/api/v1/me", &a_token, None).await;
    let (_, b_me) = t.call_as(Method::GET, "/api/v1/me", &b_token, None).await;
    let (a_tenant, b_tenant) = (a_me["tenant_id"].clone(), b_me["tenant_id"].clone());
    assert!(
        a_tenant.is_string() && b_tenant.is_string(),
        "{a_me} {b_me}"
    );
    assert_ne!(a_tenant, b_tenant);
    // B's user changes their password: each password signs in to its own tenant.
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/auth/password",
            &b_token,
            Some(
                json!({"current_password": "a-better-password", "new_password": "bs-own-password"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (password, tenant) in [
        ("a-better-password", &a_tenant),
        ("bs-own-password", &b_tenant),
    ] {
        let (status, s) = sign_in(&t, json!({"email": SAM, "password": password})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        let token = s["token"].as_str().unwrap();
        let (_, me) = t.call_as(Method::GET, "/api/v1/me", token, None).await;
        assert_eq!(&me["tenant_id"], tenant, "{me}");
    }
    // The same password in both: the tenant chooses.
    let (status, s) = sign_in(
        &t,
        json!({"email": SAM, "password": "a-better-password", "tenant_id": b_tenant}),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "B's password differs: {s}"
    );
}

/// A flow's http_action may not point at internal addresses (cloud metadata, private
/// ranges) unless the operator allows them.
#[tokio::test]
async fn flow_http_actions_obey_the_egress_policy() {
    let t = TestServer::start().await;
    let (status, c) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"name": "Scoring"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let campaign = c["id"].as_str().unwrap();
    let flow = |url: &str| {
        format!(
            "nodes:\n  - {{id: created, type: participant_created, next: score}}\n  - id: score\n    type: http_action\n    url: {url}\n"
        )
    };
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/score",
        "http://[::ffff:10.0.0.1]/x",
    ] {
        let (status, body) = put_flow_as(&t, ADMIN_KEY, campaign, &flow(url)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(body.to_string().contains("nodes[1].url"), "{url}: {body}");
    }
    let (status, body) =
        put_flow_as(&t, ADMIN_KEY, campaign, &flow("https://crm.example/score")).await;
    assert!(status.is_success(), "{body}");
}
