//! Campaigns over the admin API: fields, flows validated against them (path-addressed
//! errors), activation and start rules, participants by JSON and by streamed CSV upload
//! (upserts, bad rows with their numbers), customers shared across campaigns.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

/// The agent id [`PAYMENT_REMINDER`] names: no agent of any tenant.
const UNKNOWN_AGENT: &str = "0190f1d2-0000-7000-8000-000000000001";

const PAYMENT_REMINDER: &str = r#"
nodes:
  - id: start
    type: participant_created
    next: unpaid
  - id: unpaid
    type: field_check
    property: participant.is_paid
    operator: eq
    value: false
    match: due_soon
    else: cancel
  - id: due_soon
    type: field_check
    property: participant.due_date
    operator: ge
    value: today
    days: 3
    match: remind
  - id: remind
    type: start_communication
    name: REMINDED_BEFORE_2D
    channel: chat
    agent_id: 0190f1d2-0000-7000-8000-000000000001
    duration: "04:00"
    from: "09:00"
    to: "20:00"
    start_phrase: "Hello {{ name }}, your payment is due on {{ due_date }}."
  - id: cancel
    type: cancel_communications
"#;

fn fields() -> Value {
    json!([
        {"title": "Name", "name": "name", "type": "string", "level": "customer_profile", "import": true},
        {"title": "Paid", "name": "is_paid", "type": "bool", "level": "participant", "import": true},
        {"title": "Due", "name": "due_date", "type": "date", "level": "participant", "import": true, "required": true}
    ])
}

async fn campaign(t: &TestServer, name: &str) -> String {
    let (status, c) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"name": name, "timezone": "Europe/Berlin", "fields": fields()})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["status"], "draft");
    assert_eq!(c["timezone"], "Europe/Berlin");
    c["id"].as_str().unwrap().to_string()
}

async fn put_flow(t: &TestServer, id: &str, name: &str, yaml: &str) -> (StatusCode, Value) {
    let path = format!("/api/v1/campaigns/{id}/flows/{name}");
    t.call_yaml(Method::PUT, &path, ADMIN_KEY, yaml).await
}

