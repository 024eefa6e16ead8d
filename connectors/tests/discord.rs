//! Discord: interaction signatures and parsing, message splitting, and the client against
//! a fake Discord API on loopback that behaves as Discord does.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use chrono::{TimeZone, Utc};
use ed25519_dalek::{Signer, SigningKey};
use parley_connectors::discord::{
    deferred_response, parse, split_message, verify, BotUser, DiscordClient, MAX_CONTENT_CHARS,
};
use parley_connectors::{ConnectorError, Delivery, Sent};
use parley_engine::inbound::InboundMessage;
use serde_json::{json, Value};
use support::{dead_base, multibyte_text, Fake, Recorded, Reply};

// RFC 8032 §7.1, tests 1 and 2.
const SECRET_1: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const PUBLIC_1: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const SIGNATURE_1: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
const PUBLIC_2: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
const SIGNATURE_2: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

const APP_ID: &str = "1100000000000000001";
const BOT_TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GhIjKl.bot-s3cret-token";
const INTERACTION_TOKEN: &str = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpz3cret";

fn unauthorized<T: std::fmt::Debug>(result: Result<T, ConnectorError>) -> bool {
    matches!(result, Err(ConnectorError::Unauthorized(_)))
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_accepts_the_rfc_8032_vectors() {
    // Test 1 signs the empty message: empty timestamp and body.
    assert_eq!(verify(PUBLIC_1, SIGNATURE_1, "", b""), Ok(()));
    // Test 2 signs the single byte 0x72 ("r"): the signed bytes are timestamp || body, so
    // it verifies whichever side carries it.
    assert_eq!(verify(PUBLIC_2, SIGNATURE_2, "", &[0x72]), Ok(()));
    assert_eq!(verify(PUBLIC_2, SIGNATURE_2, "r", b""), Ok(()));
    // Upper-case hex is still hex.
    assert_eq!(
        verify(
            &PUBLIC_1.to_uppercase(),
            &SIGNATURE_1.to_uppercase(),
            "",
            b""
        ),
        Ok(())
    );
}

#[test]
fn verify_rejects_the_vectors_altered() {
    let mut flipped = hex::decode(SIGNATURE_1).unwrap();
    flipped[10] ^= 0x01;
    let flipped = hex::encode(flipped);
    assert!(unauthorized(verify(PUBLIC_1, SIGNATURE_1, "", &[0x72])));
    assert!(unauthorized(verify(PUBLIC_1, SIGNATURE_1, "1", b"")));
    assert!(unauthorized(verify(PUBLIC_1, &flipped, "", b"")));
    assert!(unauthorized(verify(PUBLIC_2, SIGNATURE_1, "", b"")));
    assert!(unauthorized(verify(PUBLIC_1, SIGNATURE_2, "", &[0x72])));
}

fn signed_interaction(body: &[u8], timestamp: &str) -> String {
    let key = SigningKey::from_bytes(&hex::decode(SECRET_1).unwrap().try_into().unwrap());
    assert_eq!(hex::encode(key.verifying_key().as_bytes()), PUBLIC_1);
    let mut message = timestamp.as_bytes().to_vec();
    message.extend_from_slice(body);
    hex::encode(key.sign(&message).to_bytes())
}

#[test]
fn verify_accepts_a_signed_interaction_and_rejects_it_tampered() {
    let body = guild_command().to_string();
    let timestamp = "1714414322";
    let signature = signed_interaction(body.as_bytes(), timestamp);
    assert_eq!(
        verify(PUBLIC_1, &signature, timestamp, body.as_bytes()),
        Ok(())
    );

    let tampered_body = body.replace("How much", "How MUCH");
    let mut bad_signature = hex::decode(&signature).unwrap();
    bad_signature[63] ^= 0x40;
    let rejected = [
        verify(PUBLIC_1, &signature, timestamp, tampered_body.as_bytes()),
        verify(PUBLIC_1, &signature, "1714414323", body.as_bytes()),
        verify(
            PUBLIC_1,
            &hex::encode(bad_signature),
            timestamp,
            body.as_bytes(),
        ),
        verify(PUBLIC_2, &signature, timestamp, body.as_bytes()),
        // Not hex, too short, too long, empty.
        verify(
            PUBLIC_1,
            &signature.replace('a', "g"),
            timestamp,
            body.as_bytes(),
        ),
        verify(PUBLIC_1, &signature[..126], timestamp, body.as_bytes()),
        verify(
            PUBLIC_1,
            &format!("{signature}00"),
            timestamp,
            body.as_bytes(),
        ),
        verify(PUBLIC_1, "", timestamp, body.as_bytes()),
        // A broken public key.
        verify(&PUBLIC_1[..62], &signature, timestamp, body.as_bytes()),
        verify("zz", &signature, timestamp, body.as_bytes()),
    ];
    for (i, result) in rejected.into_iter().enumerate() {
        assert!(unauthorized(result.clone()), "case {i}: {result:?}");
    }
}

// ---------------------------------------------------------------- parse

const INTERACTION_ID: &str = "1234567890123456789";

fn guild_command() -> Value {
    json!({
        "id": INTERACTION_ID,
        "application_id": APP_ID,
        "type": 2,
        "token": INTERACTION_TOKEN,
        "version": 1,
        "guild_id": "990000000000000001",
        "channel_id": "990000000000000002",
        "member": {"user": {"id": "880000000000000001", "username": "ann_k",
                            "global_name": "Ann K"}, "roles": []},
        "data": {"id": "770000000000000001", "name": "ask", "type": 1,
                 "options": [{"name": "question", "type": 3, "value": "How much is Premium?"}]}
    })
}

fn parse_json(interaction: &Value) -> Result<Delivery, ConnectorError> {
    parse(interaction.to_string().as_bytes())
}

#[test]
fn parse_answers_ping_with_pong() {
    let ping = json!({"id": INTERACTION_ID, "application_id": APP_ID, "type": 1,
                      "token": INTERACTION_TOKEN, "version": 1});
    let Ok(Delivery::Handshake(pong)) = parse_json(&ping) else {
        panic!("{:?}", parse_json(&ping));
    };
    assert_eq!(
        serde_json::from_str::<Value>(&pong).unwrap(),
        json!({"type": 1})
    );
}

#[test]
fn parse_maps_a_guild_command() {
    assert_eq!(
        parse_json(&guild_command()),
        Ok(Delivery::Message(InboundMessage {
            platform: parley_connectors::discord::PLATFORM,
            dedup_id: INTERACTION_ID.into(),
            user_id: "880000000000000001".into(),
            user_name: Some("Ann K".into()),
            chat_id: "990000000000000002".into(),
            thread_id: None,
            text: "How much is Premium?".into(),
            // The snowflake's time: (id >> 22) + 1420070400000 ms.
            sent_at: Utc.timestamp_millis_opt(1_714_414_322_167).unwrap(),
            reply_context: json!({"application_id": APP_ID, "token": INTERACTION_TOKEN,
                                  "guild_id": "990000000000000001"}),
        }))
    );
}

#[test]
fn parse_maps_a_dm_command_from_user() {
    let mut dm = guild_command();
    let object = dm.as_object_mut().unwrap();
    object.remove("guild_id");
    object.remove("member");
    object.insert(
        "user".into(),
        json!({"id": "880000000000000009", "username": "bob"}),
    );
    let Ok(Delivery::Message(message)) = parse_json(&dm) else {
        panic!("{:?}", parse_json(&dm));
    };
    assert_eq!(message.user_id, "880000000000000009");
    assert_eq!(message.user_name.as_deref(), Some("bob"));
    assert_eq!(
        message.reply_context,
        json!({"application_id": APP_ID, "token": INTERACTION_TOKEN})
    );
}

#[test]
fn parse_takes_the_first_string_option_even_in_a_subcommand() {
    let mut command = guild_command();
    command["data"]["options"] = json!([
        {"name": "private", "type": 5, "value": true},
        {"name": "cards", "type": 1, "options": [
            {"name": "count", "type": 4, "value": 3},
            {"name": "question", "type": 3, "value": "Which card for travel?"},
            {"name": "extra", "type": 3, "value": "ignored"}
        ]},
        {"name": "later", "type": 3, "value": "also ignored"}
    ]);
    let Ok(Delivery::Message(message)) = parse_json(&command) else {
        panic!("{:?}", parse_json(&command));
    };
    assert_eq!(message.text, "Which card for travel?");
}

#[test]
fn parse_ignores_other_interactions_and_commands_without_text() {
    let mut no_options = guild_command();
    no_options["data"]
        .as_object_mut()
        .unwrap()
        .remove("options");
    let mut only_integer = guild_command();
    only_integer["data"]["options"] = json!([{"name": "n", "type": 4, "value": 1}]);
    let mut component = guild_command();
    component["type"] = json!(3);
    let mut autocomplete = guild_command();
    autocomplete["type"] = json!(4);
    let mut modal = guild_command();
    modal["type"] = json!(5);
    for (name, interaction) in [
        ("no options", no_options),
        ("integer option", only_integer),
        ("component", component),
        ("autocomplete", autocomplete),
        ("modal", modal),
    ] {
        assert!(
            matches!(parse_json(&interaction), Ok(Delivery::Ignored(_))),
            "{name}: {:?}",
            parse_json(&interaction)
        );
    }
}

#[test]
fn parse_rejects_what_is_not_an_interaction() {
    let without = |field: &str| {
        let mut command = guild_command();
        command.as_object_mut().unwrap().remove(field);
        command
    };
    let mut no_user = without("member");
    no_user.as_object_mut().unwrap().remove("user");
    let mut bad_id = guild_command();
    bad_id["id"] = json!("not-a-snowflake");
    let mut string_type = guild_command();
    string_type["type"] = json!("2");
    let cases = [
        ("not json", b"{\"type\":".to_vec()),
        ("array", b"[]".to_vec()),
        ("no id", without("id").to_string().into_bytes()),
        ("no token", without("token").to_string().into_bytes()),
        (
            "no application_id",
            without("application_id").to_string().into_bytes(),
        ),
        (
            "no channel_id",
            without("channel_id").to_string().into_bytes(),
        ),
        ("no data", without("data").to_string().into_bytes()),
        ("no user", no_user.to_string().into_bytes()),
        ("bad id", bad_id.to_string().into_bytes()),
        ("string type", string_type.to_string().into_bytes()),
    ];
    for (name, body) in cases {
        let result = parse(&body);
        assert!(
            matches!(result, Err(ConnectorError::Malformed(_))),
            "{name}: {result:?}"
        );
    }
}

#[test]
fn deferred_responses() {
    assert_eq!(deferred_response(false), json!({"type": 5}));
    assert_eq!(
        deferred_response(true),
        json!({"type": 5, "data": {"flags": 64}})
    );
}

// ---------------------------------------------------------------- split_message

#[test]
fn split_message_keeps_short_texts_whole() {
    assert_eq!(split_message("", 2000), vec![""]);
    assert_eq!(split_message("hi", 2000), vec!["hi"]);
    let exact = multibyte_text(2000);
    assert_eq!(split_message(&exact, 2000), vec![exact.as_str()]);
}

#[test]
fn split_message_cuts_multibyte_text_on_character_boundaries() {
    let text = multibyte_text(4501);
    let pieces = split_message(&text, 2000);
    let lengths: Vec<usize> = pieces.iter().map(|p| p.chars().count()).collect();
    assert_eq!(lengths, [2000, 2000, 501]);
    assert_eq!(pieces.concat(), text);
    assert_eq!(split_message("😀😀😀", 1), vec!["😀", "😀", "😀"]);
}

#[test]
fn split_message_prefers_line_breaks_then_spaces_in_the_second_half() {
    assert_eq!(split_message("aaaa\nbbb cc", 8), vec!["aaaa\n", "bbb cc"]);
    assert_eq!(split_message("aaaaa bbbbbb", 8), vec!["aaaaa ", "bbbbbb"]);
    // A break early in the piece would waste it: cut at the limit instead.
    assert_eq!(split_message("a bbbbbbbbbb", 8), vec!["a bbbbbb", "bbbb"]);
    // Multi-byte whitespace is a break too.
    assert_eq!(
        split_message("ääää\u{3000}ööö", 6),
        vec!["ääää\u{3000}", "ööö"]
    );
}

#[test]
fn split_message_never_loses_or_reorders_characters() {
    let alphabet = ['a', ' ', 'é', '\n', '語', '😀', '\u{3000}', 'z', ' ', 'ж'];
    for len in [0, 1, 7, 63, 64, 65, 257, 1000] {
        // A fixed pseudo-random mix, so every run checks the same texts.
        let text: String = (0..len)
            .map(|i: usize| alphabet[(i * 7 + i / 3) % alphabet.len()])
            .collect();
        for max in [1, 2, 3, 5, 16, 64, 2000] {
            let pieces = split_message(&text, max);
            assert_eq!(pieces.concat(), text, "len {len} max {max}");
            assert!(pieces.iter().all(|p| p.chars().count() <= max));
            assert!(len == 0 || pieces.iter().all(|p| !p.is_empty()));
        }
    }
}

#[test]
#[should_panic(expected = "max_chars must be positive")]
fn split_message_refuses_a_zero_limit() {
    split_message("text", 0);
}

// ---------------------------------------------------------------- the fake Discord API

#[derive(Default)]
struct DiscordApi {
    next_id: u64,
    live_tokens: HashSet<String>,
    commands: Vec<Value>,
}

fn discord_error(status: u16, code: i64, message: &str) -> Reply {
    Reply::json(status, json!({"message": message, "code": code}))
}

impl DiscordApi {
    fn answer(&mut self, request: &Recorded) -> Reply {
        let bot_auth = request.header("authorization") == Some(format!("Bot {BOT_TOKEN}").as_str());
        let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        match (&request.method, segments.as_slice()) {
            (&Method::GET, ["api", "v10", "users", "@me"]) if bot_auth => Reply::json(
                200,
                json!({"id": APP_ID, "username": "parley", "bot": true, "discriminator": "0"}),
            ),
            (&Method::PATCH, ["api", "v10", "webhooks", app, token, "messages", "@original"])
            | (&Method::POST, ["api", "v10", "webhooks", app, token]) => {
                if *app != APP_ID || !self.live_tokens.contains(*token) {
                    return discord_error(404, 10015, "Unknown Webhook");
                }
                let content = request.json()["content"].as_str().unwrap_or("").to_owned();
                if content.is_empty() {
                    return discord_error(400, 50006, "Cannot send an empty message");
                }
                if content.chars().count() > MAX_CONTENT_CHARS {
                    return Reply::json(
                        400,
                        json!({"message": "Invalid Form Body", "code": 50035,
                        "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH",
                        "message": "Must be 2000 or fewer in length."}]}}}),
                    );
                }
                let id = if request.method == Method::PATCH {
                    "1300000000000000000".to_owned()
                } else {
                    self.next_id += 1;
                    format!("13000000000000000{:02}", self.next_id)
                };
                Reply::json(
                    200,
                    json!({"id": id, "type": 0, "content": content,
                                        "channel_id": "990000000000000002"}),
                )
            }
            (&Method::PUT, ["api", "v10", "applications", app, "commands"])
            | (&Method::PUT, ["api", "v10", "applications", app, "guilds", _, "commands"])
                if bot_auth && *app == APP_ID =>
            {
                self.commands = request.json().as_array().unwrap().clone();
                let created: Vec<Value> = self
                    .commands
                    .iter()
                    .map(|c| {
                        let mut c = c.clone();
                        c["id"] = json!("1400000000000000001");
                        c["application_id"] = json!(APP_ID);
                        c
                    })
                    .collect();
                Reply::json(200, json!(created))
            }
            _ if !bot_auth && !request.path.contains("/webhooks/") => {
                discord_error(401, 0, "401: Unauthorized")
            }
            _ => discord_error(404, 0, "404: Not Found"),
        }
    }
}

