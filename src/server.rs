//! Starting and stopping a server: store, tenant, node, HTTP listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use parley_actors::{Node, NodeConfig};
use parley_engine::store::{SqliteStore, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, Limits};
use crate::bootstrap::{self, DemoAgent, TenantSetup};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; default `<data_dir>/parley.db`.
    pub database_url: Option<String>,
    pub admin_key: Option<String>,
    pub node: NodeConfig,
    pub limits: Limits,
    /// Create and start the agents of `examples_dir` when the store has none.
    pub load_examples: bool,
    pub examples_dir: PathBuf,
}

impl ServeConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            admin_key: None,
            node: NodeConfig::default(),
            limits: Limits::default(),
            load_examples: true,
            examples_dir: PathBuf::from("examples/agents"),
        }
    }
}

/// Opens (and migrates) the store a config names.
pub async fn open_store(cfg: &ServeConfig) -> anyhow::Result<Arc<dyn Store>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    let path = match cfg.database_url.as_deref() {
        None => cfg.data_dir.join("parley.db"),
        Some(url) => {
            if let Some(p) = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                PathBuf::from(p)
            } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                anyhow::bail!("--database-url: Postgres is not supported by this build yet; use sqlite://PATH or leave it out for the embedded store");
            } else {
                anyhow::bail!("--database-url: expected sqlite://PATH");
            }
        }
    };
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    store.migrate().await.context("running migrations")?;
    Ok(Arc::new(store))
}

pub struct Server {
    pub addr: SocketAddr,
    pub node: Node,
    pub tenant: TenantSetup,
    pub demo_agents: Vec<DemoAgent>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

pub async fn start(cfg: ServeConfig) -> anyhow::Result<Server> {
    let store = open_store(&cfg).await?;
    let tenant =
        bootstrap::ensure_tenant(store.as_ref(), &cfg.data_dir, cfg.admin_key.as_deref()).await?;
    let node = Node::start(store, cfg.node.clone()).await?;
    let demo_agents = if cfg.load_examples {
        bootstrap::load_examples(&node, tenant.tenant, &cfg.examples_dir).await?
    } else {
        Vec::new()
    };
    let app = api::router(AppState {
        node: node.clone(),
        limits: cfg.limits,
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    tracing::info!(%addr, "listening");
    Ok(Server {
        addr,
        node,
        tenant,
        demo_agents,
        shutdown: tx,
        task,
    })
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, then stops the actor tree (which
    /// commits what it accepted).
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        match self.task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "server error while stopping"),
            Err(e) => tracing::warn!(error = %e, "server task failed"),
            Ok(Ok(())) => {}
        }
        self.node.shutdown().await;
    }
}