#[tokio::test]
async fn campaigns_fields_and_flows_are_validated_and_locked_while_running() {
    let t = TestServer::start().await;
    let id = campaign(&t, "Payments").await;
    // The flow's agent must be one of the tenant's.
    let (status, body) = put_flow(&t, &id, "reminders", PAYMENT_REMINDER).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("nodes[3].agent_id"), "{body}");
    let agent = t.agent(&basic_agent("")).await;
    let reminder = PAYMENT_REMINDER.replace(UNKNOWN_AGENT, &agent.id);
    let reminder = reminder.as_str();

    // Bad fields: paths name the problem; nothing changes.
    let (status, body) = t
        .call(
            Method::PUT,
            &format!("/api/v1/campaigns/{id}/fields"),
            Some(json!([{"title": "E", "name": "email", "type": "int", "level": "participant"}])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string().contains("fields[0]") || body.to_string().contains("[0]"),
        "{body}"
    );

    // A flow that names an unknown property and a missing node.
    let broken = reminder
        .replace("participant.is_paid", "participant.is_payed")
        .replace("match: remind", "match: nowhere");
    let (status, body) = put_flow(&t, &id, "reminders", &broken).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(text.contains("nodes[1].property"), "{text}");
    assert!(text.contains("nodes[2].match"), "{text}");

    let (status, flow) = put_flow(&t, &id, "reminders", reminder).await;
    assert_eq!(status, StatusCode::OK, "{flow}");
    assert_eq!(flow["active"], false);
    assert_eq!(flow["nodes"], 5);
    let (status, listed) = t
        .call(Method::GET, &format!("/api/v1/campaigns/{id}/flows"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["flows"][0]["name"], "reminders");

    // Removing a field a flow uses is refused, naming the flow.
    let (status, body) = t.call(Method::PUT,
        &format!("/api/v1/campaigns/{id}/fields"),
        Some(json!([{"title": "Name", "name": "name", "type": "string", "level": "customer_profile"}])),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("flows.reminders"), "{body}");

    // No active flow: cannot start.
    let (status, body) = t
        .call(Method::POST, &format!("/api/v1/campaigns/{id}/start"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/flows/reminders/activate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, c) = t
        .call(Method::POST, &format!("/api/v1/campaigns/{id}/start"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["status"], "running");

    // Running: flows and fields are locked.
    let (status, body) = put_flow(&t, &id, "reminders", reminder).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/flows/reminders/deactivate"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = t
        .call(
            Method::PUT,
            &format!("/api/v1/campaigns/{id}/fields"),
            Some(fields()),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = t
        .call(Method::DELETE, &format!("/api/v1/campaigns/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, c) = t
        .call(Method::POST, &format!("/api/v1/campaigns/{id}/stop"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["status"], "stopped");
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/campaigns/{id}/flows/reminders"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{id}/flows/reminders"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bad input is a JSON error, never a panic.
    let (status, body) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"name": "x", "timezone": "Mars/Base"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    error_code(&body);
    let (status, _) = t
        .call(Method::GET, "/api/v1/campaigns/not-an-id", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn participants_upsert_by_api_and_share_customer_profiles() {
    let t = TestServer::start().await;
    let a = campaign(&t, "A").await;
    let b = campaign(&t, "B").await;
    let body = json!([
        {"attributes": {"external_id": "c1", "email": "Ann@Example.com", "name": "Ann", "due_date": "2026-07-01"}},
        {"attributes": {"email": "bob@example.com", "due_date": "2026-07-02", "is_paid": "yes"}, "timezone": "America/New_York", "object_id": "loan-1"},
        {"attributes": {"name": "Nobody", "due_date": "2026-07-03"}},
        {"attributes": {"external_id": "c3", "due_date": "not a date", "color": "red"}}
    ]);
    let (status, r) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{a}/participants"),
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (
            r["created"].as_u64(),
            r["updated"].as_u64(),
            r["failed"].as_u64()
        ),
        (Some(2), Some(0), Some(2))
    );
    assert!(
        r["results"][2]["errors"][0]
            .as_str()
            .unwrap()
            .contains("external_id"),
        "{r}"
    );
    let errs = r["results"][3]["errors"].to_string();
    assert!(
        errs.contains("due_date") && errs.contains("color"),
        "{errs}"
    );

    // Re-sent: an update, and an absent value keeps the stored one.
    let (_, r2) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{a}/participants"),
            Some(json!([{"attributes": {"external_id": "c1", "due_date": "2026-08-01"}}])),
        )
        .await;
    assert_eq!(r2["updated"], 1);
    assert_eq!(
        r2["results"][0]["participant_id"],
        r["results"][0]["participant_id"]
    );
    let (_, page) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{a}/participants?external_id=c1"),
            None,
        )
        .await;
    assert_eq!(page["total"], 1, "{page}");
    let p = &page["participants"][0];
    assert_eq!(p["attributes"]["due_date"], "2026-08-01");
    assert_eq!(p["customer"]["attributes"]["name"], "Ann");
    assert_eq!(p["customer"]["email"], "ann@example.com");

    // The same customer in another campaign: one profile, two participants.
    let (_, rb) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{b}/participants"),
            Some(json!([{"attributes": {"external_id": "c1", "due_date": "2026-09-01"}}])),
        )
        .await;
    assert_eq!(rb["created"], 1);
    assert_eq!(
        rb["results"][0]["customer_id"],
        r["results"][0]["customer_id"]
    );
    let (_, customers) = t.call(Method::GET, "/api/v1/customers", None).await;
    assert_eq!(customers["total"], 2, "{customers}");
    let cid = r["results"][0]["customer_id"].as_str().unwrap();
    let (status, c) = t
        .call(Method::GET, &format!("/api/v1/customers/{cid}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(c["external_id"], "c1");

    // Deleting a participant keeps the customer.
    let pid = r["results"][0]["participant_id"].as_str().unwrap();
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/campaigns/{a}/participants/{pid}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, page) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{a}/participants"),
            None,
        )
        .await;
    assert_eq!(page["total"], 1);
    let (status, _) = t
        .call(Method::GET, &format!("/api/v1/customers/{cid}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // All bad: 422.
    let (status, _) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{a}/participants"),
            Some(json!([{"attributes": {"due_date": "2026-01-01"}}])),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn csv_uploads_stream_upsert_and_report_bad_rows() {
    let t = TestServer::start().await;
    let id = campaign(&t, "Uploads").await;
    let mut csv = String::from("external_id,email,name,due_date,is_paid\n");
    for i in 0..500 {
        csv.push_str(&format!(
            "x{i},u{i}@example.com,User {i},2026-07-{:02},false\n",
            i % 28 + 1
        ));
    }
    csv.push_str("bad1,,,not-a-date,false\n");
    csv.push_str(",,,2026-07-01,true\n");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text(csv.clone()).file_name("people.csv"),
    );
    let (status, up) = json_of(
        t.admin(Method::POST, &format!("/api/v1/campaigns/{id}/uploads"))
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    assert_eq!(up["status"], "done");
    assert_eq!(
        (
            up["total"].as_u64(),
            up["created"].as_u64(),
            up["updated"].as_u64(),
            up["failed"].as_u64()
        ),
        (Some(502), Some(500), Some(0), Some(2))
    );
    assert_eq!(up["errors"][0]["row"], 502, "{up}");
    assert_eq!(up["errors"][1]["row"], 503, "{up}");

    // The same file again as text/csv: all updates, nothing new.
    let (status, again) = json_of(
        t.admin(Method::POST, &format!("/api/v1/campaigns/{id}/uploads"))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(
        (again["created"].as_u64(), again["updated"].as_u64()),
        (Some(0), Some(500))
    );
    let (_, list) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{id}/uploads"),
            None,
        )
        .await;
    assert_eq!(list["uploads"][0]["id"], again["id"], "newest first");
    let first = up["id"].as_str().unwrap();
    let (status, one) = t
        .call(
            Method::GET,
            &format!("/api/v1/campaigns/{id}/uploads/{first}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["created"], 500);
    let (_, by_upload) = t
        .call(
            Method::GET,
            &format!(
                "/api/v1/campaigns/{id}/participants?upload_id={}&limit=10",
                again["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        by_upload["total"], 500,
        "the second upload touched every participant"
    );
    assert_eq!(by_upload["participants"].as_array().unwrap().len(), 10);

    // A header naming an unknown column fails the upload with the reason.
    let (status, bad) = json_of(
        t.admin(Method::POST, &format!("/api/v1/campaigns/{id}/uploads"))
            .header("content-type", "text/csv")
            .body("external_id,shoe_size\nx1,44\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bad}");
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["error"].as_str().unwrap().contains("shoe_size"),
        "{bad}"
    );
    // Neither a form nor CSV.
    let (status, body) = json_of(
        t.admin(Method::POST, &format!("/api/v1/campaigns/{id}/uploads"))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
}