async fn fake_discord() -> Fake {
    let state = Arc::new(Mutex::new(DiscordApi {
        live_tokens: HashSet::from([INTERACTION_TOKEN.to_owned()]),
        ..DiscordApi::default()
    }));
    Fake::start(move |request| state.lock().unwrap().answer(request)).await
}

fn client(fake: &Fake) -> DiscordClient {
    DiscordClient::new(
        reqwest::Client::new(),
        &format!("{}/api/v10", fake.base),
        APP_ID,
        BOT_TOKEN,
    )
}

fn webhook_path() -> String {
    format!("/api/v10/webhooks/{APP_ID}/{INTERACTION_TOKEN}")
}

fn message_body(content: &str) -> Value {
    json!({"content": content, "allowed_mentions": {"parse": []}})
}

// ---------------------------------------------------------------- client calls

#[tokio::test]
async fn get_me_sends_the_bot_token() {
    let fake = fake_discord().await;
    assert_eq!(
        client(&fake).get_me().await,
        Ok(BotUser {
            id: APP_ID.into(),
            username: "parley".into(),
        })
    );
    let request = fake.single_request();
    assert_eq!(request.method, Method::GET);
    assert_eq!(request.path, "/api/v10/users/@me");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bot {BOT_TOKEN}").as_str())
    );
}

