//! Discord: the slash command registered at start and by setup, Ed25519-signed
//! interactions (PING, forgeries refused), the deferred answer followed by edits of the
//! original response and follow-ups past 2000 characters, sessions per user, 429s.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use ed25519_dalek::{Signer, SigningKey};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::fake::{Fake, Recorded, Reply};
use super::*;
use crate::support::*;

// The application's key pair: RFC 8032 §7.1 test 1 (protocol-facts.md).
const SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
// Another key pair (RFC 8032 test 2): a signature by it is a forgery.
const OTHER_SECRET: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";

const APP_ID: &str = "1100000000000000001";
const BOT_TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GhIjKl.bot-s3cret";
const GUILD: &str = "2200000000000000002";
const CHANNEL: &str = "3300000000000000003";
/// The id of every interaction's original response on the fake.
const ORIGINAL_ID: &str = "4400000000000000004";
const FAQ_ANSWER: &str = "We are open from 9 to 17.";

fn key(secret: &str) -> SigningKey {
    SigningKey::from_bytes(&hex::decode(secret).unwrap().try_into().unwrap())
}

/// `X-Signature-Ed25519` over `timestamp || body`.
fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    hex::encode(
        key(secret)
            .sign(format!("{timestamp}{body}").as_bytes())
            .to_bytes(),
    )
}

/// A snowflake made now (Discord's epoch is 2015-01-01), unique per `seq`.
fn snowflake(seq: u64) -> String {
    let ms = Utc::now().timestamp_millis() as u64 - 1_420_070_400_000;
    ((ms << 22) | (seq & 0x3f_ffff)).to_string()
}

fn token_of(interaction: &str) -> String {
    format!("aW50ZXJhY3Rpb24-{interaction}")
}

/// A `/support question:…` command by `user` in a guild channel.
fn command(id: &str, user: &str, text: &str) -> Value {
    json!({"id": id, "type": 2, "version": 1, "application_id": APP_ID,
           "token": token_of(id), "guild_id": GUILD, "channel_id": CHANNEL,
           "locale": "en-US",
           "member": {"user": {"id": user, "username": "ann", "global_name": "Ann"},
                      "roles": [], "permissions": "0"},
           "data": {"id": "1300000000000000001", "name": "support", "type": 1,
                    "options": [{"name": "question", "type": 3, "value": text}]}})
}

fn ping(id: &str) -> Value {
    json!({"id": id, "type": 1, "version": 1, "application_id": APP_ID,
           "token": token_of(id)})
}

async fn send(
    t: &TestServer,
    conn: &str,
    signature: &str,
    timestamp: &str,
    body: String,
) -> reqwest::Response {
    hook(t, conn)
        .header("X-Signature-Ed25519", signature)
        .header("X-Signature-Timestamp", timestamp)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Delivers `body` signed as Discord signs it.
async fn deliver(t: &TestServer, conn: &str, body: &Value) -> reqwest::Response {
    let body = body.to_string();
    let timestamp = Utc::now().timestamp().to_string();
    send(t, conn, &sign(SECRET, &timestamp, &body), &timestamp, body).await
}

/// Delivers and expects the interaction to be answered at once with `expected`.
async fn deliver_ok(t: &TestServer, conn: &str, body: &Value, expected: Value) {
    let (status, answer) = json_of(deliver(t, conn, body).await).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, expected);
}

