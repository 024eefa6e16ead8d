//! Telegram: webhook verification and parsing, and the client against a fake Bot API on
//! loopback that behaves as the Bot API does.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use chrono::{TimeZone, Utc};
use parley_connectors::telegram::{
    parse, verify, BotUser, Polled, TelegramClient, MAX_TEXT_CHARS, SECRET_TOKEN_HEADER,
};
use parley_connectors::{ConnectorError, Delivery, Sent};
use parley_engine::inbound::InboundMessage;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use support::{dead_base, multibyte_text, Fake, Recorded, Reply};

const TOKEN: &str = "123456789:AAH-s3cret_TOKEN-value";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, value.parse().unwrap());
    }
    map
}

// ---------------------------------------------------------------- verify

#[test]
fn verify_accepts_the_configured_secret_token() {
    let secret = "s3cret_Token-123";
    assert_eq!(
        verify(secret, &headers(&[(SECRET_TOKEN_HEADER, secret)])),
        Ok(())
    );
    // Header names are case-insensitive on the wire.
    assert_eq!(
        verify(
            secret,
            &headers(&[("x-telegram-bot-api-secret-token", secret)])
        ),
        Ok(())
    );
}

#[test]
fn verify_rejects_a_wrong_missing_or_unconfigured_secret() {
    let secret = "s3cret_Token-123";
    let rejected = [
        verify(
            secret,
            &headers(&[(SECRET_TOKEN_HEADER, "s3cret_Token-124")]),
        ),
        verify(
            secret,
            &headers(&[(SECRET_TOKEN_HEADER, "s3cret_Token-12")]),
        ),
        verify(
            secret,
            &headers(&[(SECRET_TOKEN_HEADER, "s3cret_Token-1234")]),
        ),
        verify(secret, &headers(&[(SECRET_TOKEN_HEADER, "")])),
        verify(secret, &headers(&[("X-Other", secret)])),
        verify(secret, &HeaderMap::new()),
        // An empty configured secret must not accept a delivery without the header…
        verify("", &HeaderMap::new()),
        // …nor one with an empty header.
        verify("", &headers(&[(SECRET_TOKEN_HEADER, "")])),
    ];
    for (i, result) in rejected.into_iter().enumerate() {
        assert!(
            matches!(result, Err(ConnectorError::Unauthorized(_))),
            "case {i}: {result:?}"
        );
    }
}

#[test]
fn verify_errors_do_not_echo_the_secret() {
    let secret = "s3cret_Token-123";
    let err = verify(secret, &headers(&[(SECRET_TOKEN_HEADER, "guess")])).unwrap_err();
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!err.to_string().contains("guess"), "{err}");
}

// ---------------------------------------------------------------- parse

fn text_update() -> Value {
    json!({
        "update_id": 987654321,
        "message": {
            "message_id": 77,
            "date": 1_700_000_000,
            "chat": {"id": -1001234567890_i64, "type": "supergroup", "title": "Cards"},
            "from": {"id": 4242, "is_bot": false, "first_name": "Ann", "username": "ann_k",
                     "language_code": "en"},
            "text": "How much is Premium?"
        }
    })
}

fn parse_json(update: &Value) -> Result<Delivery, ConnectorError> {
    parse(update.to_string().as_bytes())
}

#[test]
fn parse_maps_a_text_message() {
    assert_eq!(
        parse_json(&text_update()),
        Ok(Delivery::Message(InboundMessage {
            platform: parley_connectors::telegram::PLATFORM,
            dedup_id: "987654321".into(),
            user_id: "4242".into(),
            user_name: Some("ann_k".into()),
            chat_id: "-1001234567890".into(),
            thread_id: None,
            text: "How much is Premium?".into(),
            sent_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            reply_context: json!({"message_id": 77}),
        }))
    );
}

#[test]
fn parse_names_a_user_without_username_by_first_name() {
    let mut update = text_update();
    update["message"]["from"]
        .as_object_mut()
        .unwrap()
        .remove("username");
    let Ok(Delivery::Message(message)) = parse_json(&update) else {
        panic!("not a message");
    };
    assert_eq!(message.user_name.as_deref(), Some("Ann"));
}