#[tokio::test]
async fn edit_original_patches_the_original_response() {
    let fake = fake_discord().await;
    let sent = client(&fake)
        .edit_original(INTERACTION_TOKEN, "Premium costs €12.90 @everyone")
        .await
        .unwrap();
    assert_eq!(
        sent,
        Sent {
            message_id: "1300000000000000000".into()
        }
    );
    let request = fake.single_request();
    assert_eq!(request.method, Method::PATCH);
    assert_eq!(
        request.path,
        format!("{}/messages/@original", webhook_path())
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    // The interaction token is the credential: the bot token stays home.
    assert_eq!(request.header("authorization"), None);
    assert_eq!(
        request.json(),
        message_body("Premium costs €12.90 @everyone")
    );
}

#[tokio::test]
async fn follow_up_posts_a_new_message() {
    let fake = fake_discord().await;
    let sent = client(&fake)
        .follow_up(INTERACTION_TOKEN, "And issuance is free.")
        .await
        .unwrap();
    assert_eq!(
        sent,
        Sent {
            message_id: "1300000000000000001".into()
        }
    );
    let request = fake.single_request();
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, webhook_path());
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.json(), message_body("And issuance is free."));
}

#[tokio::test]
async fn reply_edits_the_original_then_follows_up_in_order() {
    let fake = fake_discord().await;
    let text = multibyte_text(2 * MAX_CONTENT_CHARS + 1);
    let sent = client(&fake).reply(INTERACTION_TOKEN, &text).await.unwrap();
    assert_eq!(
        sent,
        [
            "1300000000000000000",
            "1300000000000000001",
            "1300000000000000002"
        ]
        .map(|id| Sent {
            message_id: id.into()
        })
        .to_vec()
    );
    let requests = fake.requests();
    let methods: Vec<&Method> = requests.iter().map(|r| &r.method).collect();
    assert_eq!(methods, [&Method::PATCH, &Method::POST, &Method::POST]);
    let contents: Vec<String> = requests
        .iter()
        .map(|r| r.json()["content"].as_str().unwrap().to_owned())
        .collect();
    let lengths: Vec<usize> = contents.iter().map(|c| c.chars().count()).collect();
    assert_eq!(lengths, [MAX_CONTENT_CHARS, MAX_CONTENT_CHARS, 1]);
    assert_eq!(contents.concat(), text);
}

