//! A running campaign belongs to one node of the cluster; when that node dies, another
//! takes the campaign over and its planned communications fire there — late if need be,
//! and once.

use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

async fn admin(
    http: &Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    json_of(rb.send().await.unwrap()).await
}

/// The node whose campaign supervisor runs `campaign`, waiting until one does.
async fn runner(http: &Client, bases: &[String], campaign: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for (i, base) in bases.iter().enumerate() {
            let (status, tree) = admin(
                http,
                base,
                Method::GET,
                "/api/v1/admin/actors?kind=campaign",
                None,
            )
            .await;
            if status == StatusCode::OK
                && tree["children"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|a| a["id"] == format!("campaign:{campaign}")))
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no node runs the campaign");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn communications(
    http: &Client,
    base: &str,
    campaign: &str,
    participant: &str,
) -> Vec<Value> {
    let (status, body) = admin(
        http,
        base,
        Method::GET,
        &format!("/api/v1/campaigns/{campaign}/participants/{participant}/communications"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["communications"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_campaign_is_taken_over_and_its_timers_fire_once() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let mut nodes = start_nodes(&["c1", "c2"], &o);
    let bases: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = client();
    let agent = create_agent(&http, &bases[0], &agent_yaml("")).await;

    let (status, c) = admin(
        &http,
        &bases[0],
        Method::POST,
        "/api/v1/campaigns",
        Some(json!({"name": "Calls", "fields": [
            {"title": "Call at", "name": "call_at", "type": "datetime", "level": "participant", "import": true}
        ]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let campaign = c["id"].as_str().unwrap().to_string();
    let flow = format!(
        r#"{{"nodes": [
            {{"id": "created", "type": "participant_created", "next": "call"}},
            {{"id": "call", "type": "start_communication", "name": "CALL", "channel": "chat",
              "agent_id": "{}", "date": "participant.call_at", "duration": "01:00",
              "start_phrase": "It is time"}}]}}"#,
        agent.id
    );
    let resp = http
        .put(format!(
            "{}/api/v1/campaigns/{campaign}/flows/calls",
            bases[0]
        ))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(flow)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", json_of(resp).await);
    for action in ["flows/calls/activate", "start"] {
        let (status, body) = admin(
            &http,
            &bases[0],
            Method::POST,
            &format!("/api/v1/campaigns/{campaign}/{action}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let owner = runner(&http, &bases, &campaign).await;
    let survivor = 1 - owner;

    // Due a few seconds from now: after the owner is gone.
    // Far enough ahead that a loaded machine plans it before it is due (5 s was not).
    let call_at = chrono::Utc::now() + chrono::TimeDelta::seconds(20);
    let (status, added) = admin(
        &http,
        &bases[survivor],
        Method::POST,
        &format!("/api/v1/campaigns/{campaign}/participants"),
        Some(json!([{"attributes": {"external_id": "ann", "call_at": call_at.to_rfc3339()}}])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let participant = added["results"][0]["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The owner plans it (the survivor only stored the participant).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = communications(&http, &bases[survivor], &campaign, &participant).await;
        if all.len() == 1 && all[0]["status"] == "Planned" {
            break;
        }
        assert!(Instant::now() < deadline, "never planned: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    nodes[owner].kill9();
    let killed = Instant::now();
    assert_eq!(
        runner(&http, &bases[survivor..=survivor], &campaign).await,
        0
    );
    // The 30 s it had to be delivered after the kill, plus the 15 s call_at moved out.
    let deadline = Instant::now() + Duration::from_secs(45);
    let delivered = loop {
        let all = communications(&http, &bases[survivor], &campaign, &participant).await;
        if all.len() == 1 && all[0]["status"] == "Delivered" {
            break all[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "not delivered after the takeover: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "taken over and delivered {:?} after the kill",
        killed.elapsed()
    );
    let session = delivered["session_id"].as_str().unwrap();
    let log = messages(&http, &bases[survivor], &agent, session).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["text"], "It is time");
    // Nothing fires twice afterwards.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = communications(&http, &bases[survivor], &campaign, &participant).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["status"], "Delivered");
}
