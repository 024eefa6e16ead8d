//! Agents exported to a ZIP and imported elsewhere (secrets sealed under a key shown once,
//! or left out), and copied in place.

use parley_engine::agent::REDACTED;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::support::*;

const SUPER_KEY: &str = "sk_test_super_key_for_transfers";

const AGENT: &str = r#"
name: Support
identity: You help customers of Acme.
greeting: Hi!
workflow:
  - name: Main
    kind: StateConfig
    init_state: true
    available_tools: [SendChatMessage, SetResult]
conversation_results:
  - {field_name: Email, field_type: email}
knowledge:
  faq:
    - {question: What are your opening hours?, answer: We are open from 9 to 17.}
llm:
  - name: main
    kind: openai
    base_url: https://llm.example/v1
    model: m1
    api_key: sk-live-secret
    headers: {X-Org: org-secret}
"#;

async fn export(t: &TestServer, agent: &str, options: Value) -> (Vec<u8>, String) {
    let resp = t
        .admin(Method::POST, &format!("/api/v1/agents/{agent}/export"))
        .json(&options)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/zip");
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("agent-Support.zip"));
    let key = resp.headers()["x-parley-export-key"]
        .to_str()
        .unwrap()
        .to_string();
    (resp.bytes().await.unwrap().to_vec(), key)
}

async fn import(t: &TestServer, admin_key: &str, zip: &[u8], key: &str) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(zip.to_vec()).file_name("agent.zip"),
        )
        .text("secret_key", key.to_string());
    json_of(
        t.http
            .post(t.url("/api/v1/agents/import"))
            .bearer_auth(admin_key)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn tenant_id(t: &TestServer, key: &str) -> Uuid {
    let (_, me) = t.call_as(Method::GET, "/api/v1/tenant", key, None).await;
    Uuid::parse_str(me["id"].as_str().unwrap()).unwrap()
}

async fn webhook(t: &TestServer, name: &str) -> String {
    let (status, c) = t
        .call(
            Method::POST,
            "/api/v1/connections",
            Some(json!({"name": name, "platform": "webhook", "enabled": true, "config": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_export_imports_elsewhere_equal_to_the_original() {
    let t = TestServer::start_with(|c| c.super_key = Some(SUPER_KEY.into())).await;
    let agent = t.agent(AGENT).await;
    let (inbound, outbound) = (webhook(&t, "Inbound").await, webhook(&t, "Outbound").await);
    let (status, _) = t
        .call(Method::PUT, &format!("/api/v1/agents/{}/channels", agent.id),
              Some(json!([{"connection_id": inbound, "inbound": true}, {"connection_id": outbound, "inbound": false}])))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (zip, key) = export(&t, &agent.id, json!({})).await;
    let (_, b) = t
        .call_as(
            Method::POST,
            "/api/v1/tenants",
            SUPER_KEY,
            Some(json!({"name": "B"})),
        )
        .await;
    let b_key = b["admin_key"].as_str().unwrap().to_string();

    // The wrong key opens nothing.
    let (status, body) = import(&t, &b_key, &zip, &"00".repeat(32)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("secret_key"), "{body}");
    let (status, body) = import(&t, &b_key, b"not a zip", &key).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let (status, imported) = import(&t, &b_key, &zip, &key).await;
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert!(imported["token"].as_str().unwrap().starts_with("pat_"));
    assert_eq!(
        imported["notes"].as_array().unwrap().len(),
        2,
        "B has neither connection: {imported}"
    );
    let copy_id = Uuid::parse_str(imported["id"].as_str().unwrap()).unwrap();
    let node = t.node();
    let (_, original) = node
        .agent(
            tenant_id(&t, ADMIN_KEY).await,
            Uuid::parse_str(&agent.id).unwrap(),
        )
        .await
        .unwrap();
    let (_, arrived) = node
        .agent(tenant_id(&t, &b_key).await, copy_id)
        .await
        .unwrap();
    assert_eq!(arrived, original, "secrets included");
    assert_eq!(arrived.llm[0].api_key.as_deref(), Some("sk-live-secret"));
    // Once is enough: the name is taken now.
    let (status, body) = import(&t, &b_key, &zip, &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Without secrets, forced over B's agent of the same name.
    let (zip, key) = export(
        &t,
        &agent.id,
        json!({"remove_sensitive_data": true, "force_update_agent": true}),
    )
    .await;
    let (status, updated) = import(&t, &b_key, &zip, &key).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["id"], imported["id"]);
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["secrets_removed"], true);
    assert!(updated.get("token").is_none());
    let (_, arrived) = node
        .agent(tenant_id(&t, &b_key).await, copy_id)
        .await
        .unwrap();
    assert_eq!(arrived.llm[0].api_key, None);
    assert!(arrived.llm[0].headers.is_empty());
    assert_eq!(arrived.knowledge, original.knowledge);
    assert_eq!(arrived.workflow, original.workflow);

    // Back home, forced: the channels come back, the inbound one included (it is this
    // agent's own).
    let (zip, key) = export(&t, &agent.id, json!({"force_update_agent": true})).await;
    let (status, home) = import(&t, ADMIN_KEY, &zip, &key).await;
    assert_eq!(status, StatusCode::OK, "{home}");
    assert_eq!(home["id"], agent.id.as_str());
    assert_eq!(home["notes"], json!([]));
    let (_, channels) = t
        .call(
            Method::GET,
            &format!("/api/v1/agents/{}/channels", agent.id),
            None,
        )
        .await;
    assert_eq!(
        channels,
        json!([{"connection_id": inbound, "inbound": true},
               {"connection_id": outbound, "inbound": false}])
    );
}

#[tokio::test]
async fn a_copy_keeps_the_configuration_with_secrets_redacted_and_no_inbound_channel() {
    let t = TestServer::start().await;
    let agent = t.agent(AGENT).await;
    let (inbound, outbound) = (webhook(&t, "Inbound").await, webhook(&t, "Outbound").await);
    t.call(Method::PUT, &format!("/api/v1/agents/{}/channels", agent.id),
           Some(json!([{"connection_id": inbound, "inbound": true}, {"connection_id": outbound, "inbound": false}])))
        .await;
    let (status, copy) = t
        .call(
            Method::POST,
            &format!("/api/v1/agents/{}/copy", agent.id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{copy}");
    assert_eq!(copy["name"], "Support (copy)");
    assert_eq!(copy["secrets_removed"], true);
    let notes = copy["notes"].to_string();
    assert!(
        notes.contains("Inbound") && notes.contains("not copied"),
        "{notes}"
    );
    let copy_id = Uuid::parse_str(copy["id"].as_str().unwrap()).unwrap();
    let tenant = tenant_id(&t, ADMIN_KEY).await;
    let (_, def) = t.node().agent(tenant, copy_id).await.unwrap();
    assert_eq!(def.llm[0].api_key.as_deref(), Some(REDACTED));
    assert_eq!(def.identity, "You help customers of Acme.");
    let (_, channels) = t
        .call(
            Method::GET,
            &format!("/api/v1/agents/{copy_id}/channels"),
            None,
        )
        .await;
    assert!(
        channels.to_string().contains(&outbound) && !channels.to_string().contains(&inbound),
        "{channels}"
    );
    let (status, named) = t
        .call(
            Method::POST,
            &format!("/api/v1/agents/{}/copy", agent.id),
            Some(json!({"name": "Support EU"})),
        )
        .await;
    assert_eq!(
        (status, named["name"].as_str()),
        (StatusCode::CREATED, Some("Support EU"))
    );
}