#[tokio::test]
async fn reply_with_a_short_text_only_edits_the_original() {
    let fake = fake_discord().await;
    let sent = client(&fake)
        .reply(INTERACTION_TOKEN, "Short.")
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(fake.single_request().method, Method::PATCH);
}

#[tokio::test]
async fn overwrite_commands_puts_one_command_globally_or_in_a_guild() {
    let fake = fake_discord().await;
    let client = client(&fake);
    client
        .overwrite_commands(None, "ask", "Ask the card assistant")
        .await
        .unwrap();
    client
        .overwrite_commands(Some("990000000000000001"), "ask", "Ask the card assistant")
        .await
        .unwrap();
    let expected = json!([{
        "name": "ask", "type": 1, "description": "Ask the card assistant",
        "options": [{"type": 3, "name": "question", "description": "What you want to ask",
                     "required": true}]
    }]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].path,
        format!("/api/v10/applications/{APP_ID}/commands")
    );
    assert_eq!(
        requests[1].path,
        format!("/api/v10/applications/{APP_ID}/guilds/990000000000000001/commands")
    );
    for request in &requests {
        assert_eq!(request.method, Method::PUT);
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bot {BOT_TOKEN}").as_str())
        );
        assert_eq!(request.json(), expected);
    }
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn rate_limits_use_the_bodys_fractional_retry_after() {
    let fake = fake_discord().await;
    fake.queue(
        Reply::json(
            429,
            json!({"message": "You are being rate limited.", "retry_after": 64.57,
                   "global": false}),
        )
        .with_header("retry-after", "65"),
    );
    assert_eq!(
        client(&fake).follow_up(INTERACTION_TOKEN, "hi").await,
        Err(ConnectorError::RateLimited(Duration::from_millis(64_570)))
    );
}

