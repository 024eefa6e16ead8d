//! The web widget's server side: settings, the origin and CORS rules, visitor tokens and
//! what they reach, identity verification, attachments by signed link, the socket, voice,
//! rate limits and the embedded files.

use std::collections::HashMap;

use axum::routing::post;
use futures::{SinkExt, StreamExt};
use parley::api::{routes, Auth};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const PAGE: &str = "https://shop.example";
const ELSEWHERE: &str = "https://evil.example";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89\0\0\0\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\0\x05\0\x01\xff\x89\x99=\x1d\0\0\0\0IEND\xaeB`\x82";

/// Enables the agent's widget for [`PAGE`]; answers the widget id.
async fn enable(t: &TestServer, key: &str, agent: &Agent, extra: Value) -> String {
    let mut body = json!({"enabled": true, "allowed_origins": [PAGE], "title": "Ask Alex"});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (status, w) = t
        .call_as(
            Method::PUT,
            &format!("/api/v1/agents/{}/widget", agent.id),
            key,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    w["widget_id"].as_str().unwrap().to_string()
}

/// A request of the widget on a page of `origin`.
fn page(t: &TestServer, method: Method, path: &str, origin: &str) -> reqwest::RequestBuilder {
    t.http.request(method, t.url(path)).header("origin", origin)
}

async fn visitor(t: &TestServer, w: &str, body: Value) -> Value {
    let (status, v) = json_of(
        page(t, Method::POST, &format!("/widget/v1/{w}/visitors"), PAGE)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn open_conversation(t: &TestServer, w: &str, token: &str) -> Value {
    let (status, c) = json_of(
        page(
            t,
            Method::POST,
            &format!("/widget/v1/{w}/conversations"),
            PAGE,
        )
        .bearer_auth(token)
        .json(&json!({"name": "Vera"}))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    c
}

async fn send(t: &TestServer, w: &str, token: &str, sid: &str, text: &str) -> (StatusCode, Value) {
    json_of(
        page(
            t,
            Method::POST,
            &format!("/widget/v1/{w}/conversations/{sid}/messages"),
            PAGE,
        )
        .bearer_auth(token)
        .json(&json!({"message": text}))
        .send()
        .await
        .unwrap(),
    )
    .await
}

async fn history(
    t: &TestServer,
    w: &str,
    token: &str,
    sid: &str,
    after: i64,
) -> (StatusCode, Value) {
    json_of(
        page(
            t,
            Method::GET,
            &format!("/widget/v1/{w}/conversations/{sid}?after={after}"),
            PAGE,
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap(),
    )
    .await
}

#[tokio::test]
async fn settings_are_admin_only_checked_and_keep_secrets_write_only() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let path = format!("/api/v1/agents/{}/widget", a.id);
    let (status, fresh) = t.call(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_eq!(fresh["widget_id"], Value::Null);
    assert_eq!(fresh["enabled"], false);

    let (status, w) = t
        .call(
            Method::PUT,
            &path,
            Some(json!({
                "enabled": true,
                "allowed_origins": ["https://Shop.Example:443/"],
                "colors": {"primary": "#0F766E"},
                "position": "left",
                "locale": "de",
                "identity_verification": {"enabled": true, "secret": "host-page-secret-0123"},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{w}");
    let id = w["widget_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("wgt_"), "{w}");
    assert_eq!(w["allowed_origins"], json!([PAGE]));
    assert_eq!(w["colors"]["primary"], "#0f766e");
    assert_eq!(
        w["identity_verification"],
        json!({"enabled": true, "secret_set": true})
    );
    assert!(!w.to_string().contains("host-page-secret-0123"), "{w}");
    let (_, read) = t.call(Method::GET, &path, None).await;
    assert!(
        !read.to_string().contains("host-page-secret-0123"),
        "{read}"
    );
    assert_eq!(read["widget_id"], id.as_str());

    // A second save keeps the public id and, unnamed, the secret.
    let (status, again) = t
        .call(
            Method::PUT,
            &path,
            Some(json!({"enabled": true, "allowed_origins": [PAGE],
                        "identity_verification": {"enabled": true}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["widget_id"], id.as_str());
    assert_eq!(again["identity_verification"]["secret_set"], true);
    assert_eq!(again["locale"], "en", "a PUT replaces the settings");

    for (body, field) in [
        (
            json!({"allowed_origins": ["https://a.example/path"]}),
            "allowed_origins",
        ),
        (json!({"allowed_origins": ["*"]}), "allowed_origins"),
        (json!({"locale": "tlh"}), "locale"),
        (json!({"colors": {"text": "black"}}), "colors.text"),
        (
            json!({"attachments": {"max_bytes": 100_000_000}}),
            "attachments.max_bytes",
        ),
        (
            json!({"identity_verification": {"enabled": true, "secret": null}}),
            "identity_verification.secret",
        ),
        (
            json!({"voice": {"enabled": true, "stt_base_url": "http://10.1.2.3/v1"}}),
            "voice.stt_base_url",
        ),
        (json!({"unknown_field": 1}), "invalid widget settings"),
    ] {
        let (status, e) = t.call(Method::PUT, &path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{body}: {e}"
        );
    }

    // Another tenant's admin reaches neither the settings nor the widget's agent.
    let b_key = t.tenant("B").await;
    for method in [Method::GET, Method::PUT] {
        let (status, e) = t
            .call_as(
                method.clone(),
                &path,
                &b_key,
                Some(json!({"enabled": true})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {e}");
    }
    // Non-admin roles may not change it.
    let (_, viewer) = t.staff("viewer", "vic@example.com", Value::Null).await;
    let (status, _) = t
        .call_as(Method::PUT, &path, &viewer, Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, still) = t.call(Method::GET, &path, None).await;
    assert_eq!(still["enabled"], true);
}

#[tokio::test]
async fn only_allowed_origins_reach_the_widget_and_get_cors() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(&t, ADMIN_KEY, &a, json!({})).await;
    let config = format!("/widget/v1/{w}/config");

    let r = page(&t, Method::GET, &config, PAGE).send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE);
    assert_eq!(r.headers()["vary"], "Origin");
    let (status, c) = json_of(r).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["title"], "Ask Alex");
    assert_eq!(c["agent_name"], "Test Agent");
    assert_eq!(c["greeting"], "Hi there!");
    assert_eq!(c["voice"]["enabled"], false);
    assert!(c.get("allowed_origins").is_none(), "{c}");

    // Another origin: 403 with a body the widget can read and show.
    let r = page(&t, Method::GET, &config, ELSEWHERE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], ELSEWHERE);
    let (status, e) = json_of(r).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&e), "origin_not_allowed");
    // No origin at all (not a browser page): refused too.
    let (status, e) = json_of(t.http.get(t.url(&config)).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::FORBIDDEN, "origin_not_allowed")
    );
    // A same-origin fetch (no Origin) counts as parley's own origin, not allowed here.
    let r = t
        .http
        .get(t.url(&config))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Allowed once parley's own origin is: what its demo page needs.
    let own = t.base.clone();
    enable(&t, ADMIN_KEY, &a, json!({"allowed_origins": [PAGE, own]})).await;
    let r = t
        .http
        .get(t.url(&config))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = json_of(t.http.get(t.url(&config)).send().await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "no Origin and not same-origin"
    );

    // Preflights: answered for the page, refused (no CORS headers) for others.
    let pre = |origin: &str| {
        page(
            &t,
            Method::OPTIONS,
            &format!("/widget/v1/{w}/visitors"),
            origin,
        )
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
    };
    let ok = pre(PAGE).await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(ok.headers()["access-control-allow-origin"], PAGE);
    assert!(ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    let refused = pre(ELSEWHERE).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Unknown and disabled widgets.
    let (status, _) = json_of(
        page(
            &t,
            Method::GET,
            "/widget/v1/wgt_aaaaaaaaaaaaaaaaaaaa/config",
            PAGE,
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t
        .call(
            Method::PUT,
            &format!("/api/v1/agents/{}/widget", a.id),
            Some(json!({"enabled": false, "allowed_origins": [PAGE]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = json_of(page(&t, Method::GET, &config, PAGE).send().await.unwrap()).await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::FORBIDDEN, "widget_disabled")
    );
}

#[tokio::test]
async fn a_visitor_chats_resumes_and_reaches_only_its_own_conversations() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(&t, ADMIN_KEY, &a, json!({})).await;

    let v = visitor(&t, &w, json!({})).await;
    assert_eq!(v["conversation"], Value::Null);
    assert_eq!(v["visitor"]["verified"], false);
    let token = v["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("wvt_"));
    let c = open_conversation(&t, &w, &token).await;
    let sid = c["session_id"].as_str().unwrap().to_string();
    assert_eq!(c["status"], "active");
    assert_eq!(c["messages"][0]["role"], "AI");
    assert_eq!(c["messages"][0]["text"], "Hi there!");

    let (status, r) = send(&t, &w, &token, &sid, "What are your opening hours?").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["response"].as_str().unwrap().contains("9 to 17"), "{r}");
    let (status, h) = history(&t, &w, &token, &sid, 1).await;
    assert_eq!(status, StatusCode::OK, "{h}");
    let roles: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["HUMAN", "AI"]);

    // The session is the agent's, with the visitor as its customer: the inbox sees it.
    let (_, conv) = t
        .call(Method::GET, &format!("/api/v1/conversations/{sid}"), None)
        .await;
    assert_eq!(conv["name"], "Vera", "{conv}");

    // A reload: the stored token resumes the same visitor and conversation.
    let again = visitor(&t, &w, json!({"token": token})).await;
    assert_eq!(again["visitor"]["id"], v["visitor"]["id"]);
    assert_eq!(again["conversation"]["session_id"], sid.as_str());
    assert_eq!(
        again["conversation"]["messages"].as_array().unwrap().len(),
        3
    );

    // Another visitor of the same widget sees nothing of the first one's.
    let other = visitor(&t, &w, json!({})).await;
    assert_eq!(other["conversation"], Value::Null);
    let other_token = other["token"].as_str().unwrap();
    let (status, _) = history(&t, &w, other_token, &sid, 0).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&t, &w, other_token, &sid, "hijack").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A forged or foreign token is no visitor at all.
    let (status, _) = history(&t, &w, "wvt_forged.sig", &sid, 0).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let b = t.agent(&basic_agent("")).await;
    let w2 = enable(&t, ADMIN_KEY, &b, json!({})).await;
    let (status, _) = history(&t, &w2, &token, &sid, 0).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a token of another widget"
    );
    // A session of the agent opened over the Chat API is not the visitor's either.
    let api_sid = t.session(&a, json!({"user_id": "someone"})).await;
    let (status, _) = history(&t, &w, &token, &api_sid, 0).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing changed in the first conversation.
    assert_eq!(t.log(&a, &sid).await.len(), 3);

    // A closed conversation refuses messages; the visitor opens a new one.
    t.http
        .delete(t.url(&format!("/chatbot/{}/session/{sid}", a.id)))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    let (status, e) = send(&t, &w, &token, &sid, "still there?").await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::CONFLICT, "session_closed")
    );
    let resumed = visitor(&t, &w, json!({"token": token})).await;
    assert_eq!(resumed["conversation"]["status"], "closed");
    let fresh = open_conversation(&t, &w, &token).await;
    assert_ne!(fresh["session_id"], sid.as_str());
    let latest = visitor(&t, &w, json!({"token": token})).await;
    assert_eq!(latest["conversation"]["session_id"], fresh["session_id"]);
}

fn user_hash(secret: &str, user: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(user.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

#[tokio::test]
async fn a_verified_user_gets_their_history_on_any_device() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let secret = "the-host-page-secret";
    let w = enable(
        &t,
        ADMIN_KEY,
        &a,
        json!({"identity_verification": {"enabled": true, "secret": secret}}),
    )
    .await;
    let (status, e) = json_of(
        page(&t, Method::POST, &format!("/widget/v1/{w}/visitors"), PAGE)
            .json(&json!({"user": {"id": "user-42", "hash": user_hash("wrong-secret-value", "user-42")}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::UNAUTHORIZED, "identity_invalid")
    );

    let laptop = visitor(
        &t,
        &w,
        json!({"user": {"id": "user-42", "hash": user_hash(secret, "user-42")}}),
    )
    .await;
    assert_eq!(
        laptop["visitor"],
        json!({"id": "user-42", "verified": true})
    );
    let token = laptop["token"].as_str().unwrap();
    let sid = open_conversation(&t, &w, token).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = send(&t, &w, token, &sid, "What are your opening hours?").await;
    assert_eq!(status, StatusCode::OK);

    // The phone has no stored token, only the page's user hash.
    let phone = visitor(
        &t,
        &w,
        json!({"user": {"id": "user-42", "hash": user_hash(secret, "user-42")}}),
    )
    .await;
    assert_eq!(phone["conversation"]["session_id"], sid.as_str());
    assert_eq!(
        phone["conversation"]["messages"].as_array().unwrap().len(),
        3
    );
    // Claiming the id without the hash gets an anonymous visitor, not the history.
    let (status, e) = json_of(
        page(&t, Method::POST, &format!("/widget/v1/{w}/visitors"), PAGE)
            .json(&json!({"user": {"id": "user-42"}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::UNAUTHORIZED, "identity_invalid")
    );
}

#[tokio::test]
async fn a_visitor_token_opens_no_other_route() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(&t, ADMIN_KEY, &a, json!({})).await;
    let v = visitor(&t, &w, json!({})).await;
    let token = v["token"].as_str().unwrap().to_string();
    let sid = open_conversation(&t, &w, &token).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let params: HashMap<&str, String> = HashMap::from([
        ("{agent_id}", a.id.clone()),
        ("{session_id}", sid.clone()),
        ("{tenant_id}", uuid::Uuid::now_v7().to_string()),
        (
            "{user_id}",
            v["visitor"]["id"].as_str().unwrap().to_string(),
        ),
        ("{actor}", format!("session:{sid}")),
        ("{log_id}", "1".to_string()),
    ]);
    let mut walked = 0;
    for (doc, _) in routes() {
        if matches!(doc.auth, Auth::None | Auth::Widget | Auth::Visitor) {
            continue;
        }
        let path: String = doc
            .path
            .split('/')
            .map(|seg| {
                params
                    .get(seg)
                    .cloned()
                    .unwrap_or_else(|| match seg.starts_with('{') {
                        true => uuid::Uuid::now_v7().to_string(),
                        false => seg.to_string(),
                    })
            })
            .collect::<Vec<_>>()
            .join("/");
        if doc.path.contains("/ws") {
            let socket = ws_with_token(&t, &path, &token).await;
            assert!(socket.is_err(), "{path}: a visitor token opened the socket");
            walked += 1;
            continue;
        }
        let method = Method::from_bytes(doc.method.to_uppercase().as_bytes()).unwrap();
        // Bodies that parse, so the credential is what is refused.
        let body = if doc.path.contains("/logs/") {
            json!({"feedback": "BAD", "ext_id": params["{user_id}"], "agent_id": a.id})
        } else {
            json!({})
        };
        let r = t
            .http
            .request(
                method,
                t.url(&format!("{path}?ext_id={}", params["{user_id}"])),
            )
            .bearer_auth(&token)
            .header("origin", PAGE)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::FORBIDDEN,
                StatusCode::NOT_FOUND
            ]
            .contains(&status),
            "{} {path} with a visitor token: {status}",
            doc.method
        );
        walked += 1;
    }
    assert!(walked > 80, "walked {walked} routes");
    // The session is as the visitor left it.
    assert_eq!(t.log(&a, &sid).await.len(), 1);
}

#[tokio::test]
async fn images_upload_within_limits_and_load_by_signed_link() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(
        &t,
        ADMIN_KEY,
        &a,
        json!({"attachments": {"enabled": true, "max_bytes": 1000}}),
    )
    .await;
    let token = visitor(&t, &w, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = open_conversation(&t, &w, &token).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let upload = |name: &str, ct: &str, bytes: Vec<u8>| {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name.to_string())
            .mime_str(ct)
            .unwrap();
        page(
            &t,
            Method::POST,
            &format!("/widget/v1/{w}/conversations/{sid}/messages"),
            PAGE,
        )
        .bearer_auth(&token)
        .multipart(
            reqwest::multipart::Form::new()
                .text("message", "see the picture")
                .part("attachments", part),
        )
        .send()
    };
    let (status, e) = json_of(upload("big.png", "image/png", vec![0; 2000]).await.unwrap()).await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (status, e) = json_of(
        upload(
            "fake.png",
            "image/png",
            b"<script>alert(1)</script>".to_vec(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{e}");
    let (status, r) = json_of(upload("dot.png", "image/png", PNG.to_vec()).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{r}");

    let (_, h) = history(&t, &w, &token, &sid, 0).await;
    let human = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "HUMAN")
        .unwrap()
        .clone();
    let att = &human["attachments"][0];
    assert_eq!(att["filename"], "dot.png");
    let url = att["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("/widget/v1/{w}/attachments/")),
        "{url}"
    );
    // An <img> sends no token and no Origin: the link alone is enough.
    let r = t.http.get(t.url(url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);
    // A changed signature, expiry or widget is not a link.
    for bad in [
        url.replace("sig=", "sig=00"),
        url.replace("exp=", "exp=1"),
        url.replace(&w, "wgt_bbbbbbbbbbbbbbbbbbbb"),
    ] {
        let r = t.http.get(t.url(&bad)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{bad}");
    }

    // Attachments off: refused.
    enable(
        &t,
        ADMIN_KEY,
        &a,
        json!({"attachments": {"enabled": false, "max_bytes": 1000}}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (status, e) = json_of(upload("dot.png", "image/png", PNG.to_vec()).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a frame within 10 s")
            .expect("the socket stays open")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

async fn widget_socket(
    t: &TestServer,
    w: &str,
    sid: &str,
    token: &str,
    origin: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = t
        .url(&format!("/widget/v1/{w}/conversations/{sid}/ws"))
        .replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    h.insert("origin", origin.parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn the_socket_streams_answers_and_brings_the_operator() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(&t, ADMIN_KEY, &a, json!({})).await;
    let token = visitor(&t, &w, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = open_conversation(&t, &w, &token).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        widget_socket(&t, &w, &sid, &token, ELSEWHERE)
            .await
            .is_err(),
        "a foreign page's socket"
    );
    let other = visitor(&t, &w, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        widget_socket(&t, &w, &sid, &other, PAGE).await.is_err(),
        "another visitor's socket"
    );

    let mut ws = widget_socket(&t, &w, &sid, &token, PAGE).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type": "message", "message": "What are your opening hours?", "idempotency_key": "k1"}).to_string(),
    ))
    .await
    .unwrap();
    let mut deltas = String::new();
    let answer = loop {
        let f = next_json(&mut ws).await;
        match f["type"].as_str() {
            Some("delta") => deltas.push_str(f["text"].as_str().unwrap()),
            Some("message") if f["role"] == "AI" => break f,
            _ => {}
        }
    };
    assert!(
        answer["text"].as_str().unwrap().contains("9 to 17"),
        "{answer}"
    );
    assert_eq!(
        deltas,
        answer["text"].as_str().unwrap(),
        "the deltas make the answer"
    );

    // An operator takes over and answers: the visitor sees it as the operator's.
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/mode"),
            Some(json!({"mode": "OPERATOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/messages"),
            Some(json!({"text": "Olga here, how can I help?"})),
        )
        .await;
    assert!(status.is_success(), "{status}");
    let op = loop {
        let f = next_json(&mut ws).await;
        if f["type"] == "message"
            && f["role"] == "OPERATOR"
            && f["text"] == "Olga here, how can I help?"
        {
            break f;
        }
    };
    assert!(op["id"].as_i64().unwrap() > answer["id"].as_i64().unwrap());
}

#[tokio::test]
async fn a_recording_becomes_its_transcript() {
    let stt = serve_fake(axum::Router::new().route(
        "/v1/audio/transcriptions",
        post(
            |headers: axum::http::HeaderMap, mut mp: axum::extract::Multipart| async move {
                assert_eq!(headers["authorization"], "Bearer stt-key-1");
                let (mut model, mut audio) = (String::new(), 0);
                while let Some(f) = mp.next_field().await.unwrap() {
                    match f.name() {
                        Some("model") => model = f.text().await.unwrap(),
                        Some("file") => audio = f.bytes().await.unwrap().len(),
                        _ => {}
                    }
                }
                assert_eq!((model.as_str(), audio), ("whisper-1", 4));
                axum::Json(json!({"text": " What are your opening hours? "}))
            },
        ),
    ))
    .await;
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(
        &t,
        ADMIN_KEY,
        &a,
        json!({"voice": {"enabled": true, "stt_base_url": format!("{stt}/v1"), "stt_api_key": "stt-key-1"}}),
    )
    .await;
    let (_, c) = json_of(
        page(&t, Method::GET, &format!("/widget/v1/{w}/config"), PAGE)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(c["voice"]["enabled"], true);
    let (_, settings) = t
        .call(
            Method::GET,
            &format!("/api/v1/agents/{}/widget", a.id),
            None,
        )
        .await;
    assert!(!settings.to_string().contains("stt-key-1"));
    let token = visitor(&t, &w, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = open_conversation(&t, &w, &token).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let part = reqwest::multipart::Part::bytes(b"OggS".to_vec())
        .file_name("voice.ogg")
        .mime_str("audio/ogg")
        .unwrap();
    let (status, r) = json_of(
        page(
            &t,
            Method::POST,
            &format!("/widget/v1/{w}/conversations/{sid}/messages"),
            PAGE,
        )
        .bearer_auth(&token)
        .multipart(
            reqwest::multipart::Form::new()
                .text("message", "")
                .part("attachments", part),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert!(r["response"].as_str().unwrap().contains("9 to 17"), "{r}");
    let (_, h) = history(&t, &w, &token, &sid, 1).await;
    assert_eq!(h["messages"][0]["text"], "What are your opening hours?");
    assert_eq!(
        h["messages"][0]["attachments"][0]["content_type"],
        "audio/ogg"
    );
}

#[tokio::test]
async fn visitors_are_rate_limited_per_visitor_and_address() {
    use parley::api::open_limits::OpenRate;
    let t = TestServer::start_with(|c| {
        c.limits.widget_per_visitor = OpenRate {
            per_second: 1,
            burst: 3,
        };
        c.limits.widget_per_address = OpenRate {
            per_second: 1,
            burst: 30,
        };
    })
    .await;
    let a = t.agent(&basic_agent("")).await;
    let w = enable(&t, ADMIN_KEY, &a, json!({})).await;
    let token = visitor(&t, &w, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = open_conversation(&t, &w, &token).await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut limited = None;
    for _ in 0..6 {
        let r = page(
            &t,
            Method::POST,
            &format!("/widget/v1/{w}/conversations/{sid}/messages"),
            PAGE,
        )
        .bearer_auth(&token)
        .json(&json!({"message": "hello"}))
        .send()
        .await
        .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(r.headers()["access-control-allow-origin"], PAGE);
            limited = Some(json_of(r).await.1);
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
    }
    let e = limited.expect("the visitor was limited");
    assert_eq!(error_code(&e), "rate_limited");
    // Another visitor from the same address still gets through, until the address' own
    // bucket is empty.
    let other = visitor(&t, &w, json!({})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    open_conversation(&t, &w, &other).await;
    let mut address_limited = false;
    for _ in 0..40 {
        let r = page(&t, Method::GET, &format!("/widget/v1/{w}/config"), PAGE)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            address_limited = true;
            break;
        }
    }
    assert!(address_limited, "the address' bucket ran out");
}

#[tokio::test]
async fn the_widget_files_are_embedded_cached_and_compressed() {
    let t = TestServer::start().await;
    for (path, ct) in [
        ("/widget.js", "text/javascript"),
        ("/widget.css", "text/css"),
    ] {
        let r = t.http.get(t.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(ct));
        assert!(r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age"));
        let etag = r.headers()["etag"].clone();
        let plain = r.bytes().await.unwrap();
        let r = t
            .http
            .get(t.url(path))
            .header("if-none-match", etag.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{path}");
        let r = t
            .http
            .get(t.url(path))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], "gzip");
        let zipped = r.bytes().await.unwrap();
        let mut unzipped = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(zipped.as_ref()),
            &mut unzipped,
        )
        .unwrap();
        assert_eq!(unzipped, plain.as_ref(), "{path}");
    }
    let a = t.agent(&basic_agent("")).await;
    let w = enable(&t, ADMIN_KEY, &a, json!({})).await;
    let r = t
        .http
        .get(t.url(&format!("/widget/demo/{w}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = r.text().await.unwrap();
    assert!(html.contains(&w), "the page names the widget");
    assert!(!html.contains("{{WIDGET_ID}}"));
    let (status, _) = json_of(
        t.http
            .get(t.url("/widget/demo/not-a-widget"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
