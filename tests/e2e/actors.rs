use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

/// A node-wide view: the super key.
async fn get(t: &TestServer, path: &str) -> (StatusCode, Value) {
    t.call_as(Method::GET, path, SUPER_KEY, None).await
}

fn ids(page: &Value) -> Vec<String> {
    page["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

/// The tree from the node down: its children, the agents, the shards' sessions, with
/// filters and pages.
#[tokio::test]
async fn the_actor_tree_is_listed_filtered_and_paged() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let mut sids = Vec::new();
    for _ in 0..3 {
        let sid = t.session(&a, json!({})).await;
        t.say(&a, &sid, "hello").await;
        sids.push(sid);
    }
    let (status, root) = get(&t, "/api/v1/admin/actors").await;
    assert_eq!(status, StatusCode::OK, "{root}");
    assert_eq!(root["actor"]["id"], "node");
    assert_eq!(root["actor"]["kind"], "node_supervisor");
    assert_eq!(
        ids(&root),
        [
            "persistence",
            "agent_supervisor",
            "channel_supervisor",
            "campaign_supervisor",
            "shard:0",
            "shard:1",
            "shard:2",
            "shard:3"
        ]
    );
    let shards: u64 = root["children"].as_array().unwrap()[4..]
        .iter()
        .map(|s| s["children"].as_u64().unwrap())
        .sum();
    assert_eq!(shards, 3, "every resident session is under a shard: {root}");
    assert_eq!(root["children"][0]["mailbox"], 0, "{root}");

    let (_, agents) = get(&t, "/api/v1/admin/actors?parent=agent_supervisor").await;
    assert_eq!(ids(&agents), [format!("agent:{}", a.id)]);

    let (_, sessions) = get(&t, "/api/v1/admin/actors?kind=session").await;
    assert_eq!(sessions["total"], 3);
    let mut listed = ids(&sessions);
    listed.sort();
    let mut expected: Vec<String> = sids.iter().map(|s| format!("session:{s}")).collect();
    expected.sort();
    assert_eq!(listed, expected);
    let s0 = &sessions["children"][0];
    assert_eq!(
        (s0["kind"].as_str(), s0["status"].as_str()),
        (Some("session"), Some("Running"))
    );
    assert_eq!(s0["mailbox"], 0);

    let (_, first) = get(&t, "/api/v1/admin/actors?kind=session&limit=2").await;
    let (_, rest) = get(&t, "/api/v1/admin/actors?kind=session&limit=2&offset=2").await;
    assert_eq!((ids(&first).len(), ids(&rest).len()), (2, 1));
    assert_eq!(first["total"], 3);
    let (_, stopped) = get(&t, "/api/v1/admin/actors?kind=session&status=stopped").await;
    assert_eq!(stopped["total"], 0);

    let owner = root["children"].as_array().unwrap()[4..]
        .iter()
        .find(|s| s["children"].as_u64().unwrap() > 0)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, shard) = get(&t, &format!("/api/v1/admin/actors?parent={owner}")).await;
    assert!(shard["total"].as_u64().unwrap() >= 1);
    assert!(ids(&shard).iter().all(|id| id.starts_with("session:")));

    for (path, code) in [
        (
            "/api/v1/admin/actors?kind=bogus",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/admin/actors?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/admin/actors?offset=-1",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/admin/actors?parent=shard:99",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, body) = get(&t, path).await;
        assert_eq!(status, code, "{path}: {body}");
        error_code(&body);
    }
    let r = t
        .http
        .get(t.url("/api/v1/admin/actors"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// An operator stops or restarts one session actor, or passivates idle sessions; the
/// sessions keep their history and keep working.
#[tokio::test]
async fn operators_stop_restart_and_passivate_session_actors() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    t.say(&a, &sid, "one").await;
    let actor = format!("session:{sid}");
    let post = |path: String| t.http.post(t.url(&path)).bearer_auth(SUPER_KEY).send();

    let (status, body) = json_of(
        post(format!("/api/v1/admin/actors/{actor}/stop"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(t.node().resident_sessions(), 0);
    t.say(&a, &sid, "two").await;
    assert_eq!(t.node().resident_sessions(), 1);

    let (status, _) = get(&t, &format!("/api/v1/admin/actors?parent={actor}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = json_of(
        post(format!("/api/v1/admin/actors/{actor}/restart"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        t.node().resident_sessions(),
        1,
        "restarted and resident again"
    );
    t.say(&a, &sid, "three").await;
    let texts: Vec<String> = t
        .log(&a, &sid)
        .await
        .iter()
        .filter(|m| m["role"] == "HUMAN")
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);

    let (status, body) = json_of(
        post("/api/v1/admin/actors/persistence/stop".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = json_of(
        post(format!(
            "/api/v1/admin/actors/session:{}/stop",
            uuid::Uuid::new_v4()
        ))
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = json_of(
        post("/api/v1/admin/sessions/passivate".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resident_before"], 1);
    eventually(5, "sessions passivate", || async {
        t.node().resident_sessions() == 0
    })
    .await;
}

/// `parley tree` draws the same tree in the terminal.
#[tokio::test]
async fn parley_tree_prints_the_tree() {
    let t = TestServer::with_super_key().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({})).await;
    t.say(&a, &sid, "hello").await;
    let base = t.base.clone();
    let run = move |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["tree", "--url", &base, "--admin-key", SUPER_KEY])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(&["--depth", "2"])
    })
    .await
    .unwrap();
    assert!(text.starts_with("node [node_supervisor] Running"), "{text}");
    for part in [
        "├─ persistence [persistence]",
        "agent_supervisor [agent_supervisor]",
        &format!("agent:{}", a.id),
        &format!("session:{sid} [session] Running"),
    ] {
        assert!(text.contains(part), "{part:?} missing:\n{text}");
    }
    let flat = tokio::task::spawn_blocking(move || run(&["--kind", "session"]))
        .await
        .unwrap();
    assert!(flat.starts_with("1 actors of kind session"), "{flat}");
    let base = t.base.clone();
    let bad = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["tree", "--url", &base, "--admin-key", "wrong"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("401"));
}

/// A tenant admin sees a root of its own with its agents and sessions, acts on its own
/// sessions only, and never sees or touches another tenant's actors or the node's own.
#[tokio::test]
async fn tenant_admins_see_and_act_on_their_own_actors_only() {
    let t = TestServer::with_super_key().await;
    let b_key = t.tenant("B").await;
    let a = t.agent(&basic_agent("")).await;
    let b = t.agent_as(&b_key, &basic_agent("")).await;
    let a_sid = t.session(&a, json!({})).await;
    t.say(&a, &a_sid, "hello").await;
    let b_sid = t.session(&b, json!({})).await;
    t.say(&b, &b_sid, "hello").await;

    let (status, root) = t
        .call_as(Method::GET, "/api/v1/admin/actors", &b_key, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{root}");
    assert_eq!(root["actor"]["kind"], "tenant", "{root}");
    assert_eq!(ids(&root), [format!("agent:{}", b.id)]);
    let (_, sessions) = t
        .call_as(
            Method::GET,
            "/api/v1/admin/actors?kind=session",
            &b_key,
            None,
        )
        .await;
    assert_eq!(ids(&sessions), [format!("session:{b_sid}")], "{sessions}");
    let (_, agents) = t
        .call_as(Method::GET, "/api/v1/admin/actors?kind=agent", &b_key, None)
        .await;
    assert_eq!(ids(&agents), [format!("agent:{}", b.id)], "{agents}");
    for parent in ["persistence", "shard:0", "agent_supervisor"] {
        let (status, body) = t
            .call_as(
                Method::GET,
                &format!("/api/v1/admin/actors?parent={parent}"),
                &b_key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{parent}: {body}");
    }
    for parent in [format!("agent:{}", a.id), format!("session:{a_sid}")] {
        let (status, body) = t
            .call_as(
                Method::GET,
                &format!("/api/v1/admin/actors?parent={parent}"),
                &b_key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{parent}: {body}");
    }
    // Tenant A's session can be neither stopped nor restarted by B.
    for action in ["stop", "restart"] {
        let (status, body) = t
            .call_as(
                Method::POST,
                &format!("/api/v1/admin/actors/session:{a_sid}/{action}"),
                &b_key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {body}");
    }
    assert_eq!(t.node().resident_sessions(), 2);
    // B passivates its own sessions; A's stays resident.
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/admin/sessions/passivate",
            &b_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resident_before"], 1, "{body}");
    eventually(5, "B's session passivates", || async {
        t.node().resident_sessions() == 1
    })
    .await;
    let (_, a_view) = t
        .call_as(
            Method::GET,
            "/api/v1/admin/actors?kind=session",
            ADMIN_KEY,
            None,
        )
        .await;
    assert_eq!(ids(&a_view), [format!("session:{a_sid}")], "{a_view}");
    // B stops its own session.
    t.say(&b, &b_sid, "again").await;
    let (status, body) = t
        .call_as(
            Method::POST,
            &format!("/api/v1/admin/actors/session:{b_sid}/stop"),
            &b_key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Asking for sessions that do not exist leaves no actor behind.
#[tokio::test]
async fn unknown_sessions_leave_no_resident_actor() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    for _ in 0..50 {
        let sid = uuid::Uuid::now_v7();
        let r = t.run(&a, &sid.to_string(), "hello").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    eventually(5, "the empty actors are gone", || async {
        t.node().resident_sessions() == 0
    })
    .await;
}
