//! Public conversation routes: listing, attachments, reactions.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn conversations_attachments_and_feedback() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t
        .session(&a, json!({"user_id": "ext-42", "name": "Eve"}))
        .await;
    let form = reqwest::multipart::Form::new()
        .text("message", "here is my statement")
        .part(
            "attachments",
            reqwest::multipart::Part::bytes(b"%PDF-1.4 test".to_vec())
                .file_name("statement.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let r = t
        .http
        .post(t.url(&format!("/chatbot/{}/session/{sid}/run_v2", a.id)))
        .bearer_auth(&a.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    t.session(&a, json!({"user_id": "someone-else"})).await;

    let list = |q: String| {
        t.http
            .get(t.url(&format!("/api/v1/public/conversations?{q}")))
            .bearer_auth(&a.token)
            .send()
    };
    let (status, body) = json_of(
        list(format!("ext_id=ext-42&agent_id={}", a.id))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], "ext-42");
    assert_eq!(body["user_name"], "Eve");
    let convs = body["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 1);
    assert_eq!(convs[0]["session_id"], sid.as_str());
    let logs = convs[0]["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3);
    let att = &logs[1]["attachments"][0];
    assert_eq!(att["filename"], "statement.pdf");
    assert_eq!(att["size"], 13);
    assert!(
        !body.to_string().contains(&a.token),
        "the token is never echoed"
    );

    // The tenant key lists across agents; a wrong ext_type finds nothing.
    let (_, body) = json_of(
        t.admin(
            reqwest::Method::GET,
            "/api/v1/public/conversations?ext_id=ext-42",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(body["conversations"].as_array().unwrap().len(), 1);
    let (_, body) = json_of(
        list(format!("ext_id=ext-42&ext_type=telegram&agent_id={}", a.id))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["conversations"].as_array().unwrap().len(), 0);
    let (status, _) = json_of(list(format!("agent_id={}", a.id)).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let att_id = att["id"].as_str().unwrap();
    let r = t
        .http
        .get(t.url(&format!(
            "/api/v1/public/conversations/attachments/{att_id}?ext_id=ext-42&agent_id={}",
            a.id
        )))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"%PDF-1.4 test");
    let r = t
        .http
        .get(t.url(&format!(
            "/api/v1/public/conversations/attachments/{att_id}?ext_id=intruder&agent_id={}",
            a.id
        )))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let patch = |log: i64, body: serde_json::Value| {
        t.http
            .patch(t.url(&format!("/api/v1/public/sessions/{sid}/logs/{log}")))
            .bearer_auth(&a.token)
            .json(&body)
            .send()
    };
    let (status, body) = json_of(
        patch(
            3,
            json!({"feedback": "GOOD", "ext_id": "ext-42", "agent_id": a.id}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let log = t.log(&a, &sid).await;
    assert_eq!(log[2]["feedback"], "GOOD");
    let (status, _) = json_of(
        patch(
            3,
            json!({"feedback": "MEH", "ext_id": "ext-42", "agent_id": a.id}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = json_of(
        patch(
            99,
            json!({"feedback": "BAD", "ext_id": "ext-42", "agent_id": a.id}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = json_of(
        patch(
            3,
            json!({"feedback": "BAD", "ext_id": "intruder", "agent_id": a.id}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