/// The Discord HTTP API as protocol-facts.md describes it, for the calls parley makes;
/// the first `refused` edits of an original response get a 429 asking for half a second.
async fn discord_refusing(refused: i64) -> Fake {
    let next_id = AtomicU64::new(5_500_000_000_000_000_000);
    let refusals = AtomicI64::new(refused);
    Fake::start(move |r: &Recorded| {
        let webhooks = format!("/webhooks/{APP_ID}/");
        let is_commands = r.path == format!("/applications/{APP_ID}/commands")
            || r.path == format!("/applications/{APP_ID}/guilds/{GUILD}/commands");
        match r.method.as_str() {
            "PUT" if is_commands => {
                let commands: Vec<Value> = r
                    .json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        c["id"] = json!(next_id.fetch_add(1, Ordering::SeqCst).to_string());
                        c["application_id"] = json!(APP_ID);
                        c["version"] = json!("1");
                        c
                    })
                    .collect();
                Reply::json(200, json!(commands))
            }
            "PATCH" if r.path.starts_with(&webhooks) && r.path.ends_with("/messages/@original") => {
                if refusals.fetch_sub(1, Ordering::SeqCst) > 0 {
                    return Reply::json(
                        429,
                        json!({"message": "You are being rate limited.",
                               "retry_after": 0.5, "global": false}),
                    )
                    .with_header("retry-after", "1")
                    .with_header("x-ratelimit-scope", "user");
                }
                Reply::json(
                    200,
                    json!({"id": ORIGINAL_ID, "type": 20, "channel_id": CHANNEL,
                           "content": r.json()["content"]}),
                )
            }
            "POST" if r.path.starts_with(&webhooks) => Reply::json(
                200,
                json!({"id": next_id.fetch_add(1, Ordering::SeqCst).to_string(), "type": 0,
                       "channel_id": CHANNEL, "content": r.json()["content"]}),
            ),
            _ => Reply::json(404, json!({"message": "404: Not Found", "code": 0})),
        }
    })
    .await
}

async fn discord() -> Fake {
    discord_refusing(0).await
}

