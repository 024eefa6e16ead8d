//! What the benches share: a node on a fresh SQLite file with the demo agent running.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parley_actors::{Node, NodeConfig};
use parley_engine::agent::Format;
use parley_engine::store::{SqliteStore, Store, Tenant};
use uuid::Uuid;

pub struct BenchNode {
    pub node: Node,
    pub agent: Uuid,
    /// Keeps the store's directory alive as long as the node.
    pub _dir: tempfile::TempDir,
}

/// A node whose sessions never passivate during a run.
pub async fn bench_node() -> BenchNode {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bench.db"))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let tenant = Tenant {
        id: Uuid::now_v7(),
        name: "bench".into(),
        api_key_hash: "x".into(),
        created_at: Utc::now(),
    };
    store.create_tenant(&tenant).await.unwrap();
    let config = NodeConfig {
        passivate_after: Duration::from_secs(3600),
        ..NodeConfig::default()
    };
    let node = Node::start(Arc::new(store), config).await.unwrap();
    let (agent, _, _) = node
        .create_agent(tenant.id, parley::bootstrap::DEMO_AGENT, Format::Yaml)
        .await
        .unwrap();
    node.start_agent(tenant.id, agent.id).await.unwrap();
    BenchNode {
        node,
        agent: agent.id,
        _dir: dir,
    }
}
