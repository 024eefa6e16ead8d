use std::collections::HashSet;

use rand::Rng;
use reqwest::StatusCode;

use crate::support::*;

/// Conversations spread over three nodes, each message sent to a random node: every turn
/// is answered, and every history holds each message once, in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_every_session_in_order() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["n1", "n2", "n3"], &o);
    let bases: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = client();
    let agent = create_agent(&http, &bases[0], &agent_yaml("")).await;

    const SESSIONS: usize = 12;
    const TURNS: usize = 8;
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (http, bases, agent) = (http.clone(), bases.clone(), agent.clone());
        tasks.push(tokio::spawn(async move {
            let sid = create_session(&http, &bases[s % 3], &agent).await;
            for t in 0..TURNS {
                let base = &bases[rand::thread_rng().gen_range(0..3)];
                let (status, body) = say(&http, base, &agent, &sid, &format!("s{s} m{t}"), None)
                    .await
                    .unwrap();
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            sid
        }));
    }
    let mut sids = Vec::new();
    for t in tasks {
        sids.push(t.await.unwrap());
    }
    for (s, sid) in sids.iter().enumerate() {
        let expected: Vec<String> = (0..TURNS).map(|t| format!("s{s} m{t}")).collect();
        // Any node reads the same history.
        for base in &bases {
            assert_eq!(human_texts(&http, base, &agent, sid).await, expected);
        }
        let log = messages(&http, &bases[0], &agent, sid).await;
        assert_eq!(
            log.len(),
            1 + 2 * TURNS,
            "greeting plus one answer per message"
        );
    }
    // Requests really crossed nodes, and sessions live on more than one node.
    let mut forwards = 0;
    let mut owners = HashSet::new();
    for base in &bases {
        let st = cluster_status(&http, base).await;
        assert_eq!(st["nodes"].as_array().unwrap().len(), 3, "{st}");
        forwards += st["registry"]["forwards"].as_u64().unwrap();
        if st["resident_sessions"].as_u64().unwrap() > 0 {
            owners.insert(st["node"]["id"].as_str().unwrap().to_string());
        }
    }
    assert!(forwards > 0, "no request was forwarded");
    assert!(
        owners.len() > 1,
        "all sessions ended up on one node: {owners:?}"
    );
    drop(nodes);
    svc.db.drop_now().await;
}

