//! Operator handoff: the AI hands a conversation to a person on shift (or says nobody
//! is there), operators work it from the inbox — assigned by schedule, messages to the
//! customer's channel in order with theirs, internal notes, COPILOT drafts — and resolve,
//! escalate or give it back.

use chrono::{Datelike, TimeDelta, Utc};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::support::*;

const NO_OPERATOR: &str = "No one from our team is available right now";
const HANDED_OVER: &str = "I'm handing you over to a colleague";

fn agent_yaml() -> &'static str {
    r#"
name: Support
greeting: Hi there!
workflow:
  - name: Main
    kind: StateConfig
    init_state: true
    description: Answer questions.
    available_tools: [SendChatMessage, TransferToOperator]
knowledge:
  faq:
    - question: What are your opening hours?
      answer: We are open from 9 to 17.
"#
}

fn roles(log: &[Value]) -> Vec<(String, String)> {
    log.iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn conversation(t: &TestServer, token: &str, session: &str) -> Value {
    let (status, c) = t
        .call_as(
            Method::GET,
            &format!("/api/v1/conversations/{session}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c
}

#[tokio::test]
async fn the_ai_hands_over_to_an_operator_and_takes_the_conversation_back() {
    let t = TestServer::start().await;
    let agent = t.agent(agent_yaml()).await;
    let session = t.session(&agent, json!({"user_id": "cust-1"})).await;

    // Nobody on shift: the AI says so and keeps the conversation.
    let answer = t
        .say(&agent, &session, "Can I talk to a human please?")
        .await;
    assert!(
        answer["response"].as_str().unwrap().contains(NO_OPERATOR),
        "{answer}"
    );
    assert_eq!(t.get_session(&agent, &session).await["mode"], "REGULAR");

    let (olga, olga_token) = t.staff("operator", "olga@example.com", Value::Null).await;
    // The operators' live feed.
    let mut feed = ws_with_token(&t, "/ws/conversations", &olga_token)
        .await
        .unwrap();
    // The customer's own socket on the session.
    let cust_url = format!(
        "{}/chatbot/{}/ws/{session}?token={}",
        t.base.replace("http", "ws"),
        agent.id,
        agent.token
    );
    let (mut customer, _) = tokio_tungstenite::connect_async(cust_url).await.unwrap();

    let answer = t.say(&agent, &session, "I want a real person").await;
    assert!(
        answer["response"]
            .as_str()
            .unwrap()
            .starts_with(HANDED_OVER),
        "{answer}"
    );
    assert_eq!(t.get_session(&agent, &session).await["mode"], "OPERATOR");
    // From now on the AI is silent.
    let answer = t.say(&agent, &session, "hello? anyone?").await;
    assert_eq!(answer["response"], "", "{answer}");

    // The inbox shows it unassigned; Olga takes it.
    let (status, inbox) = t
        .call_as(
            Method::GET,
            "/api/v1/conversations?mode=OPERATOR&assignee=none&status=active",
            &olga_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{inbox}");
    assert_eq!(inbox["total"], 1, "{inbox}");
    assert_eq!(inbox["conversations"][0]["session_id"], session.as_str());
    let (status, c) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/assign"),
            &olga_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, c["assignee"].as_str()),
        (StatusCode::OK, Some(olga.as_str())),
        "{c}"
    );
    let (_, mine) = t
        .call_as(
            Method::GET,
            "/api/v1/conversations?assignee=me",
            &olga_token,
            None,
        )
        .await;
    assert_eq!(mine["total"], 1);

    let (status, m) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/messages"),
            &olga_token,
            Some(json!({"text": "Hi, I'm Olga. How can I help?"})),
        )
        .await;
    assert_eq!(
        (status, m["role"].as_str()),
        (StatusCode::CREATED, Some("OPERATOR")),
        "{m}"
    );
    let (status, _) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/messages"),
            &olga_token,
            Some(json!({"text": "VIP, be nice", "role": "NOTES"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The customer got the operator's message on their socket, and never the note.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(WsMessage::Text(text)))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), customer.next()).await
    {
        seen.push(text.to_string());
    }
    assert!(seen.iter().any(|e| e.contains("Hi, I'm Olga")), "{seen:?}");
    assert!(!seen.iter().any(|e| e.contains("VIP")), "{seen:?}");
    let log = t.log(&agent, &session).await;
    assert!(roles(&log).contains(&("OPERATOR".into(), "Hi, I'm Olga. How can I help?".into())));
    assert!(
        !roles(&log).iter().any(|(r, _)| r == "NOTES"),
        "the customer's log has no notes"
    );
    let c = conversation(&t, &olga_token, &session).await;
    assert!(
        roles(c["messages"].as_array().unwrap()).contains(&("NOTES".into(), "VIP, be nice".into()))
    );

    // COPILOT: the AI drafts, Olga sends.
    let (status, c) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/mode"),
            &olga_token,
            Some(json!({"mode": "COPILOT"})),
        )
        .await;
    assert_eq!(
        (status, c["mode"].as_str()),
        (StatusCode::OK, Some("COPILOT")),
        "{c}"
    );
    let answer = t
        .say(&agent, &session, "What are your opening hours?")
        .await;
    assert_eq!(
        answer["response"], "",
        "the draft is not the customer's: {answer}"
    );
    let c = conversation(&t, &olga_token, &session).await;
    let draft = roles(c["messages"].as_array().unwrap())
        .into_iter()
        .rev()
        .find(|(r, _)| r == "COPILOT")
        .unwrap();
    assert_eq!(draft.1, "We are open from 9 to 17.");
    t.call_as(
        Method::POST,
        &format!("/api/v1/conversations/{session}/messages"),
        &olga_token,
        Some(json!({"text": format!("{} See you!", draft.1)})),
    )
    .await;
    assert!(!roles(&t.log(&agent, &session).await)
        .iter()
        .any(|(r, _)| r == "COPILOT"));

    // Given back: the AI answers again, with the whole history.
    let (status, c) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/return"),
            &olga_token,
            None,
        )
        .await;
    assert_eq!(
        (status, c["mode"].as_str(), c["assignee"].clone()),
        (StatusCode::OK, Some("REGULAR"), Value::Null),
        "{c}"
    );
    let answer = t
        .say(&agent, &session, "What are your opening hours?")
        .await;
    assert_eq!(answer["response"], "We are open from 9 to 17.");
    let log = roles(&t.log(&agent, &session).await);
    assert!(
        log.iter()
            .any(|(r, t)| r == "AI" && t.starts_with("You're back")),
        "{log:?}"
    );
    assert_eq!(
        log.iter().filter(|(r, _)| r == "OPERATOR").count(),
        2,
        "{log:?}"
    );

    // The operators' feed saw the messages and the mode changes.
    let mut feed_events = Vec::new();
    while let Ok(Some(Ok(WsMessage::Text(text)))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), feed.next()).await
    {
        feed_events.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    let kinds: Vec<&str> = feed_events
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"NEW_MESSAGE") && kinds.contains(&"MODE_CHANGED"),
        "{kinds:?}"
    );
    assert!(
        feed_events.iter().any(|e| e["role"] == "NOTES"),
        "operators see notes"
    );
    let _ = feed.close(None).await;

    // Resolve and escalate close the conversation with those statuses.
    let s2 = t.session(&agent, json!({})).await;
    let (status, c) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{s2}/resolve"),
            &olga_token,
            None,
        )
        .await;
    assert_eq!(
        (status, c["status"].as_str()),
        (StatusCode::OK, Some("resolved_by_operator")),
        "{c}"
    );
    let s3 = t.session(&agent, json!({})).await;
    let (_, c) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{s3}/escalate"),
            &olga_token,
            None,
        )
        .await;
    assert_eq!(c["status"], "escalated_by_operator");
    let (status, _) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{s3}/messages"),
            &olga_token,
            Some(json!({"text": "too late"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn customer_and_operator_typing_at_once_keep_their_order() {
    let t = TestServer::start().await;
    let agent = t.agent(agent_yaml()).await;
    let (_, op) = t.staff("operator", "olga@example.com", Value::Null).await;
    let session = t.session(&agent, json!({})).await;
    let (status, _) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/mode"),
            &op,
            Some(json!({"mode": "OPERATOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let customer = async {
        for i in 0..15 {
            t.say(&agent, &session, &format!("customer {i}")).await;
        }
    };
    let operator = async {
        for i in 0..15 {
            let (status, body) = t
                .call_as(
                    Method::POST,
                    &format!("/api/v1/conversations/{session}/messages"),
                    &op,
                    Some(json!({"text": format!("operator {i}")})),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    };
    tokio::join!(customer, operator);
    let log = t.log(&agent, &session).await;
    let ids: Vec<i64> = log.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    for who in ["customer", "operator"] {
        let mine: Vec<String> = log
            .iter()
            .filter_map(|m| m["text"].as_str())
            .filter(|t| t.starts_with(who))
            .map(str::to_string)
            .collect();
        let expected: Vec<String> = (0..15).map(|i| format!("{who} {i}")).collect();
        assert_eq!(mine, expected, "every {who} message, in order");
    }
}

#[tokio::test]
async fn only_operators_on_shift_take_conversations() {
    let t = TestServer::start().await;
    let agent = t.agent(agent_yaml()).await;
    let now = Utc::now();
    let day = |d: chrono::Weekday| d.to_string().to_lowercase()[..3].to_string();
    // Off today (UTC, the tenant's zone): a shift on tomorrow only.
    let tomorrow = day((now + TimeDelta::days(1)).weekday());
    let (off, _) = t
        .staff(
            "operator",
            "off@example.com",
            json!({"days": [tomorrow], "from": "00:00", "to": "00:00"}),
        )
        .await;
    let session = t.session(&agent, json!({})).await;
    let answer = t.say(&agent, &session, "human please").await;
    assert!(
        answer["response"].as_str().unwrap().contains(NO_OPERATOR),
        "off shift is nobody: {answer}"
    );
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{session}/assign"),
            Some(json!({"user_id": off})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on shift"),
        "{body}"
    );
    let (viewer, _) = t.staff("viewer", "vic@example.com", Value::Null).await;
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{session}/assign"),
            Some(json!({"user_id": viewer})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "viewers are not operators");
    // On shift: an hour either side of now, today.
    let (from, to) = (
        (now - TimeDelta::hours(1)).format("%H:%M").to_string(),
        (now + TimeDelta::hours(1)).format("%H:%M").to_string(),
    );
    let start_day = day((now - TimeDelta::hours(1)).weekday());
    let (on, _) = t
        .staff(
            "operator",
            "on@example.com",
            json!({"days": [start_day], "from": from, "to": to}),
        )
        .await;
    let (status, c) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{session}/assign"),
            Some(json!({"user_id": on})),
        )
        .await;
    assert_eq!(
        (status, c["assignee"].as_str(), c["mode"].as_str()),
        (StatusCode::OK, Some(on.as_str()), Some("OPERATOR")),
        "{c}"
    );
    let log = roles(&t.log(&agent, &session).await);
    assert!(
        log.last().unwrap().1.starts_with(HANDED_OVER),
        "the customer is told: {log:?}"
    );
    // The API key has no user of its own: it names one.
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{session}/assign"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, c) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{session}/assign"),
            Some(json!({"unassign": true})),
        )
        .await;
    assert_eq!(
        (status, c["assignee"].clone()),
        (StatusCode::OK, Value::Null)
    );
}

mod telegram {
    use super::*;
    use crate::channels::telegram::{deliver, sent_texts, telegram, update, TOKEN};
    use crate::channels::{act, assign, connection};

    #[tokio::test]
    async fn a_telegram_customer_gets_the_operator_in_order() {
        let t =
            TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into()))
                .await;
        let fake = telegram().await;
        let agent = t.agent(agent_yaml()).await;
        let conn = connection(
            &t,
            "telegram",
            json!({"bot_token": TOKEN, "api_base": fake.base}),
            json!({}),
        )
        .await;
        assign(&t, &agent, &conn).await;
        assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
        let secret = fake.requests_to(&format!("/bot{TOKEN}/setWebhook"))[0].json()["secret_token"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, op) = t.staff("operator", "olga@example.com", Value::Null).await;
        const CHAT: i64 = 5151;

        let resp = deliver(&t, &conn, &secret, &update(9001, CHAT, "I need a human")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        eventually(10, "the hand-over notice", || async {
            sent_texts(&fake, CHAT)
                .iter()
                .any(|s| s.starts_with(HANDED_OVER))
        })
        .await;
        let (_, inbox) = t
            .call_as(
                Method::GET,
                "/api/v1/conversations?mode=OPERATOR",
                &op,
                None,
            )
            .await;
        let session = inbox["conversations"][0]["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(inbox["conversations"][0]["ext_type"], "telegram", "{inbox}");

        // Both type at once: the operator's messages reach Telegram in order, the
        // customer's reach the log in order, and the AI says nothing.
        let customer = async {
            for i in 0..5 {
                let r = deliver(
                    &t,
                    &conn,
                    &secret,
                    &update(9100 + i, CHAT, &format!("customer {i}")),
                )
                .await;
                assert_eq!(r.status(), StatusCode::OK);
            }
        };
        let operator = async {
            for i in 0..5 {
                let (status, body) = t
                    .call_as(
                        Method::POST,
                        &format!("/api/v1/conversations/{session}/messages"),
                        &op,
                        Some(json!({"text": format!("operator {i}")})),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
            }
        };
        tokio::join!(customer, operator);
        eventually(10, "every customer message logged", || async {
            let c = conversation(&t, &op, &session).await;
            c["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "HUMAN")
                .count()
                == 6
        })
        .await;
        let sent = sent_texts(&fake, CHAT);
        let operator_sent: Vec<&String> =
            sent.iter().filter(|s| s.starts_with("operator")).collect();
        assert_eq!(
            operator_sent,
            (0..5)
                .map(|i| format!("operator {i}"))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(
            sent.len(),
            6,
            "the notice and the operator's five, no AI answers: {sent:?}"
        );
        let c = conversation(&t, &op, &session).await;
        let humans: Vec<&str> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "HUMAN")
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            &humans[1..],
            [
                "customer 0",
                "customer 1",
                "customer 2",
                "customer 3",
                "customer 4"
            ]
        );

        // Back to the AI: the customer is told on Telegram, and the AI answers again.
        t.call_as(
            Method::POST,
            &format!("/api/v1/conversations/{session}/return"),
            &op,
            None,
        )
        .await;
        deliver(
            &t,
            &conn,
            &secret,
            &update(9200, CHAT, "What are your opening hours?"),
        )
        .await;
        eventually(10, "the AI answers on Telegram again", || async {
            sent_texts(&fake, CHAT)
                .last()
                .is_some_and(|s| s == "We are open from 9 to 17.")
        })
        .await;
        assert!(sent_texts(&fake, CHAT)
            .iter()
            .any(|s| s.starts_with("You're back")));
    }

    /// A Telegram session stored before sessions had a typed channel reference (its chat
    /// only in `kwargs`) still gets the operator's messages: the connection's chat map
    /// vouches for it.
    #[tokio::test]
    async fn sessions_stored_before_the_channel_reference_still_reach_their_chat() {
        use parley_engine::store::{SessionWrites, Write};
        let t =
            TestServer::start_with(|c| c.node.public_url = Some("https://parley.example".into()))
                .await;
        let fake = telegram().await;
        let agent = t.agent(agent_yaml()).await;
        let conn = connection(
            &t,
            "telegram",
            json!({"bot_token": TOKEN, "api_base": fake.base}),
            json!({}),
        )
        .await;
        assign(&t, &agent, &conn).await;
        assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
        let secret = fake.requests_to(&format!("/bot{TOKEN}/setWebhook"))[0].json()["secret_token"]
            .as_str()
            .unwrap()
            .to_string();
        const CHAT: i64 = 6262;
        let resp = deliver(&t, &conn, &secret, &update(9301, CHAT, "hello")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let session = eventually_session(&t).await;
        eventually(10, "the AI answers on Telegram", || async {
            !sent_texts(&fake, CHAT).is_empty()
        })
        .await;

        // Rewritten the way older builds stored it, with no live actor holding it. A
        // session still finishing its turn is not idle yet: passivation is asked again.
        eventually(10, "the session passivates", || async {
            t.node()
                .passivate_idle(0, parley_actors::node::ActorScope::Node)
                .await;
            t.node().resident_sessions() == 0
        })
        .await;
        let store = &t.node().shared().store;
        let id = session.parse().unwrap();
        let epoch = store.claim_session(id).await.unwrap().unwrap();
        let mut old = store.load_session(id).await.unwrap().unwrap();
        assert!(old.channel.is_some(), "new sessions carry the reference");
        old.channel = None;
        old.kwargs.insert("connection_id".into(), json!(conn));
        old.kwargs.insert("chat_id".into(), json!(CHAT.to_string()));
        store
            .commit(&[SessionWrites {
                session: id,
                epoch,
                writes: vec![Write::Session(Box::new(old))],
            }])
            .await
            .unwrap();

        for (path, body) in [
            ("mode", json!({"mode": "OPERATOR"})),
            ("messages", json!({"text": "an operator here"})),
        ] {
            let (status, b) = t
                .call(
                    Method::POST,
                    &format!("/api/v1/conversations/{session}/{path}"),
                    Some(body),
                )
                .await;
            assert!(status.is_success(), "{path}: {status} {b}");
        }
        eventually(10, "the operator's message reaches Telegram", || async {
            sent_texts(&fake, CHAT)
                .iter()
                .any(|s| s == "an operator here")
        })
        .await;
    }

    async fn eventually_session(t: &TestServer) -> String {
        let mut found = String::new();
        for _ in 0..100 {
            let (_, inbox) = t.call(Method::GET, "/api/v1/conversations", None).await;
            if let Some(s) = inbox["conversations"][0]["session_id"].as_str() {
                found = s.to_string();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!found.is_empty(), "the delivery opened a session");
        found
    }
}

#[tokio::test]
async fn a_customer_message_brings_their_conversation_up_the_inbox() {
    let t = TestServer::start().await;
    let agent = t.agent(agent_yaml()).await;
    let (_, op) = t.staff("operator", "olga@example.com", Value::Null).await;
    let (older, newer) = (
        t.session(&agent, json!({})).await,
        t.session(&agent, json!({})).await,
    );
    for s in [&older, &newer] {
        let (status, _) = t
            .call_as(
                Method::POST,
                &format!("/api/v1/conversations/{s}/mode"),
                &op,
                Some(json!({"mode": "OPERATOR"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let order = || async {
        let (_, inbox) = t
            .call_as(
                Method::GET,
                "/api/v1/conversations?mode=OPERATOR",
                &op,
                None,
            )
            .await;
        inbox["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["session_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(order().await, [newer.clone(), older.clone()]);
    t.say(&agent, &older, "still there?").await;
    assert_eq!(order().await, [older, newer]);
}

/// In OPERATOR mode a customer's retry with the same Idempotency-Key is answered as a
/// replay, even after the session passivated: the message is logged once.
#[tokio::test]
async fn operator_mode_retries_are_logged_once() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/api/v1/conversations/{sid}/mode"),
            Some(json!({"mode": "OPERATOR"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let send = || {
        t.run(&a, &sid, "is anyone there?")
            .header("idempotency-key", "retry-1")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    eventually(10, "the session passivates", || async {
        t.node()
            .passivate_idle(0, parley_actors::node::ActorScope::Node)
            .await;
        t.node().resident_sessions() == 0
    })
    .await;
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let humans = t
        .log(&a, &sid)
        .await
        .iter()
        .filter(|m| m["role"] == "HUMAN")
        .count();
    assert_eq!(humans, 1);
}
