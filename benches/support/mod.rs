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
    #[allow(dead_code, reason = "campaign benches need no agent")]
    pub agent: Uuid,
    #[allow(dead_code, reason = "only some benches create tenant-owned things")]
    pub tenant: Uuid,
    /// Keeps the store's directory alive as long as the node.
    pub _dir: tempfile::TempDir,
}

/// A node whose sessions never passivate during a run.
pub async fn bench_node() -> BenchNode {
    bench_node_with(NodeConfig::default()).await
}

/// Like [`bench_node`], on `config` (sessions still never passivate).
pub async fn bench_node_with(config: NodeConfig) -> BenchNode {
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
        settings: Default::default(),
    };
    store.create_tenant(&tenant).await.unwrap();
    // Fake platforms run on loopback, which the default egress policy denies.
    let config = NodeConfig {
        passivate_after: Duration::from_secs(3600),
        egress: parley_engine::egress::EgressPolicy::new(true, &["127.0.0.0/8".into()]).unwrap(),
        ..config
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
        tenant: tenant.id,
        _dir: dir,
    }
}

/// Work done and time spent across a bench's iterations, for the run's summary rate.
pub struct Totals {
    done: std::sync::atomic::AtomicU64,
    nanos: std::sync::atomic::AtomicU64,
}

#[allow(dead_code, reason = "only some benches report totals")]
impl Totals {
    pub const fn new() -> Totals {
        Totals {
            done: std::sync::atomic::AtomicU64::new(0),
            nanos: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn record(&self, done: u64, d: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.done.fetch_add(done, Relaxed);
        self.nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// Work per second over everything recorded.
    pub fn rate(&self) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.done.load(Relaxed) as f64 / (self.nanos.load(Relaxed) as f64 / 1e9)
    }
}
