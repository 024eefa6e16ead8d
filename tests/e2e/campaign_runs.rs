//! Running campaigns end to end on a manual clock: participants move through their flows
//! (conditions in the right time zone, communications planned into their windows,
//! canceled when their duration runs out), communications go out on WhatsApp, Telegram
//! and the chat API against local fakes, follow their sessions, and planned ones survive
//! a restart and fire once.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use parley_actors::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::channels::fake::{Fake, Recorded, Reply};
use crate::channels::{act, connection};
use crate::support::*;

/// Monday 1 June 2026, 05:00 UTC: 07:00 in Berlin, 01:00 in New York.
fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 5, 0, 0).unwrap()
}

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, h, m, 0).unwrap()
}

async fn server(clock: &Clock) -> TestServer {
    let clock = clock.clone();
    TestServer::start_with(move |c| c.node.clock = clock).await
}

async fn create_campaign(t: &TestServer, fields: Value) -> String {
    let (status, c) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"name": "Payments", "timezone": "Europe/Berlin", "fields": fields})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_string()
}

async fn put_flow(t: &TestServer, campaign: &str, name: &str, yaml: &str) {
    let (status, body) = json_of(
        t.admin(
            Method::PUT,
            &format!("/api/v1/campaigns/{campaign}/flows/{name}"),
        )
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(status.is_success(), "{name}: {status} {body}");
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{campaign}/flows/{name}/activate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn start(t: &TestServer, campaign: &str) {
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{campaign}/start"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Adds participants; answers their ids in order.
async fn add(t: &TestServer, campaign: &str, items: Value) -> Vec<(String, bool)> {
    let (status, body) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{campaign}/participants"),
            Some(items),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["errors"].is_null(), "{r}");
            (
                r["participant_id"].as_str().unwrap().to_string(),
                r["created"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn communications(t: &TestServer, campaign: &str, participant: &str) -> Vec<Value> {
    let (status, body) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{campaign}/participants/{participant}/communications"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["communications"].as_array().unwrap().clone()
}

async fn stats(t: &TestServer, campaign: &str) -> Value {
    let (status, body) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{campaign}/stats"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn participant(t: &TestServer, campaign: &str, external_id: &str) -> Value {
    let (status, body) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{campaign}/participants?external_id={external_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["participants"][0].clone()
}

/// The external ids of the participants a list query finds.
async fn listed(t: &TestServer, campaign: &str, query: &str) -> Vec<String> {
    let (status, body) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{campaign}/participants?{query}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["customer"]["external_id"].as_str().unwrap().to_string())
        .collect()
}

fn node_count(stats: &Value, flow: &str, node: &str) -> u64 {
    stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["flow"] == flow && n["node"] == node)
        .map_or(0, |n| n["count"].as_u64().unwrap())
}

/// Waits until the participant's communications satisfy `check`; answers them.
async fn comms_until(
    t: &TestServer,
    campaign: &str,
    participant: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let all = communications(t, campaign, participant).await;
        if check(&all) {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {all:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn statuses(all: &[Value]) -> Vec<&str> {
    all.iter().map(|c| c["status"].as_str().unwrap()).collect()
}

mod payment_reminder {
    use super::*;
    use crate::channels::whatsapp::{
        deliver, graph_with, notification, sends_to, ACCESS_TOKEN, APP_SECRET, FIRST_NUMBER,
        VERIFY_TOKEN, VERSION,
    };

    fn fields() -> Value {
        json!([
            {"title": "Name", "name": "name", "type": "string", "level": "customer_profile", "import": true},
            {"title": "Paid", "name": "is_payment_received", "type": "bool", "level": "participant", "import": true},
            {"title": "Due", "name": "due_date", "type": "date", "level": "participant", "import": true, "required": true},
            {"title": "Amount", "name": "amount", "type": "float", "level": "participant", "import": true},
            {"title": "Re-uploaded", "name": "reuploaded", "type": "bool", "level": "participant"},
            {"title": "Follow-up", "name": "followup", "type": "string", "level": "participant"}
        ])
    }

    /// The seed's example flow, on WhatsApp.
    fn reminder(agent: &str, conn: &str) -> String {
        format!(
            r#"
nodes:
  - {{id: created, type: participant_created, next: unpaid}}
  - id: unpaid
    type: field_check
    property: participant.is_payment_received
    operator: eq
    value: false
    match: early
    else: stop
  - {{id: early, type: field_check, property: participant.due_date, operator: ge, value: today, days: 3, match: remind_early, else: on_time}}
  - {{id: on_time, type: field_check, property: participant.due_date, operator: ge, value: today, days: 0, match: remind_due}}
  - id: remind_early
    type: start_communication
    name: REMINDED_BEFORE_2D
    channel: whatsapp
    agent_id: {agent}
    connection_id: {conn}
    date: participant.due_date
    days: -2
    from: "09:00"
    to: "20:00"
    duration: "04:00"
    start_phrase: "Hello {{{{ name }}}}, {{{{ amount }}}} EUR are due on {{{{ due_date }}}}."
    template:
      name: payment_reminder
      language: en_US
      components: [{{type: body, parameters: [{{type: text, text: "{{{{ name }}}}"}}]}}]
  - id: remind_due
    type: start_communication
    name: REMINDED_DUE_DATE
    channel: whatsapp
    agent_id: {agent}
    connection_id: {conn}
    from: "09:00"
    to: "20:00"
    duration: "04:00"
    template: {{name: payment_due_today, language: en_US}}
  - {{id: stop, type: cancel_communications}}
"#
        )
    }

    const UPDATES: &str = r#"
nodes:
  - {id: updated, type: participant_updated, next: mark}
  - id: mark
    type: update_field
    assignments: [{property: participant.reuploaded, value: true}]
    next: hand
  - {id: hand, type: to_another_flow, flow: followup}
"#;

    const FOLLOWUP: &str = r#"
nodes:
  - {id: from, type: from_another_flow, next: note}
  - id: note
    type: update_field
    assignments: [{property: participant.followup, from_property: customer.name}]
"#;

    fn outside_window(r: &Recorded) -> Option<Reply> {
        (r.json()["type"] == "text").then(|| {
            Reply::json(
                400,
                json!({"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException",
                                 "code": 131047, "error_data": {"messaging_product": "whatsapp",
                                 "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."},
                                 "fbtrace_id": "Az8or2yhqkZfEZ-_4Qn_Bam"}}),
            )
        })
    }

    fn templates_to(fake: &Fake, to: &str) -> Vec<Value> {
        sends_to(fake, to)
            .into_iter()
            .map(|r| r.json())
            .filter(|b| b["type"] == "template")
            .collect()
    }

    #[tokio::test]
    async fn the_seeds_payment_reminder_runs_in_windows_time_zones_and_durations() {
        let clock = Clock::manual(start_time());
        let t = server(&clock).await;
        let fake = graph_with(outside_window).await;
        let agent = t.agent(&basic_agent("")).await;
        let conn = connection(
            &t,
            "whatsapp",
            json!({"app_id": "1234567890", "app_secret": APP_SECRET, "access_token": ACCESS_TOKEN,
                   "phone_number_ids": [FIRST_NUMBER], "business_account_id": "102290129340398",
                   "verify_token": VERIFY_TOKEN, "api_base": format!("{}{VERSION}", fake.base)}),
            json!({}),
        )
        .await;
        assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
        let campaign = create_campaign(&t, fields()).await;
        put_flow(&t, &campaign, "reminder", &reminder(&agent.id, &conn)).await;
        put_flow(&t, &campaign, "updates", UPDATES).await;
        put_flow(&t, &campaign, "followup", FOLLOWUP).await;

        // Uploaded before the start: their triggers wait for it.
        let ids = add(
            &t,
            &campaign,
            json!([
                // Due in 9 days: two days before, at 09:00 Berlin.
                {"attributes": {"external_id": "ann", "name": "Ann", "phone": "+49 151 0000001",
                                "due_date": "2026-06-10", "is_payment_received": false, "amount": 120.5}},
                // Due today (Berlin): today at 09:00 Berlin.
                {"attributes": {"external_id": "bob", "name": "Bob", "phone": "+49 151 0000002",
                                "due_date": "2026-06-01", "is_payment_received": false}},
                // Paid: nothing planned.
                {"attributes": {"external_id": "cid", "name": "Cid", "phone": "+49 151 0000003",
                                "due_date": "2026-06-01", "is_payment_received": true}},
                // Overdue: the flow ends at an unconnected port.
                {"attributes": {"external_id": "dan", "name": "Dan", "phone": "+49 151 0000004",
                                "due_date": "2026-05-20", "is_payment_received": false}},
                // In New York it is still 1 June at 01:00: today at 09:00 New York time.
                {"attributes": {"external_id": "eve", "name": "Eve", "phone": "+1 212 555 0005",
                                "due_date": "2026-06-01", "is_payment_received": false},
                 "timezone": "America/New_York"}
            ]),
        )
        .await;
        assert!(ids.iter().all(|(_, created)| *created));
        let [ann, bob, cid, dan, eve] = [0, 1, 2, 3, 4].map(|i| ids[i].0.clone());
        let s = stats(&t, &campaign).await;
        assert_eq!(s["participants"], json!({"total": 5, "pending": 5}), "{s}");
        assert_eq!(listed(&t, &campaign, "status=pending").await.len(), 5);
        assert_eq!(s["communications"]["total"], 0);

        start(&t, &campaign).await;
        let planned = |all: &[Value]| statuses(all) == ["Planned"];
        let a = comms_until(&t, &campaign, &ann, "Ann planned", planned).await;
        assert_eq!(a[0]["name"], "REMINDED_BEFORE_2D");
        assert_eq!(a[0]["channel"], "whatsapp");
        assert_eq!(a[0]["scheduled_at"], "2026-06-08T07:00:00+00:00");
        assert_eq!(a[0]["cancel_at"], "2026-06-08T11:00:00+00:00");
        let b = comms_until(&t, &campaign, &bob, "Bob planned", planned).await;
        assert_eq!(b[0]["name"], "REMINDED_DUE_DATE");
        assert_eq!(b[0]["scheduled_at"], "2026-06-01T07:00:00+00:00");
        let e = comms_until(&t, &campaign, &eve, "Eve planned", planned).await;
        assert_eq!(e[0]["scheduled_at"], "2026-06-01T13:00:00+00:00");
        eventually(10, "every trigger ran", || async {
            stats(&t, &campaign).await["participants"]["pending"] == 0
        })
        .await;
        assert!(communications(&t, &campaign, &cid).await.is_empty());
        assert!(communications(&t, &campaign, &dan).await.is_empty());
        // Filters: who has something under way, who does not, and by name in any case.
        let mut active = listed(&t, &campaign, "status=active").await;
        active.sort();
        assert_eq!(active, ["ann", "bob", "eve"]);
        let mut idle = listed(&t, &campaign, "status=idle").await;
        idle.sort();
        assert_eq!(idle, ["cid", "dan"]);
        assert_eq!(listed(&t, &campaign, "name=bO").await, ["bob"]);
        assert_eq!(
            listed(&t, &campaign, "name=b%25&status=active").await,
            Vec::<String>::new()
        );
        let (status, body) = t
            .call(
                Method::GET,
                &format!("/api/v1/campaigns/{campaign}/participants?status=asleep"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pending, active, idle"));
        let s = stats(&t, &campaign).await;
        assert_eq!(node_count(&s, "reminder", "created"), 5, "{s}");
        assert_eq!(node_count(&s, "reminder", "stop"), 1, "{s}");
        assert_eq!(node_count(&s, "reminder", "on_time"), 3, "{s}");
        assert_eq!(node_count(&s, "reminder", "remind_due"), 2, "{s}");
        assert_eq!(
            s["communications"]["by_status"],
            json!({"Planned": 3}),
            "{s}"
        );

        // Before the window opens nothing goes out.
        clock.set(at(6, 59));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(templates_to(&fake, "491510000002").is_empty());
        // 09:00 in Berlin: Bob's template; Eve waits for New York's morning.
        clock.set(at(7, 0));
        let b = comms_until(&t, &campaign, &bob, "Bob started", |all| {
            statuses(all) == ["Started"]
        })
        .await;
        // Started is claimed before the send goes out.
        eventually(10, "Bob's template sent", || async {
            !templates_to(&fake, "491510000002").is_empty()
        })
        .await;
        let sent = templates_to(&fake, "491510000002");
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["template"]["name"], "payment_due_today");
        assert!(b[0]["session_id"].is_string());
        assert!(templates_to(&fake, "12125550005").is_empty());

        // WhatsApp reports the template delivered, then read. (The fake numbers the
        // messages it accepts; Bob's is the first.)
        let message_id = "wamid.OUT1";
        let status = |s: &str| {
            json!({"id": message_id, "status": s, "timestamp": "1780290000",
                   "recipient_id": "491510000002"})
        };
        let body = notification(FIRST_NUMBER, vec![], vec![status("delivered")]);
        assert_eq!(deliver(&t, &conn, &body).await.status(), StatusCode::OK);
        comms_until(&t, &campaign, &bob, "Bob delivered", |all| {
            statuses(all) == ["Delivered"]
        })
        .await;
        let body = notification(FIRST_NUMBER, vec![], vec![status("read")]);
        assert_eq!(deliver(&t, &conn, &body).await.status(), StatusCode::OK);
        comms_until(&t, &campaign, &bob, "Bob read", |all| {
            statuses(all) == ["Read"]
        })
        .await;

        clock.set(at(13, 0));
        comms_until(&t, &campaign, &eve, "Eve started", |all| {
            statuses(all) == ["Started"]
        })
        .await;
        eventually(10, "Eve's template sent", || async {
            !templates_to(&fake, "12125550005").is_empty()
        })
        .await;
        assert_eq!(templates_to(&fake, "12125550005").len(), 1);

        // Ann is re-uploaded: participant_updated (not created) runs the updates flow,
        // which hands her to the follow-up flow; her planned reminder stays one.
        let again = add(
            &t,
            &campaign,
            json!([{"attributes": {"external_id": "ann", "due_date": "2026-06-10", "amount": 99}}]),
        )
        .await;
        assert_eq!(again, vec![(ann.clone(), false)]);
        eventually(10, "Ann's update ran", || async {
            let p = participant(&t, &campaign, "ann").await;
            p["attributes"]["reuploaded"] == true && p["attributes"]["followup"] == "Ann"
        })
        .await;
        let s = stats(&t, &campaign).await;
        assert_eq!(node_count(&s, "reminder", "created"), 5, "{s}");
        assert_eq!(node_count(&s, "updates", "updated"), 1, "{s}");
        assert_eq!(node_count(&s, "followup", "note"), 1, "{s}");
        assert_eq!(communications(&t, &campaign, &ann).await.len(), 1);

        // The node was down through Ann's window: when the clock comes back after her
        // duration ran out, the reminder is canceled, never sent.
        clock.set(Utc.with_ymd_and_hms(2026, 6, 8, 11, 30, 0).unwrap());
        let a = comms_until(&t, &campaign, &ann, "Ann canceled", |all| {
            statuses(all) == ["Canceled"]
        })
        .await;
        assert!(
            a[0]["reason"].as_str().unwrap().contains("duration"),
            "{a:?}"
        );
        assert!(sends_to(&fake, "491510000001").is_empty());
        let s = stats(&t, &campaign).await;
        assert_eq!(
            s["communications"]["by_status"],
            json!({"Read": 1, "Started": 1, "Canceled": 1}),
            "{s}"
        );
        assert_eq!(s["communications"]["by_channel"], json!({"whatsapp": 3}));
    }
}

mod telegram {
    use super::*;
    use crate::channels::assign;
    use crate::channels::telegram::{deliver, sent_texts, telegram, update, TOKEN};

    fn fields() -> Value {
        json!([
            {"title": "Name", "name": "name", "type": "string", "level": "customer_profile", "import": true},
            {"title": "Status", "name": "status", "type": "string", "level": "participant"},
            {"title": "Fallback", "name": "fallback", "type": "string", "level": "participant"}
        ])
    }

    /// What a flow can do when a communication changes: here, note why one failed.
    const FALLBACK: &str = r#"
nodes:
  - {id: changed, type: communication_updated, next: failed}
  - {id: failed, type: field_check, property: result.communication_status, operator: eq, value: Failed, match: note}
  - id: note
    type: update_field
    assignments: [{property: participant.fallback, from_property: result.communication_name}]
"#;

    fn flows(agent: &str, conn: &str) -> (String, &'static str) {
        (
            format!(
                r#"
nodes:
  - {{id: created, type: participant_created, next: talk}}
  - id: talk
    type: start_communication
    name: WELCOME
    channel: telegram
    agent_id: {agent}
    connection_id: {conn}
    duration: "01:00"
    start_phrase: "Hello {{{{ name }}}}! Shall we talk about your order?"
    context: [customer.name]
"#
            ),
            r#"
nodes:
  - {id: ended, type: communication_ended, next: got_email}
  - {id: got_email, type: field_check, property: result.HumanEmail, operator: is_set, match: keep, else: none}
  - id: keep
    type: update_field
    assignments: [{property: participant.status, from_property: result.HumanEmail}]
  - id: none
    type: update_field
    assignments: [{property: participant.status, value: no answer}]
"#,
        )
    }

    #[tokio::test]
    async fn telegram_communications_open_a_session_follow_replies_and_end_with_results() {
        let clock = Clock::manual(start_time());
        let t = {
            let clock = clock.clone();
            TestServer::start_with(move |c| {
                c.node.clock = clock;
                c.node.public_url = Some("https://parley.example".into());
            })
            .await
        };
        let fake = telegram().await;
        let agent = t.agent(&basic_agent("")).await;
        let conn = connection(
            &t,
            "telegram",
            json!({"bot_token": TOKEN, "api_base": fake.base}),
            json!({}),
        )
        .await;
        // An inbound agent of its own: the campaign's sessions still answer with theirs.
        let inbound = t.agent(&basic_agent("")).await;
        assign(&t, &inbound, &conn).await;
        assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
        let secret = fake.requests_to(&format!("/bot{TOKEN}/setWebhook"))[0].json()["secret_token"]
            .as_str()
            .unwrap()
            .to_string();
        let campaign = create_campaign(&t, fields()).await;
        let (talk, ended) = flows(&agent.id, &conn);
        put_flow(&t, &campaign, "talk", &talk).await;
        put_flow(&t, &campaign, "ended", ended).await;
        put_flow(&t, &campaign, "fallback", FALLBACK).await;
        start(&t, &campaign).await;
        let ids = add(
            &t,
            &campaign,
            json!([
                {"attributes": {"external_id": "ann", "name": "Ann", "telegram_id": "4242"}},
                {"attributes": {"external_id": "bob", "name": "Bob", "email": "bob@example.com"}}
            ]),
        )
        .await;
        let (ann, bob) = (ids[0].0.clone(), ids[1].0.clone());

        // Bob never wrote to the bot: Telegram cannot reach him.
        let b = comms_until(&t, &campaign, &bob, "Bob failed", |all| {
            statuses(all) == ["Failed"]
        })
        .await;
        assert!(
            b[0]["reason"].as_str().unwrap().contains("telegram_id"),
            "{b:?}"
        );
        // communication_updated ran for the failure (and for Ann's changes, which did
        // not match).
        eventually(10, "Bob's fallback noted", || async {
            participant(&t, &campaign, "bob").await["attributes"]["fallback"] == "WELCOME"
        })
        .await;
        let a = comms_until(&t, &campaign, &ann, "Ann delivered", |all| {
            statuses(all) == ["Delivered"]
        })
        .await;
        assert_eq!(
            sent_texts(&fake, 4242),
            vec!["Hello Ann! Shall we talk about your order?"]
        );
        let session = a[0]["session_id"].as_str().unwrap().to_string();
        let opened = t.get_session(&agent, &session).await;
        assert_eq!(opened["kwargs"]["context"], json!({"customer.name": "Ann"}));
        assert_eq!(opened["kwargs"]["communication"], "WELCOME");
        assert_eq!(opened["user_id"], "telegram:4242");

        // Ann answers in Telegram: the campaign's session (and agent) takes it.
        let resp = deliver(
            &t,
            &conn,
            &secret,
            &update(7001, 4242, "Sure, my email is ann@example.com"),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        comms_until(&t, &campaign, &ann, "Ann replied", |all| {
            statuses(all) == ["Replied"]
        })
        .await;
        eventually(10, "the agent answered in Telegram", || async {
            sent_texts(&fake, 4242).len() >= 2
        })
        .await;
        let log = t
            .log(
                &Agent {
                    id: agent.id.clone(),
                    token: agent.token.clone(),
                },
                &session,
            )
            .await;
        assert_eq!(log[0]["text"], "Hello Ann! Shall we talk about your order?");
        assert_eq!(log[1]["text"], "Sure, my email is ann@example.com");

        // The session closes: Completed, with the agent's results, and the ended flow
        // reads them.
        let resp = t
            .http
            .delete(t.url(&format!("/chatbot/{}/session/{session}", agent.id)))
            .bearer_auth(&agent.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let a = comms_until(&t, &campaign, &ann, "Ann completed", |all| {
            statuses(all) == ["Completed"]
        })
        .await;
        assert_eq!(a[0]["results"]["HumanEmail"], "ann@example.com");
        eventually(10, "the ended flow ran", || async {
            participant(&t, &campaign, "ann").await["attributes"]["status"] == "ann@example.com"
        })
        .await;
        let p = participant(&t, &campaign, "ann").await;
        assert_eq!(p["result"]["HumanEmail"], "ann@example.com");
        let s = stats(&t, &campaign).await;
        assert_eq!(
            s["communications"]["by_status"],
            json!({"Completed": 1, "Failed": 1}),
            "{s}"
        );
        assert_eq!(node_count(&s, "ended", "keep"), 1, "{s}");
        assert_eq!(node_count(&s, "ended", "none"), 0, "{s}");
        assert!(participant(&t, &campaign, "ann").await["attributes"]["fallback"].is_null());
    }
}

mod restart {
    use super::*;

    const FLOW: &str = r#"
nodes:
  - {id: created, type: participant_created, next: chat}
  - id: chat
    type: start_communication
    name: CHECK_IN
    channel: chat
    agent_id: AGENT
    from: "10:00"
    to: "18:00"
    duration: "08:00"
    start_phrase: "Good morning {{ name }}"
    next: later
  - id: later
    type: start_communication
    name: FOLLOW_UP
    channel: chat
    agent_id: AGENT
    date: participant.follow_up_on
    duration: "08:00"
"#;

    /// Runs after `checkin` (flows run in name order): its CHECK_IN is one too many.
    const AGAIN: &str = r#"
nodes:
  - {id: created, type: participant_created, next: again}
  - id: again
    type: start_communication
    name: CHECK_IN
    channel: chat
    agent_id: AGENT
    duration: "08:00"
"#;

    #[tokio::test]
    async fn planned_communications_survive_a_restart_and_fire_once() {
        let clock = Clock::manual(start_time());
        let t = server(&clock).await;
        let agent = t.agent(&basic_agent("")).await;
        let campaign = create_campaign(
            &t,
            json!([{"title": "Name", "name": "name", "type": "string",
                    "level": "customer_profile", "import": true},
                   {"title": "Follow up on", "name": "follow_up_on", "type": "date",
                    "level": "participant", "import": true}]),
        )
        .await;
        put_flow(&t, &campaign, "checkin", &FLOW.replace("AGENT", &agent.id)).await;
        put_flow(
            &t,
            &campaign,
            "zz_again",
            &AGAIN.replace("AGENT", &agent.id),
        )
        .await;
        start(&t, &campaign).await;
        let ids = add(
            &t,
            &campaign,
            json!([{"attributes": {"external_id": "ann", "name": "Ann", "web_id": "web-ann"}},
                   {"attributes": {"external_id": "bob", "name": "Bob"}}]),
        )
        .await;
        // The campaign runs here, in the actor tree under the campaign supervisor.
        eventually(10, "the campaign actor listed", || async {
            let (status, tree) = t
                .call(Method::GET, "/api/v1/admin/actors?kind=campaign", None)
                .await;
            status == StatusCode::OK
                && tree["children"][0]["id"] == format!("campaign:{campaign}")
                && tree["children"][0]["kind"] == "campaign"
        })
        .await;
        for (p, _) in &ids {
            let c = comms_until(&t, &campaign, p, "planned", |all| {
                statuses(all) == ["Planned", "Skipped", "Skipped"]
            })
            .await;
            // 10:00 Berlin.
            assert_eq!(c[0]["scheduled_at"], "2026-06-01T08:00:00+00:00");
            // One with no date, and a second CHECK_IN while the first is under way.
            assert!(
                c[2]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("already in progress"),
                "{c:?}"
            );
            assert!(
                c[1]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("follow_up_on is not set"),
                "{c:?}"
            );
        }

        // Down before the window opens, back after: late, but once.
        let (dir, tmp) = t.stop().await;
        clock.set(at(9, 30));
        let t = {
            let clock = clock.clone();
            TestServer::start_in(dir, move |c| c.node.clock = clock).await
        };
        let mut sessions = Vec::new();
        for (p, _) in &ids {
            let c = comms_until(&t, &campaign, p, "delivered after the restart", |all| {
                statuses(all) == ["Delivered", "Skipped", "Skipped"]
            })
            .await;
            sessions.push(c[0]["session_id"].as_str().unwrap().to_string());
        }
        let ann_log = t.log(&agent, &sessions[0]).await;
        assert_eq!(ann_log.len(), 1, "{ann_log:?}");
        assert_eq!(ann_log[0]["text"], "Good morning Ann");
        assert_eq!(ann_log[0]["role"], "AI");
        let session = t.get_session(&agent, &sessions[0]).await;
        assert_eq!(session["user_id"], "web-ann");
        assert_eq!(session["kwargs"]["communication"], "CHECK_IN");

        // Time goes on and the node restarts again: nothing fires a second time.
        let (dir, _) = t.stop().await;
        clock.advance(TimeDelta::hours(2));
        let t = {
            let clock = clock.clone();
            TestServer::start_in(dir, move |c| c.node.clock = clock).await
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        for (p, _) in &ids {
            let all = communications(&t, &campaign, p).await;
            assert_eq!(
                statuses(&all),
                ["Delivered", "Skipped", "Skipped"],
                "{all:?}"
            );
        }
        let s = stats(&t, &campaign).await;
        assert_eq!(
            s["communications"]["by_status"],
            json!({"Delivered": 2, "Skipped": 4}),
            "{s}"
        );

        // Ann never answers; her session times out: NoResponse.
        let resp = t
            .http
            .delete(t.url(&format!(
                "/chatbot/{}/session/{}?status=user_timeout",
                agent.id, sessions[0]
            )))
            .bearer_auth(&agent.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let a = comms_until(&t, &campaign, &ids[0].0, "no response", |all| {
            all[0]["status"] == "NoResponse"
        })
        .await;
        assert!(
            a[0]["reason"].as_str().unwrap().contains("user_timeout"),
            "{a:?}"
        );
        drop(tmp);
    }
}

mod actions {
    use std::sync::{Arc, Mutex};

    use axum::routing::post;
    use axum::{Json, Router};

    use super::*;
    use crate::channels::webhook::{webhook_connection, Receiver, OUT_SECRET};

    fn flows(agent: &str, conn: &str, scorer: &str) -> (String, &'static str) {
        (
            format!(
                r#"
nodes:
  - {{id: created, type: participant_created, next: score}}
  - id: score
    type: http_action
    url: {scorer}
    params: {{model: churn-v2}}
    writes: [{{from: /result/score, property: participant.score}}, {{from: /result/segment, property: customer.segment}}]
    next: risky
  - {{id: risky, type: field_check, property: participant.score, operator: ge, value: 70, match: call}}
  - id: call
    type: start_communication
    name: RETENTION
    channel: webhook
    agent_id: {agent}
    connection_id: {conn}
    duration: "02:00"
    start_phrase: "Hi {{{{ name }}}}, we have an offer for you."
"#
            ),
            r#"
nodes:
  - {id: incoming, type: incoming_session, next: stop}
  - {id: stop, type: cancel_communications, next: note}
  - id: note
    type: update_field
    assignments: [{property: participant.came_back, value: true}]
"#,
        )
    }

    fn fields() -> Value {
        json!([
            {"title": "Name", "name": "name", "type": "string", "level": "customer_profile", "import": true},
            {"title": "Segment", "name": "segment", "type": "string", "level": "customer_profile"},
            {"title": "Score", "name": "score", "type": "int", "level": "participant"},
            {"title": "Came back", "name": "came_back", "type": "bool", "level": "participant"}
        ])
    }

    /// A scoring service: answers from the participant's data it was sent.
    async fn scorer(seen: Arc<Mutex<Vec<Value>>>) -> String {
        let app = Router::new().route(
            "/score",
            post(move |Json(body): Json<Value>| {
                let seen = seen.clone();
                async move {
                    let score = if body["customer"]["name"] == "Ann" {
                        90
                    } else {
                        20
                    };
                    seen.lock().unwrap().push(body);
                    Json(json!({"result": {"score": score, "segment": "at-risk"}}))
                }
            }),
        );
        format!("{}/score", serve_fake(app).await)
    }

    #[tokio::test]
    async fn http_actions_webhook_communications_and_incoming_sessions() {
        let clock = Clock::manual(start_time());
        let t = server(&clock).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let scorer = scorer(seen.clone()).await;
        let rx = Receiver::start().await;
        let agent = t.agent(&basic_agent("")).await;
        let conn =
            webhook_connection(&t, "CRM", json!({"url": rx.url(), "secret": OUT_SECRET})).await;
        assert_eq!(act(&t, &conn, "start").await["status"], "Connected");
        let campaign = create_campaign(&t, fields()).await;
        let (main, incoming) = flows(&agent.id, &conn, &scorer);
        put_flow(&t, &campaign, "main", &main).await;
        put_flow(&t, &campaign, "incoming", incoming).await;
        start(&t, &campaign).await;
        let ids = add(
            &t,
            &campaign,
            json!([
                {"attributes": {"external_id": "ann", "name": "Ann", "web_id": "web-ann"}},
                {"attributes": {"external_id": "bob", "name": "Bob", "web_id": "web-bob"}}
            ]),
        )
        .await;
        let (ann, bob) = (ids[0].0.clone(), ids[1].0.clone());

        // The scorer got each participant's data and the node's params; its answer was
        // written to the participant and the customer profile.
        let a = comms_until(&t, &campaign, &ann, "Ann's offer delivered", |all| {
            statuses(all) == ["Delivered"]
        })
        .await;
        eventually(10, "Bob scored", || async {
            participant(&t, &campaign, "bob").await["attributes"]["score"] == 20
        })
        .await;
        assert!(communications(&t, &campaign, &bob).await.is_empty());
        let p = participant(&t, &campaign, "ann").await;
        assert_eq!(p["attributes"]["score"], 90);
        assert_eq!(p["customer"]["attributes"]["segment"], "at-risk");
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2, "{seen:?}");
            let ann_call = seen
                .iter()
                .find(|b| b["customer"]["name"] == "Ann")
                .unwrap();
            assert_eq!(ann_call["params"], json!({"model": "churn-v2"}));
            assert_eq!(ann_call["participant_id"], ann);
            assert_eq!(ann_call["campaign_id"], campaign);
        }

        // The offer went out as a signed event on the connection.
        let session = a[0]["session_id"].as_str().unwrap().to_string();
        eventually(10, "the event delivered", || async {
            rx.distinct()
                .iter()
                .any(|d| d.kind() == "communication.started")
        })
        .await;
        let event = rx
            .distinct()
            .into_iter()
            .find(|d| d.kind() == "communication.started")
            .unwrap();
        assert_eq!(event.data()["text"], "Hi Ann, we have an offer for you.");
        assert_eq!(event.data()["session_id"], session);
        assert_eq!(event.data()["communication"], "RETENTION");
        assert_eq!(event.data()["participant_id"], ann);

        // Ann comes to the web chat on her own: incoming_session cancels the offer (its
        // session closes) and marks her.
        let own = t.session(&agent, json!({"user_id": "web-ann"})).await;
        let a = comms_until(&t, &campaign, &ann, "the offer canceled", |all| {
            statuses(all) == ["Canceled"]
        })
        .await;
        assert_eq!(a[0]["reason"], "canceled by the flow");
        eventually(10, "Ann marked", || async {
            participant(&t, &campaign, "ann").await["attributes"]["came_back"] == true
        })
        .await;
        eventually(10, "the offer's session closed", || async {
            t.get_session(&agent, &session).await["status"] == "canceled"
        })
        .await;
        assert_ne!(own, session);
        let s = stats(&t, &campaign).await;
        assert_eq!(node_count(&s, "incoming", "incoming"), 1, "{s}");
        assert_eq!(node_count(&s, "main", "call"), 1, "{s}");
        assert!(
            participant(&t, &campaign, "bob").await["attributes"]["came_back"].is_null(),
            "only Ann came back"
        );
    }
}