#[tokio::test]
async fn rate_limits_fall_back_to_the_retry_after_header() {
    let fake = fake_discord().await;
    fake.queue(Reply {
        status: 429,
        headers: vec![("retry-after", "3".into())],
        body: "<html>rate limited</html>".into(),
    });
    assert_eq!(
        client(&fake).get_me().await,
        Err(ConnectorError::RateLimited(Duration::from_secs(3)))
    );
}

#[tokio::test]
async fn refusals_carry_discords_code_and_message() {
    let fake = fake_discord().await;
    let client = client(&fake);
    assert_eq!(
        client.follow_up("expired-token", "hi").await,
        Err(ConnectorError::Refused {
            platform: "discord",
            status: 404,
            code: "10015".into(),
            message: "Unknown Webhook".into(),
        })
    );
    assert_eq!(
        client.edit_original(INTERACTION_TOKEN, "").await,
        Err(ConnectorError::Refused {
            platform: "discord",
            status: 400,
            code: "50006".into(),
            message: "Cannot send an empty message".into(),
        })
    );
    let too_long = multibyte_text(MAX_CONTENT_CHARS + 1);
    assert_eq!(
        client.follow_up(INTERACTION_TOKEN, &too_long).await,
        Err(ConnectorError::Refused {
            platform: "discord",
            status: 400,
            code: "50035".into(),
            message: "Invalid Form Body".into(),
        })
    );
    // Without a code in the body, the status stands in.
    fake.queue(Reply::json(403, json!({"message": "Missing Access"})));
    assert_eq!(
        client.get_me().await,
        Err(ConnectorError::Refused {
            platform: "discord",
            status: 403,
            code: "403".into(),
            message: "Missing Access".into(),
        })
    );
}

