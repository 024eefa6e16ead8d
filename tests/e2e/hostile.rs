//! Hostile definitions: numbers past the documented bounds are refused with 422 before
//! anything runs on them.

use reqwest::{Method, StatusCode};

use crate::support::*;

async fn create(t: &TestServer, yaml: &str) -> (StatusCode, serde_json::Value) {
    t.call_yaml(Method::POST, "/api/v1/agents", ADMIN_KEY, yaml)
        .await
}

#[tokio::test]
async fn durations_past_a_year_are_refused_with_their_path() {
    let t = TestServer::start().await;
    for (session, path) in [
        ("max_duration: 100000000000000", "session.max_duration"),
        ("user_timeout: 18446744073709551615", "session.user_timeout"),
    ] {
        let yaml = basic_agent(&format!("session:\n  {session}\n"));
        let (status, body) = create(&t, &yaml).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error_code(&body), "invalid_definition");
        assert_eq!(body["error"]["details"][0]["path"], path, "{body}");
        assert!(
            body["error"]["details"][0]["message"]
                .as_str()
                .unwrap()
                .contains("at most"),
            "{body}"
        );
    }
    let yaml = basic_agent(
        "llm:\n  - kind: webhook\n    url: http://127.0.0.1:9/\n    timeout_secs: 1e300\n",
    );
    let (status, body) = create(&t, &yaml).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["path"], "llm[0].timeout_secs");

    // At the bound, sessions start and chat as usual.
    let agent = t
        .agent(&basic_agent(
            "session:\n  max_duration: 31622400\n  user_timeout: 31622400\n",
        ))
        .await;
    let sid = t.session(&agent, serde_json::json!({})).await;
    let reply = t.say(&agent, &sid, "What are your opening hours?").await;
    assert!(reply.to_string().contains("9 to 17"), "{reply}");
}

/// Nine levels of nine aliases: 9^9 strings once expanded, from a few hundred bytes.
fn alias_bomb() -> String {
    let mut yaml =
        String::from("name: Bomb\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let p = format!("*x{}", i - 1);
        yaml += &format!("x{i}: &x{i} [{}]\n", vec![p; 9].join(", "));
    }
    yaml
}

fn refused_for_anchors(status: StatusCode, body: &serde_json::Value) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string()
            .contains("anchors and aliases (&name, *name) are not accepted"),
        "{body}"
    );
}

#[tokio::test]
async fn yaml_alias_bombs_are_refused_before_expansion_on_every_route() {
    let t = TestServer::start().await;
    let (status, body) = create(&t, &alias_bomb()).await;
    refused_for_anchors(status, &body);

    let agent = t.agent(&basic_agent("")).await;
    let (status, body) = json_of(
        t.admin(Method::PUT, &format!("/api/v1/agents/{}", agent.id))
            .header("content-type", "application/yaml")
            .body(alias_bomb())
            .send()
            .await
            .unwrap(),
    )
    .await;
    refused_for_anchors(status, &body);

    // An exported archive whose agent.yaml was swapped for the bomb.
    let resp = t
        .admin(Method::POST, &format!("/api/v1/agents/{}/export", agent.id))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let key = resp.headers()["x-parley-export-key"]
        .to_str()
        .unwrap()
        .to_string();
    let zip = resp.bytes().await.unwrap().to_vec();
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(swap_member(&zip, "agent.yaml", &alias_bomb()))
                .file_name("agent.zip"),
        )
        .text("secret_key", key);
    let (status, body) = json_of(
        t.http
            .post(t.url("/api/v1/agents/import"))
            .bearer_auth(ADMIN_KEY)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    refused_for_anchors(status, &body);

    let (status, c) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(serde_json::json!({"name": "C", "timezone": "UTC"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    let (status, body) = json_of(
        t.admin(
            Method::PUT,
            &format!("/api/v1/campaigns/{}/flows/main", c["id"].as_str().unwrap()),
        )
        .header("content-type", "application/yaml")
        .body(alias_bomb())
        .send()
        .await
        .unwrap(),
    )
    .await;
    refused_for_anchors(status, &body);

    // The agent is as it was.
    let (_, got) = t
        .call(Method::GET, &format!("/api/v1/agents/{}", agent.id), None)
        .await;
    assert_eq!(got["version"], 1, "{got}");
}

/// The archive with one member's content replaced.
fn swap_member(archive: &[u8], name: &str, content: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut zin = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..zin.len() {
        let mut f = zin.by_index(i).unwrap();
        let member = f.name().to_string();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        out.start_file(member.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        if member == name {
            out.write_all(content.as_bytes()).unwrap();
        } else {
            out.write_all(&bytes).unwrap();
        }
    }
    out.finish().unwrap().into_inner()
}