fn config(fake: &Fake, extra: Value) -> Value {
    let mut config = json!({"application_id": APP_ID, "public_key": PUBLIC,
                            "bot_token": BOT_TOKEN, "handle": "support",
                            "api_base": fake.base});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

/// A started Discord connection answered by `agent`.
async fn setup(t: &TestServer, fake: &Fake, agent: &Agent, extra: Value, limits: Value) -> String {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
    let name = format!("Discord {}", CONNECTIONS.fetch_add(1, Ordering::SeqCst));
    let conn = connection_named(t, &name, "discord", config(fake, extra), limits).await;
    assign(t, agent, &conn).await;
    let started = act(t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");
    conn
}

/// The edits of the interaction's original response, in order.
fn edits(fake: &Fake, interaction: &str) -> Vec<Recorded> {
    fake.requests_to(&format!(
        "/webhooks/{APP_ID}/{}/messages/@original",
        token_of(interaction)
    ))
}

fn contents(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.json()["content"].as_str().unwrap().to_string())
        .collect()
}

/// The follow-up messages of the interaction, in order.
fn follow_ups(fake: &Fake, interaction: &str) -> Vec<Recorded> {
    fake.requests_to(&format!("/webhooks/{APP_ID}/{}", token_of(interaction)))
}

fn humans(texts: &[(String, String)]) -> Vec<String> {
    texts
        .iter()
        .filter(|(role, _)| role == "HUMAN")
        .map(|(_, text)| text.clone())
        .collect()
}

#[test]
fn the_signer_matches_rfc_8032() {
    // Test 1 signs the empty message; the public key is the connection's.
    assert_eq!(
        sign(SECRET, "", ""),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    assert_eq!(hex::encode(key(SECRET).verifying_key().to_bytes()), PUBLIC);
}

/// Waits for the command registration a new or changed connection starts in the
/// background; answers its outcome.
async fn background_setup(t: &TestServer, conn: &str) -> Value {
    for _ in 0..200 {
        let setup = events(t, conn)
            .await
            .into_iter()
            .find(|e| e["kind"] == "setup");
        if let Some(e) = setup {
            return e["detail"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no setup event: {:#?}", events(t, conn).await);
}

async fn post_setup(t: &TestServer, conn: &str) -> Value {
    let (status, body) = json_of(
        t.admin(Method::POST, &format!("/api/v1/connections/{conn}/setup"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn start_and_setup_overwrite_the_commands_with_the_handle() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let conn = connection(&t, "discord", config(&fake, json!({})), json!({})).await;
    // Creating it registers the command in the background.
    assert_eq!(background_setup(&t, &conn).await, json!({"ok": true}));
    let global = format!("/applications/{APP_ID}/commands");
    assert_eq!(fake.requests_to(&global).len(), 1, "{:#?}", fake.requests());
    let started = act(&t, &conn, "start").await;
    assert_eq!(started["status"], "Connected", "{started}");

    let puts = fake.requests_to(&global);
    assert_eq!(puts.len(), 2, "{:#?}", fake.requests());
    for put in &puts {
        assert_eq!(put.method, Method::PUT);
        let bot = format!("Bot {BOT_TOKEN}");
        assert_eq!(put.header("authorization"), Some(bot.as_str()));
    }
    // One command, `/support question:<text>`, replacing all others.
    let commands = puts[1].json();
    assert_eq!(puts[0].json(), commands);
    assert_eq!(commands.as_array().unwrap().len(), 1, "{commands}");
    assert_eq!(commands[0]["name"], "support");
    assert_eq!(commands[0]["type"], 1);
    assert!(commands[0]["description"].as_str().unwrap().len() <= 100);
    let option = &commands[0]["options"][0];
    assert_eq!(
        (&option["type"], &option["name"], &option["required"]),
        (&json!(3), &json!("question"), &json!(true)),
        "{commands}"
    );

    // Setup registers it again and says which command.
    assert_eq!(
        post_setup(&t, &conn).await,
        json!({"ok": true, "command": "support"})
    );
    let puts = fake.requests_to(&global);
    assert_eq!(puts.len(), 3);
    assert_eq!(puts[2].json(), commands);

    // A Discord that refuses: setup reports it, it is not an API error.
    fake.queue(Reply::json(
        403,
        json!({"message": "Missing Access", "code": 50001}),
    ));
    let body = post_setup(&t, &conn).await;
    assert_eq!(body["ok"], false, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("Missing Access"), "{body}");
    assert!(!error.contains(BOT_TOKEN), "{body}");
    // A refused start is an Error, with Discord's reason.
    fake.queue(Reply::json(
        401,
        json!({"message": "401: Unauthorized", "code": 0}),
    ));
    let retried = act(&t, &conn, "retry").await;
    assert_eq!(retried["status"], "Error", "{retried}");
    assert!(
        retried["status_error"]
            .as_str()
            .unwrap()
            .contains("401: Unauthorized"),
        "{retried}"
    );
    assert_eq!(fake.requests_to(&global).len(), 5);

    // With a guild_id the command is registered in that guild (shown at once).
    let guilded = connection_named(
        &t,
        "Discord guild",
        "discord",
        config(&fake, json!({"guild_id": GUILD, "handle": "help"})),
        json!({}),
    )
    .await;
    assert_eq!(background_setup(&t, &guilded).await, json!({"ok": true}));
    assert_eq!(act(&t, &guilded, "start").await["status"], "Connected");
    assert_eq!(
        post_setup(&t, &guilded).await,
        json!({"ok": true, "command": "help"})
    );
    let in_guild = format!("/applications/{APP_ID}/guilds/{GUILD}/commands");
    let puts = fake.requests_to(&in_guild);
    assert_eq!(
        puts.len(),
        3,
        "create, start, setup: {:#?}",
        fake.requests()
    );
    for put in &puts {
        assert_eq!(put.method, Method::PUT);
        assert_eq!(put.json()[0]["name"], "help");
    }
    assert_eq!(
        fake.requests_to(&global).len(),
        5,
        "the global ones are untouched"
    );

    // Setup is for Discord connections only.
    let slack = connection(
        &t,
        "slack",
        json!({"bot_token": "xoxb-1", "signing_secret": "s"}),
        json!({}),
    )
    .await;
    let (status, body) = json_of(
        t.admin(Method::POST, &format!("/api/v1/connections/{slack}/setup"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_error");
}

#[tokio::test]
async fn pings_are_answered_and_forged_interactions_refused() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &fake, &agent, json!({}), json!({})).await;

    deliver_ok(&t, &conn, &ping(&snowflake(1)), json!({"type": 1})).await;

    let id = snowflake(2);
    let genuine = command(&id, "77", "What are your opening hours?").to_string();
    let now = Utc::now().timestamp().to_string();
    let signature = sign(SECRET, &now, &genuine);
    let mut tampered = signature.clone().into_bytes();
    tampered[10] = if tampered[10] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    let later = (Utc::now().timestamp() + 1).to_string();
    let altered = genuine.replace("opening hours", "closing hours");
    let forgeries: Vec<(&str, String, String, String)> = vec![
        ("tampered signature", tampered, now.clone(), genuine.clone()),
        (
            "another timestamp than signed",
            signature.clone(),
            later,
            genuine.clone(),
        ),
        (
            "altered body",
            signature.clone(),
            now.clone(),
            altered.clone(),
        ),
        (
            "another key",
            sign(OTHER_SECRET, &now, &genuine),
            now.clone(),
            genuine.clone(),
        ),
        ("no signature", String::new(), now.clone(), genuine.clone()),
        ("not hex", "zz".repeat(64), now.clone(), genuine.clone()),
    ];
    for (what, signature, timestamp, body) in &forgeries {
        let resp = send(&t, &conn, signature, timestamp, body.clone()).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let (_, body) = json_of(resp).await;
        assert_eq!(error_code(&body), "unauthorized", "{what}");
    }
    // Discord's own probe: a PING with a bad signature must be refused too.
    let probe = ping(&snowflake(3)).to_string();
    let resp = send(&t, &conn, &"0".repeat(128), &now, probe).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Each refusal is logged; none was recorded or answered.
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        rejections(&t, &conn).await,
        forgeries.len() as u64 + 1,
        "{kinds:?}"
    );
    assert!(!kinds.iter().any(|k| k == "delivery"), "{kinds:?}");
    assert!(fake
        .requests()
        .iter()
        .all(|r| !r.path.starts_with("/webhooks/")));

    // The genuine interaction, with the same id, is new: the forgeries left no trace.
    deliver_ok(
        &t,
        &conn,
        &serde_json::from_str(&genuine).unwrap(),
        json!({"type": 5}),
    )
    .await;
    let session = replied_session(&t, &conn, &id).await;
    assert_eq!(
        humans(&session_texts(&t, &agent, &session).await),
        ["What are your opening hours?"]
    );
    assert_eq!(contents(&edits(&fake, &id)).last().unwrap(), FAQ_ANSWER);
}

#[tokio::test]
async fn a_command_is_deferred_then_answered_once_in_the_original_response() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &fake, &agent, json!({}), json!({})).await;

    let id = snowflake(1);
    let asked = command(&id, "77", "What are your opening hours?");
    // Answered at once with "thinking…" (type 5), visible to all.
    deliver_ok(&t, &conn, &asked, json!({"type": 5})).await;
    let session = replied_session(&t, &conn, &id).await;

    let patches = edits(&fake, &id);
    assert!(!patches.is_empty(), "{:#?}", fake.requests());
    assert_eq!(contents(&patches).last().unwrap(), FAQ_ANSWER);
    for patch in &patches {
        assert_eq!(patch.method, Method::PATCH);
        // The interaction token authorises the webhook: no bot token goes with it.
        assert_eq!(patch.header("authorization"), None);
        // LLM text must not ping anyone.
        assert_eq!(
            patch.json()["allowed_mentions"],
            json!({"parse": []}),
            "{}",
            patch.json()
        );
    }
    assert!(follow_ups(&fake, &id).is_empty());
    let reply = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "reply")
        .unwrap();
    assert_eq!(reply["detail"]["chat_id"], CHANNEL);
    assert_eq!(reply["detail"]["message_ids"], json!([ORIGINAL_ID]));
    let s = t.get_session(&agent, &session).await;
    assert!(s.to_string().contains("discord:77"), "{s}");

    // The same interaction again is one turn and one answer.
    for _ in 0..2 {
        deliver_ok(&t, &conn, &asked, json!({"type": 5})).await;
    }
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "duplicate").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.iter().filter(|k| *k == "delivery").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "reply").count(), 1);
    assert_eq!(
        humans(&session_texts(&t, &agent, &session).await),
        ["What are your opening hours?"]
    );
    assert_eq!(edits(&fake, &id).len(), patches.len());

    // A command without a text option is verified, acknowledged and not a turn.
    let mut bare = command(&snowflake(2), "77", "");
    bare["data"]["options"] = json!([]);
    let (status, _) = json_of(deliver(&t, &conn, &bare).await).await;
    assert_eq!(status, StatusCode::OK);
    let kinds = event_kinds(&t, &conn).await;
    assert_eq!(kinds.iter().filter(|k| *k == "delivery").count(), 1);
}

#[tokio::test]
async fn an_ephemeral_connection_defers_with_the_ephemeral_flag() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &fake, &agent, json!({"ephemeral": true}), json!({})).await;
    let id = snowflake(1);
    deliver_ok(
        &t,
        &conn,
        &command(&id, "77", "What are your opening hours?"),
        json!({"type": 5, "data": {"flags": 64}}),
    )
    .await;
    replied_session(&t, &conn, &id).await;
    assert_eq!(contents(&edits(&fake, &id)).last().unwrap(), FAQ_ANSWER);
}

/// A refund procedure far longer than one Discord message.
fn refund_steps() -> String {
    (1..=90)
        .map(|i| format!("Step {i}: fill in part {i} of the refund form and keep the receipt."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn answers_over_2000_characters_continue_in_follow_ups() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let long = refund_steps();
    assert!(long.chars().count() > 2 * 2000, "{}", long.len());
    let agent = t
        .agent(&basic_agent(&format!(
            "    - question: How do I get a refund?\n      answer: '{long}'\n"
        )))
        .await;
    let conn = setup(&t, &fake, &agent, json!({}), json!({})).await;
    let id = snowflake(1);
    deliver_ok(
        &t,
        &conn,
        &command(&id, "77", "How do I get a refund?"),
        json!({"type": 5}),
    )
    .await;
    replied_session(&t, &conn, &id).await;

    let patches = edits(&fake, &id);
    let posts = follow_ups(&fake, &id);
    assert!(posts.len() >= 2, "{} follow-ups", posts.len());
    // The follow-ups come after the original response has its final part.
    let last_patch = patches.last().unwrap();
    assert!(posts.iter().all(|p| p.at >= last_patch.at));
    let mut parts = vec![contents(&patches).pop().unwrap()];
    parts.extend(contents(&posts));
    for (i, part) in parts.iter().enumerate() {
        let n = part.chars().count();
        assert!(n <= 2000 && n > 1000, "part {i} has {n} chars");
    }
    assert_eq!(parts.concat(), long);
    for post in &posts {
        assert_eq!(post.method, Method::POST);
        assert_eq!(post.json()["allowed_mentions"], json!({"parse": []}));
    }
    let reply = events(&t, &conn)
        .await
        .into_iter()
        .find(|e| e["kind"] == "reply")
        .unwrap();
    assert_eq!(
        reply["detail"]["message_ids"].as_array().unwrap().len(),
        parts.len(),
        "{reply}"
    );
}

#[tokio::test]
async fn a_streamed_answer_edits_the_original_in_order_ending_with_the_whole_text() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let llm = slow_llm(
        &["One ", "two ", "three ", "four ", "five."],
        Duration::from_millis(250),
    )
    .await;
    let agent = slow_agent(&t, &llm).await;
    // Edits may come every 100 ms.
    let conn = setup(
        &t,
        &fake,
        &agent,
        json!({}),
        json!({"per_chat_per_second": 10}),
    )
    .await;
    let id = snowflake(1);
    deliver_ok(
        &t,
        &conn,
        &command(&id, "77", "count to five"),
        json!({"type": 5}),
    )
    .await;
    replied_session(&t, &conn, &id).await;
    let shown = contents(&edits(&fake, &id));
    assert!(shown.len() >= 2, "several edits as it grew: {shown:?}");
    for w in shown.windows(2) {
        assert!(
            w[1].starts_with(w[0].trim_end()) && w[1] != w[0],
            "{shown:?}"
        );
    }
    assert_eq!(shown.last().unwrap(), "One two three four five.");
    assert!(follow_ups(&fake, &id).is_empty());
}

#[tokio::test]
async fn a_users_commands_share_a_session_for_session_duration_ms() {
    let t = TestServer::start().await;
    let fake = discord().await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &fake, &agent, json!({}), json!({})).await;

    let ask = |seq: u64, user: &'static str, text: &'static str| {
        let id = snowflake(seq);
        (id.clone(), command(&id, user, text))
    };
    let (first, body) = ask(1, "77", "What are your opening hours?");
    deliver_ok(&t, &conn, &body, json!({"type": 5})).await;
    let session = replied_session(&t, &conn, &first).await;
    let (second, body) = ask(2, "77", "And on Sundays?");
    deliver_ok(&t, &conn, &body, json!({"type": 5})).await;
    assert_eq!(replied_session(&t, &conn, &second).await, session);
    // Another user has a session of their own.
    let (other, body) = ask(3, "88", "What are your opening hours?");
    deliver_ok(&t, &conn, &body, json!({"type": 5})).await;
    let others = replied_session(&t, &conn, &other).await;
    assert_ne!(others, session);
    assert_eq!(
        humans(&session_texts(&t, &agent, &session).await),
        ["What are your opening hours?", "And on Sundays?"]
    );
    assert_eq!(
        humans(&session_texts(&t, &agent, &others).await),
        ["What are your opening hours?"]
    );

    // Sessions lasting a millisecond: each command starts a new one.
    let short = setup(
        &t,
        &fake,
        &agent,
        json!({"session_duration_ms": 1}),
        json!({}),
    )
    .await;
    let (a, body) = ask(4, "77", "What are your opening hours?");
    deliver_ok(&t, &short, &body, json!({"type": 5})).await;
    let first_session = replied_session(&t, &short, &a).await;
    let (b, body) = ask(5, "77", "What are your opening hours?");
    deliver_ok(&t, &short, &body, json!({"type": 5})).await;
    let second_session = replied_session(&t, &short, &b).await;
    assert_ne!(first_session, second_session);
    assert_ne!(first_session, session);
    for s in [&first_session, &second_session] {
        assert_eq!(
            humans(&session_texts(&t, &agent, s).await),
            ["What are your opening hours?"]
        );
    }
    assert_eq!(contents(&edits(&fake, &b)).last().unwrap(), FAQ_ANSWER);
}

#[tokio::test]
async fn a_429_on_the_edit_is_waited_out_and_the_answer_lands_once() {
    let t = TestServer::start().await;
    // The first edit is refused: wait 0.5 s (the body's precise value; the header says 1).
    let fake = discord_refusing(1).await;
    let agent = t.agent(&basic_agent("")).await;
    let conn = setup(&t, &fake, &agent, json!({}), json!({})).await;
    let id = snowflake(1);
    deliver_ok(
        &t,
        &conn,
        &command(&id, "77", "What are your opening hours?"),
        json!({"type": 5}),
    )
    .await;
    replied_session(&t, &conn, &id).await;
    let patches = edits(&fake, &id);
    assert_eq!(
        patches.len(),
        2,
        "the refused edit, then one after the wait: {:?}",
        contents(&patches)
    );
    let waited = patches[1].at - patches[0].at;
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert_eq!(contents(&patches)[1], FAQ_ANSWER);
    let kinds = event_kinds(&t, &conn).await;
    assert!(!kinds.iter().any(|k| k == "error"), "{kinds:?}");
}