/// Messages for one session sent to all nodes at once are applied one at a time: each
/// customer message is directly followed by its answer, none is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_to_different_nodes_are_serialised() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["c1", "c2", "c3"], &o);
    let bases: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let http = client();
    let agent = create_agent(&http, &bases[0], &agent_yaml("")).await;
    let sid = create_session(&http, &bases[1], &agent).await;

    let mut tasks = Vec::new();
    for i in 0..30 {
        let (http, base, agent, sid) = (
            http.clone(),
            bases[i % 3].clone(),
            agent.clone(),
            sid.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (status, body) = say(&http, &base, &agent, &sid, &format!("burst {i}"), None)
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = messages(&http, &bases[2], &agent, &sid).await;
    assert_eq!(log.len(), 1 + 60);
    let mut seen = HashSet::new();
    for pair in log[1..].chunks(2) {
        assert_eq!(pair[0]["role"], "HUMAN", "{log:?}");
        assert_eq!(
            pair[1]["role"], "AI",
            "an answer follows its message: {log:?}"
        );
        assert!(seen.insert(pair[0]["text"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen.len(), 30);
    let ids: Vec<i64> = log.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=61).collect::<Vec<_>>());
    drop(nodes);
    svc.db.drop_now().await;
}

/// A WebSocket opened on a node that does not own the session is proxied to the owner:
/// it streams the events of turns sent to any node, and messages sent on it are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_on_another_node_reaches_the_owner() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["w1", "w2"], &o);
    let http = client();
    let agent = create_agent(&http, &nodes[0].url, &agent_yaml("")).await;
    let sid = create_session(&http, &nodes[0].url, &agent).await;
    // n1 owns the session.
    let (status, _) = say(&http, &nodes[0].url, &agent, &sid, "first", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let ws_url = format!(
        "{}/chatbot/{}/ws/{sid}?token={}",
        nodes[1].url.replacen("http", "ws", 1),
        agent.id,
        agent.token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let (status, _) = say(&http, &nodes[0].url, &agent, &sid, "via rest", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    ws.send(Message::text(
        r#"{"type":"message","message":"via socket"}"#,
    ))
    .await
    .unwrap();
    let mut texts = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while texts.len() < 2 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "message" && v["role"] == "HUMAN" {
                texts.push(v["text"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(texts, ["via rest", "via socket"]);
    assert_eq!(
        human_texts(&http, &nodes[1].url, &agent, &sid).await,
        ["first", "via rest", "via socket"]
    );
    drop(ws);
    drop(nodes);
    svc.db.drop_now().await;
}

/// A customer's socket (`/ws/{user_id}`) on one node receives the events of their
/// conversations served by another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_events_reach_a_socket_on_another_node() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["u1", "u2"], &o);
    let http = client();
    let agent = create_agent(&http, &nodes[0].url, &agent_yaml("")).await;
    let ws_url = format!(
        "{}/ws/customer-7?agent_id={}&token={}",
        nodes[1].url.replacen("http", "ws", 1),
        agent.id,
        agent.token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    // The nodes exchange who watches whom once a second.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, body) = json_of(
        http.post(format!("{}/chatbot/{}/session", nodes[0].url, agent.id))
            .bearer_auth(&agent.token)
            .json(&serde_json::json!({"user_id": "customer-7"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sid = body["session_id"].as_str().unwrap().to_string();
    let (status, _) = say(&http, &nodes[0].url, &agent, &sid, "hello from afar", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !seen
        .iter()
        .any(|(t, x): &(String, String)| t == "CONVERSATION_NEW_MESSAGE" && x == "hello from afar")
    {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("events did not arrive; got {seen:?}"))
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            seen.push((
                v["type"].as_str().unwrap_or("").to_string(),
                v["text"].as_str().unwrap_or("").to_string(),
            ));
            assert_eq!(v["session_id"].as_str().unwrap_or(&sid), sid, "{v}");
        }
    }
    assert_eq!(
        seen.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [
            "CONVERSATION_CREATED",
            "CONVERSATION_NEW_MESSAGE",
            "CONVERSATION_NEW_MESSAGE"
        ],
        "created, the greeting, the customer's message: {seen:?}"
    );
    drop(ws);
    drop(nodes);
    svc.db.drop_now().await;
}

/// A request without valid credentials for a session another node owns is refused where
/// it arrives: no registry lookup, nothing forwarded, nothing reaches the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_refused_before_routing() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["n1", "n2"], &o);
    let (owner, other) = (nodes[0].url.clone(), nodes[1].url.clone());
    let http = client();
    let agent = create_agent(&http, &owner, &agent_yaml("")).await;
    let sid = create_session(&http, &owner, &agent).await;
    let (status, body) = say(&http, &owner, &agent, &sid, "hello", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");

    let before = cluster_status(&http, &other).await["registry"].clone();
    let url = format!("{other}/chatbot/{}/session/{sid}/run_v2", agent.id);
    let big = "x".repeat(1 << 20);
    for token in [
        None,
        Some("pat_not-the-token"),
        Some("pk_not_the_admin_key_0123456"),
    ] {
        let mut rb = http.post(&url).json(&serde_json::json!({"message": big}));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let (status, body) = json_of(rb.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {body}");
    }
    let conv = format!("{other}/api/v1/conversations/{sid}/messages");
    let (status, _) = json_of(
        http.post(&conv)
            .json(&serde_json::json!({"text": big}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let after = cluster_status(&http, &other).await["registry"].clone();
    for counter in ["forwards", "lookups"] {
        assert_eq!(
            after[counter], before[counter],
            "{counter}: {before} -> {after}"
        );
    }
    let metrics = http
        .get(format!("{owner}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("parley_http_requests_total") && l.contains("status=\"401\"")),
        "a refused request reached the owner:\n{metrics}"
    );
    drop(nodes);
    svc.db.drop_now().await;
}
