//! Two `parley serve` processes on one Postgres and one Redis. Measures, in one run:
//! - a turn sent to the node that owns the session (local) against the same turn sent to
//!   the other node, which forwards it (the ratio is the cost of forwarding);
//! - Redis round trips per turn in steady state (heartbeats excluded), on both paths;
//! - a platform delivery (a signed webhook message) answered by the node that owns its
//!   chat's session against one answered by the other node, which verifies it and hands
//!   the message over (the ratio is the cost of the hand-over);
//! - takeover: from kill -9 of the owner to the first answered turn of its session on
//!   the survivor.
//!
//! `cargo bench --bench cluster` (needs Postgres and Redis; prints a notice and exits
//! without them).

#[allow(dead_code)]
#[path = "../tests/cluster/support.rs"]
mod support;

use std::time::{Duration, Instant};

use parley_connectors::webhook::{sign, WebhookSecret};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;

const SESSIONS: usize = 20;
const ROUNDS: usize = 50;
const INCOMING: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn admin(http: &reqwest::Client, method: reqwest::Method, url: String, body: Value) -> Value {
    let (status, body) = json_of(
        http.request(method, url)
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// A customer's message, signed per Standard Webhooks, posted to `base`; answers how long
/// the hook took to answer.
async fn hook(
    http: &reqwest::Client,
    base: &str,
    conn: &str,
    msg_id: &str,
    user: &str,
) -> Duration {
    let secret = WebhookSecret::parse(INCOMING).unwrap();
    let body = json!({"user_id": user, "text": "What are your opening hours?"}).to_string();
    let ts = chrono::Utc::now().timestamp();
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/hooks/{conn}"))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header(
            "webhook-signature",
            sign(&secret, msg_id, ts, body.as_bytes()),
        )
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    t.elapsed()
}

async fn registry_commands(http: &reqwest::Client, base: &str) -> u64 {
    cluster_status(http, base).await["registry"]["commands"]
        .as_u64()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let mut nodes = start_nodes(&["owner", "other"], &o);
    let (owner, other) = (nodes[0].url.clone(), nodes[1].url.clone());
    let http = client();
    let agent = create_agent(&http, &owner, &agent_yaml("")).await;
    let mut sids = Vec::new();
    for _ in 0..SESSIONS {
        let sid = create_session(&http, &owner, &agent).await;
        let (status, _) = say(&http, &owner, &agent, &sid, "warm up", None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        // The other node learns the owner once.
        let (status, _) = say(&http, &other, &agent, &sid, "warm up", None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        sids.push(sid);
    }

    let before = registry_commands(&http, &owner).await + registry_commands(&http, &other).await;
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for sid in &sids {
            // Alternating keeps both paths under the same conditions.
            for (base, into) in [(&owner, &mut local), (&other, &mut forwarded)] {
                let t = Instant::now();
                let (status, body) = say(
                    &http,
                    base,
                    &agent,
                    sid,
                    &format!("What are your opening hours? {round}"),
                    None,
                )
                .await
                .unwrap();
                assert_eq!(status, StatusCode::OK, "{body}");
                into.push(t.elapsed());
            }
        }
    }
    let after = registry_commands(&http, &owner).await + registry_commands(&http, &other).await;
    let turns = local.len() + forwarded.len();
    local.sort();
    forwarded.sort();
    let (l50, f50) = (percentile(&local, 0.5), percentile(&forwarded, 0.5));
    let (l99, f99) = (percentile(&local, 0.99), percentile(&forwarded, 0.99));
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;

    // Platform deliveries: chats whose sessions the owner opened, their next messages
    // posted to either node.
    let conn = admin(
        &http,
        reqwest::Method::POST,
        format!("{owner}/api/v1/connections"),
        json!({"name": "bench hooks", "platform": "webhook", "enabled": true,
               "config": {"incoming_secret": INCOMING}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    admin(
        &http,
        reqwest::Method::PUT,
        format!("{owner}/api/v1/agents/{}/channels", agent.id),
        json!([{"connection_id": conn, "inbound": true}]),
    )
    .await;
    admin(
        &http,
        reqwest::Method::POST,
        format!("{owner}/api/v1/connections/{conn}/start"),
        json!({}),
    )
    .await;
    for chat in 0..SESSIONS {
        hook(
            &http,
            &owner,
            &conn,
            &format!("open-{chat}"),
            &format!("u{chat}"),
        )
        .await;
    }
    let opened = Instant::now();
    loop {
        let log = admin(
            &http,
            reqwest::Method::GET,
            format!("{owner}/api/v1/connections/{conn}/events?limit=500"),
            json!({}),
        )
        .await;
        let replies = log["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "reply")
            .count();
        if replies >= SESSIONS {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(60),
            "chats not opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut hook_here, mut handed_over) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for chat in 0..SESSIONS {
            for (base, into, path) in [
                (&owner, &mut hook_here, "here"),
                (&other, &mut handed_over, "over"),
            ] {
                let id = format!("{path}-{round}-{chat}");
                into.push(hook(&http, base, &conn, &id, &format!("u{chat}")).await);
            }
        }
    }
    hook_here.sort();
    handed_over.sort();
    let (h50, o50) = (percentile(&hook_here, 0.5), percentile(&handed_over, 0.5));
    let (h99, o99) = (percentile(&hook_here, 0.99), percentile(&handed_over, 0.99));

    // Takeover after kill -9 of the owner.
    nodes[0].kill9();
    let killed = Instant::now();
    let mut answered = None;
    while killed.elapsed() < Duration::from_secs(15) {
        if let Ok((StatusCode::OK, _)) = say(
            &http,
            &other,
            &agent,
            &sids[0],
            "after the crash",
            Some("takeover-1"),
        )
        .await
        {
            answered = Some(killed.elapsed());
            break;
        }
    }
    let takeover = answered.expect("the survivor took the session over");

    println!("cluster bench: {turns} turns over {SESSIONS} sessions, one at a time");
    println!(
        "  local turn      p50 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
        l50.as_secs_f64() * 1e3,
        l99.as_secs_f64() * 1e3,
        mean(&local).as_secs_f64() * 1e3
    );
    println!(
        "  forwarded turn  p50 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
        f50.as_secs_f64() * 1e3,
        f99.as_secs_f64() * 1e3,
        mean(&forwarded).as_secs_f64() * 1e3
    );
    println!(
        "  forwarded / local: p50 {:.2}, mean {:.2} (target <= 1.5)",
        f50.as_secs_f64() / l50.as_secs_f64(),
        mean(&forwarded).as_secs_f64() / mean(&local).as_secs_f64()
    );
    println!(
        "  Redis round trips per turn in steady state (heartbeats excluded): {:.3} (target 0)",
        (after - before) as f64 / turns as f64
    );
    println!(
        "  hook, chat's session on that node  p50 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
        h50.as_secs_f64() * 1e3,
        h99.as_secs_f64() * 1e3,
        mean(&hook_here).as_secs_f64() * 1e3
    );
    println!(
        "  hook, handed to the owner          p50 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
        o50.as_secs_f64() * 1e3,
        o99.as_secs_f64() * 1e3,
        mean(&handed_over).as_secs_f64() * 1e3
    );
    println!(
        "  handed over / local hook: p50 {:.2}, mean {:.2}",
        o50.as_secs_f64() / h50.as_secs_f64(),
        mean(&handed_over).as_secs_f64() / mean(&hook_here).as_secs_f64()
    );
    println!(
        "  takeover after kill -9 (lease 2 s): first answer after {:.2} s (target <= 3 s)",
        takeover.as_secs_f64()
    );
    drop(nodes);
    svc.db.drop_now().await;
}
