//! Starting and stopping a server: store, tenant, node, HTTP listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use parley_actors::{Node, NodeConfig};
use parley_engine::registry::{
    LocalRegistry, NodeInfo, RedisRegistry, RedisRegistryConfig, Registry,
};
use parley_engine::store::{PgStore, SqliteStore, Store};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, Limits};
use crate::bootstrap::{self, DemoAgent, TenantSetup};
use crate::listen::{self, ConnectionLimits};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://PATH`; default `<data_dir>/parley.db`.
    pub database_url: Option<String>,
    pub admin_key: Option<String>,
    /// Lets its holder create tenants (`POST /api/v1/tenants`); none: no one can.
    pub super_key: Option<String>,
    /// Master key for connection secrets (default: `<data_dir>/secret.key`, generated).
    pub secret_key: Option<String>,
    pub node: NodeConfig,
    pub limits: Limits,
    /// Proxies whose `X-Forwarded-For` is believed (sign-in throttling per address).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub connections: ConnectionLimits,
    /// Create and start the agents of `examples_dir` when the store has none.
    pub load_examples: bool,
    pub examples_dir: PathBuf,
    pub cluster: ClusterConfig,
}

/// How this node finds the others. Without a Redis URL it is a cluster of one.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub redis_url: Option<String>,
    /// This node's id (default: generated).
    pub node_id: Option<String>,
    /// The base URL other nodes reach this one at (default: http://LISTEN address).
    pub advertise_url: Option<String>,
    /// Prefix of this cluster's keys in Redis.
    pub name: String,
    /// A node whose heartbeat stops for this long loses its sessions to the others.
    pub lease_ttl: std::time::Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: None,
            node_id: None,
            advertise_url: None,
            name: "parley".into(),
            lease_ttl: std::time::Duration::from_secs(2),
        }
    }
}

impl ServeConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            admin_key: None,
            super_key: None,
            secret_key: None,
            node: NodeConfig::default(),
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            connections: ConnectionLimits::default(),
            load_examples: true,
            examples_dir: PathBuf::from("examples/agents"),
            cluster: ClusterConfig::default(),
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
                let store = PgStore::connect(url)
                    .await
                    .context("--database-url: connecting to Postgres")?;
                store.migrate().await.context("running migrations")?;
                return Ok(Arc::new(store));
            } else {
                anyhow::bail!("--database-url: expected sqlite://PATH or postgres://…");
            }
        }
    };
    let store = SqliteStore::open(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    store.migrate().await.context("running migrations")?;
    Ok(Arc::new(store))
}

/// The registry a config names, for a node reachable at `addr`.
fn registry(cfg: &ClusterConfig, addr: SocketAddr) -> anyhow::Result<Arc<dyn Registry>> {
    let id = cfg
        .node_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    let url = match &cfg.advertise_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if addr.ip().is_unspecified() => {
            anyhow::bail!("--advertise-url is required when listening on {addr}: other nodes need an address they can reach")
        }
        None => format!("http://{addr}"),
    };
    let node = NodeInfo { id, url };
    Ok(match &cfg.redis_url {
        None => Arc::new(LocalRegistry::new(node)),
        Some(redis) => Arc::new(
            RedisRegistry::new(
                node,
                RedisRegistryConfig {
                    url: redis.clone(),
                    prefix: cfg.name.clone(),
                    lease_ttl: cfg.lease_ttl,
                    timeout: (cfg.lease_ttl / 4).max(std::time::Duration::from_millis(100)),
                },
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
    })
}

pub struct Server {
    pub addr: SocketAddr,
    pub node: Node,
    pub tenant: TenantSetup,
    pub demo_agents: Vec<DemoAgent>,
    /// Widgets whose demo page works on this server: (agent name, widget id).
    pub demo_widgets: Vec<(String, String)>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub async fn start(mut cfg: ServeConfig) -> anyhow::Result<Server> {
    if let Some(key) = &cfg.admin_key {
        bootstrap::check_admin_key(key)?;
    }
    if cfg.cluster.redis_url.is_some() && cfg.secret_key.is_none() {
        anyhow::bail!("--secret-key is required with --redis-url: every node must seal and open connection secrets with the same key");
    }
    let store = open_store(&cfg).await?;
    cfg.node.secrets = bootstrap::master_key(&cfg.data_dir, cfg.secret_key.as_deref())?;
    let tenant =
        bootstrap::ensure_tenant(store.as_ref(), &cfg.data_dir, cfg.admin_key.as_deref()).await?;
    // Bound first: the registry advertises the address actually bound (port 0 in tests).
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let registry = registry(&cfg.cluster, addr)?;
    let node = Node::start_in_cluster(store, registry, cfg.node.clone()).await?;
    let demo_agents = if cfg.load_examples {
        bootstrap::load_examples(&node, tenant.tenant, &cfg.examples_dir, addr).await?
    } else {
        Vec::new()
    };
    let demo_widgets = bootstrap::demo_widgets(&node, tenant.tenant, addr).await?;
    let opens = Arc::new(api::open_limits::OpenLimits::new(
        cfg.limits.open_per_credential,
        cfg.limits.open_per_address,
    ));
    {
        // Quiet buckets are dropped until the server (and with it the limits) is gone.
        let opens = Arc::downgrade(&opens);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(api::open_limits::PRUNE_EVERY).await;
                match opens.upgrade() {
                    Some(o) => o.prune(),
                    None => break,
                }
            }
        });
    }
    let visitor_limits = Arc::new(api::open_limits::VisitorLimits::new(
        cfg.limits.widget_per_address,
        cfg.limits.widget_per_visitor,
    ));
    {
        let limits = Arc::downgrade(&visitor_limits);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(api::open_limits::PRUNE_EVERY).await;
                match limits.upgrade() {
                    Some(l) => l.prune(),
                    None => break,
                }
            }
        });
    }
    let app = api::router(AppState {
        node: node.clone(),
        limits: cfg.limits,
        trusted_proxies: cfg.trusted_proxies.clone().into(),
        forwarder: api::forward::client(),
        node_key: Arc::new(api::relay::NodeKey::new(&cfg.node.secrets)),
        super_key_hash: cfg
            .super_key
            .as_deref()
            .map(parley_engine::auth::hash_secret),
        opens,
        visitors: Arc::new(parley_engine::widget::VisitorKeys::new(
            cfg.node.secrets.derive_key("widget visitors"),
        )),
        visitor_limits,
    });
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(listen::serve(listener, app, cfg.connections, async {
        let _ = rx.await;
    }));
    let me = node.registry().node();
    tracing::info!(%addr, node = %me.id, url = %me.url, "listening");
    Ok(Server {
        addr,
        node,
        tenant,
        demo_agents,
        demo_widgets,
        shutdown: tx,
        task,
    })
}

impl Server {
    /// Stops accepting, lets in-flight requests finish, then stops the actor tree (which
    /// commits what it accepted).
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "server task failed");
        }
        self.node.shutdown().await;
    }
}
