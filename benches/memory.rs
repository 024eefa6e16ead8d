//! Resident memory per idle session actor at 100,000 sessions, against bare ractor actors
//! measured in the same process. Prints RSS deltas from /proc/self/statm.
//!
//! `cargo bench --bench memory` (PARLEY_BENCH_SESSIONS overrides the count).

mod support;

use std::time::Duration;

use parley_actors::session::TurnRequest;
use parley_actors::Node;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use support::bench_node;
use uuid::Uuid;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

struct Bare;

impl Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

async fn run(n: usize) {
    // Baseline: bare actors with no state.
    let before = rss_bytes();
    let mut bare = Vec::with_capacity(n);
    for _ in 0..n {
        bare.push(Actor::spawn(None, Bare, ()).await.unwrap().0);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bare_per = (rss_bytes().saturating_sub(before)) as f64 / n as f64;
    for a in &bare {
        a.stop(None);
    }
    drop(bare);

    let bench = bench_node().await;
    let (node, agent_id) = (bench.node.clone(), bench.agent);

    // Sessions are created in the store without actors.
    let mut ids = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for _ in 0..n {
        let node = node.clone();
        pending.push(tokio::spawn(async move {
            node.create_session(agent_id, Default::default())
                .await
                .unwrap()
                .id
        }));
        if pending.len() == 1000 {
            for p in pending.drain(..) {
                ids.push(p.await.unwrap());
            }
        }
    }
    for p in pending {
        ids.push(p.await.unwrap());
    }
    // Activate every session (load it from the store into its actor), 1000 at a time.
    let before = rss_bytes();
    for chunk in ids.chunks(1000) {
        let waits: Vec<_> = chunk
            .iter()
            .map(|&sid| {
                let node = node.clone();
                tokio::spawn(async move { node.activate_session(sid).await.unwrap() })
            })
            .collect();
        for w in waits {
            w.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = (rss_bytes().saturating_sub(before)) as f64 / n as f64;

    // Then one turn each: what a session that has spoken costs, store caches included.
    let before = rss_bytes();
    for chunk in ids.chunks(1000) {
        let waits: Vec<_> = chunk
            .iter()
            .map(|&sid| {
                let node = node.clone();
                tokio::spawn(async move { turn(&node, agent_id, sid).await })
            })
            .collect();
        for w in waits {
            w.await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_turn = idle + (rss_bytes().saturating_sub(before)) as f64 / n as f64;
    println!("resident sessions: {}", node.resident_sessions());
    println!("bare ractor actor:                 {bare_per:>8.0} bytes RSS each");
    println!(
        "idle resident session actor:       {idle:>8.0} bytes RSS each ({:.2} KiB; target <= 10 KiB)",
        idle / 1024.0
    );
    println!(
        "ratio idle session / bare actor:   {:>8.2}",
        idle / bare_per
    );
    println!("after one turn each:               {after_turn:>8.0} bytes RSS each (the store's page-cache growth included)");
    node.shutdown().await;
}

async fn turn(node: &Node, agent: Uuid, sid: Uuid) {
    node.turn(
        sid,
        TurnRequest {
            agent_id: agent,
            text: "What is the daily spending limit?".into(),
            attachments: Vec::new(),
            idempotency_key: None,
            new_key: false,
        },
    )
    .await
    .unwrap();
}

fn main() {
    let n: usize = std::env::var("PARLEY_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n.max(1000)));
}