#[test]
fn parse_ignores_updates_that_are_not_a_persons_text_message() {
    let mut from_bot = text_update();
    from_bot["message"]["from"]["is_bot"] = json!(true);
    let mut photo = text_update();
    photo["message"].as_object_mut().unwrap().remove("text");
    photo["message"]["photo"] = json!([{"file_id": "x", "width": 1, "height": 1}]);
    let mut no_sender = text_update();
    no_sender["message"].as_object_mut().unwrap().remove("from");
    let edited = json!({"update_id": 5, "edited_message": text_update()["message"]});
    let channel_post = json!({"update_id": 6, "channel_post": text_update()["message"]});

    for (name, update) in [
        ("bot", from_bot),
        ("photo", photo),
        ("no sender", no_sender),
        ("edited", edited),
        ("channel post", channel_post),
    ] {
        assert!(
            matches!(parse_json(&update), Ok(Delivery::Ignored(_))),
            "{name}: {:?}",
            parse_json(&update)
        );
    }
}

#[test]
fn parse_rejects_what_is_not_an_update() {
    let mut string_chat_id = text_update();
    string_chat_id["message"]["chat"]["id"] = json!("abc");
    let mut no_date = text_update();
    no_date["message"].as_object_mut().unwrap().remove("date");
    let mut huge_date = text_update();
    huge_date["message"]["date"] = json!(i64::MAX);
    let bodies = [
        b"not json".to_vec(),
        b"".to_vec(),
        b"[1,2]".to_vec(),
        json!({"message": text_update()["message"]})
            .to_string()
            .into_bytes(),
        json!({"update_id": "1"}).to_string().into_bytes(),
        string_chat_id.to_string().into_bytes(),
        no_date.to_string().into_bytes(),
        huge_date.to_string().into_bytes(),
    ];
    for body in bodies {
        let result = parse(&body);
        assert!(
            matches!(result, Err(ConnectorError::Malformed(_))),
            "{}: {result:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

// ---------------------------------------------------------------- the fake Bot API

#[derive(Default)]
struct BotApi {
    webhook: Option<String>,
    next_message_id: i64,
    /// (chat id, message id) -> text
    messages: HashMap<(i64, i64), String>,
    updates: Vec<Value>,
}

fn ok(result: Value) -> Reply {
    Reply::json(200, json!({"ok": true, "result": result}))
}

fn refused(code: u16, description: &str) -> Reply {
    Reply::json(
        code,
        json!({"ok": false, "error_code": code, "description": description}),
    )
}

impl BotApi {
    fn answer(&mut self, request: &Recorded) -> Reply {
        let Some(method) = request.path.strip_prefix(&format!("/bot{TOKEN}/")) else {
            return refused(401, "Unauthorized");
        };
        if request.method != Method::POST {
            return refused(405, "Method Not Allowed");
        }
        let params = request.json();
        let text_ok = |text: &str| match text.chars().count() {
            0 => Err(refused(400, "Bad Request: message text is empty")),
            n if n > MAX_TEXT_CHARS => Err(refused(400, "Bad Request: message is too long")),
            _ => Ok(()),
        };
        match method {
            "getMe" => ok(
                json!({"id": 123456789, "is_bot": true, "first_name": "Parley",
                                 "username": "parley_bot", "can_join_groups": true}),
            ),
            "sendMessage" => {
                let Some(chat_id) = params["chat_id"].as_i64() else {
                    return refused(400, "Bad Request: chat not found");
                };
                let text = params["text"].as_str().expect("text").to_owned();
                if let Err(reply) = text_ok(&text) {
                    return reply;
                }
                if chat_id == 404 {
                    return refused(400, "Bad Request: chat not found");
                }
                self.next_message_id += 1;
                let id = self.next_message_id;
                self.messages.insert((chat_id, id), text.clone());
                ok(json!({"message_id": id, "date": 1_700_000_100,
                          "chat": {"id": chat_id, "type": "private"}, "text": text}))
            }
            "editMessageText" => {
                let (Some(chat_id), Some(id)) =
                    (params["chat_id"].as_i64(), params["message_id"].as_i64())
                else {
                    return refused(400, "Bad Request: message to edit not found");
                };
                let text = params["text"].as_str().expect("text").to_owned();
                if let Err(reply) = text_ok(&text) {
                    return reply;
                }
                match self.messages.get_mut(&(chat_id, id)) {
                    None => refused(400, "Bad Request: message to edit not found"),
                    Some(current) if *current == text => refused(
                        400,
                        "Bad Request: message is not modified: specified new message content \
                         and reply markup are exactly the same as a current content and reply \
                         markup of the message",
                    ),
                    Some(current) => {
                        *current = text.clone();
                        ok(json!({"message_id": id, "date": 1_700_000_100,
                                  "edit_date": 1_700_000_200,
                                  "chat": {"id": chat_id, "type": "private"}, "text": text}))
                    }
                }
            }
            "sendChatAction" => ok(json!(true)),
            "setWebhook" => {
                self.webhook = Some(params["url"].as_str().unwrap().to_owned());
                ok(json!(true))
            }
            "deleteWebhook" => {
                self.webhook = None;
                ok(json!(true))
            }
            "getUpdates" => {
                if self.webhook.is_some() {
                    return refused(
                        409,
                        "Conflict: can't use getUpdates method while webhook is active; use \
                         deleteWebhook to delete the webhook first",
                    );
                }
                let offset = params["offset"].as_i64().unwrap_or(0);
                let pending: Vec<Value> = self
                    .updates
                    .iter()
                    .filter(|u| u["update_id"].as_i64().unwrap() >= offset)
                    .cloned()
                    .collect();
                ok(json!(pending))
            }
            _ => refused(404, "Not Found"),
        }
    }
}

async fn fake_bot_api(updates: Vec<Value>) -> Fake {
    let state = Arc::new(Mutex::new(BotApi {
        updates,
        ..BotApi::default()
    }));
    Fake::start(move |request| state.lock().unwrap().answer(request)).await
}

fn client(fake: &Fake) -> TelegramClient {
    TelegramClient::new(reqwest::Client::new(), &fake.base, TOKEN)
}

fn assert_json_post(request: &Recorded, method: &str, body: Value) {
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, format!("/bot{TOKEN}/{method}"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.json(), body);
}

// ---------------------------------------------------------------- client calls

#[tokio::test]
async fn get_me_calls_getme_under_the_token() {
    let fake = fake_bot_api(vec![]).await;
    let me = client(&fake).get_me().await.unwrap();
    assert_eq!(
        me,
        BotUser {
            id: 123456789,
            first_name: "Parley".into(),
            username: Some("parley_bot".into()),
        }
    );
    assert_json_post(&fake.single_request(), "getMe", json!({}));
}

#[tokio::test]
async fn api_base_may_end_with_a_slash() {
    let fake = fake_bot_api(vec![]).await;
    let client = TelegramClient::new(reqwest::Client::new(), &format!("{}/", fake.base), TOKEN);
    client.get_me().await.unwrap();
    assert_eq!(fake.single_request().path, format!("/bot{TOKEN}/getMe"));
}

#[tokio::test]
async fn send_message_posts_chat_id_and_text() {
    let fake = fake_bot_api(vec![]).await;
    let sent = client(&fake)
        .send_message("4242", "Hello Ann")
        .await
        .unwrap();
    assert_eq!(
        sent,
        vec![Sent {
            message_id: "1".into()
        }]
    );
    assert_json_post(
        &fake.single_request(),
        "sendMessage",
        json!({"chat_id": 4242, "text": "Hello Ann"}),
    );
}

#[tokio::test]
async fn send_message_to_a_channel_username_sends_it_as_a_string() {
    let fake = fake_bot_api(vec![]).await;
    client(&fake)
        .send_message("@cards", "Hi")
        .await
        .unwrap_err();
    assert_eq!(
        fake.single_request().json(),
        json!({"chat_id": "@cards", "text": "Hi"})
    );
}

#[tokio::test]
async fn send_message_splits_long_multibyte_text_at_4096_characters() {
    let fake = fake_bot_api(vec![]).await;
    let text = multibyte_text(2 * MAX_TEXT_CHARS + 5);
    let sent = client(&fake).send_message("-100", &text).await.unwrap();
    assert_eq!(
        sent,
        ["1", "2", "3"]
            .map(|id| Sent {
                message_id: id.into()
            })
            .to_vec()
    );
    let texts: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.path, format!("/bot{TOKEN}/sendMessage"));
            assert_eq!(r.json()["chat_id"], json!(-100));
            r.json()["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let lengths: Vec<usize> = texts.iter().map(|t| t.chars().count()).collect();
    assert_eq!(lengths, [MAX_TEXT_CHARS, MAX_TEXT_CHARS, 5]);
    assert_eq!(texts.concat(), text);
}

#[tokio::test]
async fn send_message_of_exactly_4096_characters_is_one_message() {
    let fake = fake_bot_api(vec![]).await;
    let text = multibyte_text(MAX_TEXT_CHARS);
    let sent = client(&fake).send_message("1", &text).await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(fake.single_request().json()["text"], json!(text));
}

#[tokio::test]
async fn send_message_splits_long_prose_at_a_line_break() {
    let fake = fake_bot_api(vec![]).await;
    let paragraph = "Premium Debit costs €12.90 per month. ".repeat(60);
    let text = format!("{paragraph}\n{paragraph}\n{paragraph}");
    let sent = client(&fake).send_message("1", &text).await.unwrap();
    let texts: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), texts.len());
    assert_eq!(texts.concat(), text);
    assert!(texts.len() >= 2);
    assert!(texts.iter().all(|t| t.chars().count() <= MAX_TEXT_CHARS));
    assert!(
        texts[0].ends_with('\n'),
        "{:?}",
        &texts[0][texts[0].len() - 20..]
    );
}

#[tokio::test]
async fn edit_message_text_sends_ids_and_text() {
    let fake = fake_bot_api(vec![]).await;
    let client = client(&fake);
    let sent = client.send_message("7", "Thinking…").await.unwrap();
    client
        .edit_message_text("7", &sent[0].message_id, "Premium costs €12.90.")
        .await
        .unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_json_post(
        &requests[1],
        "editMessageText",
        json!({"chat_id": 7, "message_id": 1, "text": "Premium costs €12.90."}),
    );
}

#[tokio::test]
async fn editing_to_the_same_text_is_not_an_error() {
    let fake = fake_bot_api(vec![]).await;
    let client = client(&fake);
    let sent = client.send_message("7", "Same").await.unwrap();
    assert_eq!(
        client
            .edit_message_text("7", &sent[0].message_id, "Same")
            .await,
        Ok(())
    );
    // Other 400s stay errors.
    assert_eq!(
        client.edit_message_text("7", "999", "Other").await,
        Err(ConnectorError::Refused {
            platform: "telegram",
            status: 400,
            code: "400".into(),
            message: "Bad Request: message to edit not found".into(),
        })
    );
}

#[tokio::test]
async fn send_typing_sends_the_typing_chat_action() {
    let fake = fake_bot_api(vec![]).await;
    client(&fake).send_typing("-5").await.unwrap();
    assert_json_post(
        &fake.single_request(),
        "sendChatAction",
        json!({"chat_id": -5, "action": "typing"}),
    );
}

#[tokio::test]
async fn webhook_set_and_delete_and_polling_conflict() {
    let fake = fake_bot_api(vec![]).await;
    let client = client(&fake);
    client
        .set_webhook(
            "https://parley.example/telegram/hook",
            "s3cret",
            &["message"],
        )
        .await
        .unwrap();
    // With a webhook set, polling conflicts.
    assert_eq!(
        client.get_updates(0, 0).await,
        Err(ConnectorError::Refused {
            platform: "telegram",
            status: 409,
            code: "conflict".into(),
            message: "Conflict: can't use getUpdates method while webhook is active; use \
                      deleteWebhook to delete the webhook first"
                .into(),
        })
    );
    client.delete_webhook().await.unwrap();
    assert_eq!(client.get_updates(0, 0).await, Ok(vec![]));

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    assert_json_post(
        &requests[0],
        "setWebhook",
        json!({"url": "https://parley.example/telegram/hook", "secret_token": "s3cret",
               "allowed_updates": ["message"]}),
    );
    assert_json_post(
        &requests[1],
        "getUpdates",
        json!({"offset": 0, "timeout": 0}),
    );
    assert_json_post(&requests[2], "deleteWebhook", json!({}));
}

#[tokio::test]
async fn get_updates_parses_each_update_and_keeps_every_id() {
    let mut second = text_update();
    second["update_id"] = json!(11);
    second["message"]["text"] = json!("second");
    let updates = vec![
        json!({"update_id": 9, "edited_message": text_update()["message"]}),
        json!({"update_id": 10, "message": {"message_id": "broken"}}),
        second,
    ];
    let fake = fake_bot_api(updates).await;
    let polled = client(&fake).get_updates(10, 25).await.unwrap();
    assert_json_post(
        &fake.single_request(),
        "getUpdates",
        json!({"offset": 10, "timeout": 25}),
    );
    assert_eq!(polled.len(), 2);
    assert_eq!(polled[0].update_id, 10);
    assert!(matches!(
        polled[0].delivery,
        Err(ConnectorError::Malformed(_))
    ));
    let Polled {
        update_id: 11,
        delivery: Ok(Delivery::Message(message)),
    } = &polled[1]
    else {
        panic!("{:?}", polled[1]);
    };
    assert_eq!(
        (message.dedup_id.as_str(), message.text.as_str()),
        ("11", "second")
    );
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn rate_limits_wait_as_long_as_the_body_says() {
    let fake = fake_bot_api(vec![]).await;
    fake.queue(Reply::json(
        429,
        json!({"ok": false, "error_code": 429,
               "description": "Too Many Requests: retry after 37",
               "parameters": {"retry_after": 37}}),
    ));
    assert_eq!(
        client(&fake).send_message("1", "hi").await,
        Err(ConnectorError::RateLimited(Duration::from_secs(37)))
    );
}

#[tokio::test]
async fn refusals_carry_error_code_and_description() {
    let fake = fake_bot_api(vec![]).await;
    assert_eq!(
        client(&fake).send_message("404", "hi").await,
        Err(ConnectorError::Refused {
            platform: "telegram",
            status: 400,
            code: "400".into(),
            message: "Bad Request: chat not found".into(),
        })
    );
    fake.queue(refused(403, "Forbidden: bot was blocked by the user"));
    assert_eq!(
        client(&fake).send_typing("5").await,
        Err(ConnectorError::Refused {
            platform: "telegram",
            status: 403,
            code: "403".into(),
            message: "Forbidden: bot was blocked by the user".into(),
        })
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_as_unauthorized() {
    let fake = fake_bot_api(vec![]).await;
    let wrong = TelegramClient::new(reqwest::Client::new(), &fake.base, "1:wrong");
    assert_eq!(
        wrong.get_me().await,
        Err(ConnectorError::Refused {
            platform: "telegram",
            status: 401,
            code: "401".into(),
            message: "Unauthorized".into(),
        })
    );
}

#[tokio::test]
async fn unreadable_answers_are_transport_errors() {
    let fake = fake_bot_api(vec![]).await;
    fake.queue(Reply {
        status: 502,
        headers: vec![("content-type", "text/html".into())],
        body: "<html>Bad Gateway</html>".into(),
    });
    let err = client(&fake).send_message("1", "hi").await.unwrap_err();
    assert!(matches!(err, ConnectorError::Transport(_)), "{err:?}");
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn the_bot_token_never_appears_in_errors() {
    let fake = fake_bot_api(vec![]).await;
    fake.queue(Reply {
        status: 500,
        headers: vec![],
        body: "oops".into(),
    });
    fake.queue(refused(400, "Bad Request: chat not found"));
    let live = client(&fake);
    let dead = TelegramClient::new(reqwest::Client::new(), &dead_base().await, TOKEN);
    let slow = TelegramClient::new(
        reqwest::Client::builder()
            .timeout(Duration::from_millis(1))
            .build()
            .unwrap(),
        "http://10.255.255.1:81",
        TOKEN,
    );
    let errors = vec![
        live.get_me().await.unwrap_err(),
        live.send_message("1", "x").await.unwrap_err(),
        dead.get_me().await.unwrap_err(),
        dead.get_updates(0, 0).await.unwrap_err(),
        slow.send_typing("1").await.unwrap_err(),
    ];
    for err in &errors {
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains("AAH-s3cret"), "{shown}");
    }
    assert!(matches!(errors[2], ConnectorError::Transport(_)));
    assert!(
        errors[2].to_string().to_lowercase().contains("connect"),
        "the cause is kept: {}",
        errors[2]
    );
    assert!(!format!("{live:?}").contains(TOKEN));
}