#[tokio::test]
async fn a_wrong_bot_token_is_refused() {
    let fake = fake_discord().await;
    let wrong = DiscordClient::new(
        reqwest::Client::new(),
        &format!("{}/api/v10", fake.base),
        APP_ID,
        "wrong",
    );
    assert_eq!(
        wrong.get_me().await,
        Err(ConnectorError::Refused {
            platform: "discord",
            status: 401,
            code: "0".into(),
            message: "401: Unauthorized".into(),
        })
    );
}

#[tokio::test]
async fn unreadable_answers_are_transport_errors() {
    let fake = fake_discord().await;
    fake.queue(Reply {
        status: 502,
        headers: vec![],
        body: "<html>Bad Gateway</html>".into(),
    });
    fake.queue(Reply {
        status: 200,
        headers: vec![],
        body: "not json".into(),
    });
    let client = client(&fake);
    for err in [
        client.get_me().await.unwrap_err(),
        client.get_me().await.unwrap_err(),
    ] {
        assert!(matches!(err, ConnectorError::Transport(_)), "{err:?}");
    }
}

#[tokio::test]
async fn tokens_never_appear_in_errors() {
    let dead = DiscordClient::new(
        reqwest::Client::new(),
        &dead_base().await,
        APP_ID,
        BOT_TOKEN,
    );
    let errors = [
        dead.get_me().await.unwrap_err(),
        dead.reply(INTERACTION_TOKEN, "hi").await.unwrap_err(),
        dead.follow_up(INTERACTION_TOKEN, "hi").await.unwrap_err(),
        dead.overwrite_commands(None, "ask", "Ask")
            .await
            .unwrap_err(),
    ];
    for err in &errors {
        assert!(matches!(err, ConnectorError::Transport(_)), "{err:?}");
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(BOT_TOKEN), "{shown}");
        assert!(!shown.contains(INTERACTION_TOKEN), "{shown}");
    }
    assert!(!format!("{dead:?}").contains(BOT_TOKEN));
}
