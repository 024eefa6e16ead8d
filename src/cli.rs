//! The command line: `serve`, `migrate`, `agent validate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use parley_engine::agent::{parse_and_compile, Format};

use crate::listen::ConnectionLimits;
use crate::server::{self, ClusterConfig, ServeConfig};

#[derive(Debug, Parser)]
#[command(name = "parley", version, about = "An actor-based conversation engine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP + WebSocket API) on the embedded store by default.
    Serve(Box<ServeArgs>),
    /// Create or upgrade the store's schema, then exit.
    Migrate(StoreArgs),
    /// Work with agent definitions offline.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Print a running node's actor tree (admin API).
    Tree(TreeCli),
}

#[derive(Debug, Clone, Args)]
pub struct TreeCli {
    /// The node's base URL.
    #[arg(long, env = "PARLEY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The tenant's admin API key.
    #[arg(long, env = "PARLEY_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
    /// Only actors of this kind, as a flat list (node_supervisor, persistence,
    /// agent_supervisor, agent, session_shard, session).
    #[arg(long)]
    pub kind: Option<String>,
    /// Levels below the node to show.
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Children shown per actor (the rest are counted).
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Redraw every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Check an agent definition (YAML or JSON) and print every problem with its path.
    Validate { file: PathBuf },
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where the embedded store and the generated admin key live.
    #[arg(long, env = "PARLEY_DATA_DIR", default_value = "./parley-data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: DATA_DIR/parley.db) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "PARLEY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[arg(long, env = "PARLEY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub store: StoreArgs,
    /// The tenant's admin API key; generated on first start when not given.
    #[arg(long, env = "PARLEY_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// Deployment-level key that may create tenants (`POST /api/v1/tenants`); without
    /// one, no tenant can be created over the API.
    #[arg(long, env = "PARLEY_SUPER_KEY", hide_env_values = true)]
    pub super_key: Option<String>,
    /// Master key sealing connection secrets at rest: 32 bytes as 64 hex digits or base64
    /// (default: DATA_DIR/secret.key, generated). Every node of a cluster needs the same.
    #[arg(long, env = "PARLEY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    #[arg(long, env = "PARLEY_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[arg(long, env = "PARLEY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Seconds an idle session actor stays resident before it passivates.
    #[arg(long, env = "PARLEY_PASSIVATE_AFTER", default_value_t = 60)]
    pub passivate_after: u64,
    /// Session supervisor shards.
    #[arg(long, env = "PARLEY_SHARDS", default_value_t = 16)]
    pub shards: usize,
    /// A proxy (an address or CIDR, repeatable) whose `X-Forwarded-For` names the
    /// client; without one the header is ignored and the peer address is the client's.
    #[arg(long = "trusted-proxy", env = "PARLEY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Open HTTP connections at most (WebSockets included); more wait to be accepted.
    #[arg(long, env = "PARLEY_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// Milliseconds a client may take to send a request's headers before it is
    /// disconnected.
    #[arg(long, env = "PARLEY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,
    /// Largest request body in bytes (attachments included).
    #[arg(long, env = "PARLEY_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Sessions and WebSockets one agent token (or one tenant's operators) may open per
    /// second, with bursts of ten times that; 0: no limit.
    #[arg(long, env = "PARLEY_OPEN_RATE_PER_CREDENTIAL", default_value_t = 50)]
    pub open_rate_per_credential: u32,
    /// Sessions and WebSockets one client address may open per second, with bursts of ten
    /// times that; 0: no limit.
    #[arg(long, env = "PARLEY_OPEN_RATE_PER_ADDRESS", default_value_t = 100)]
    pub open_rate_per_address: u32,
    /// Requests to the web widget's public routes one client address may make per
    /// second, with bursts of ten times that; 0: no limit.
    #[arg(long, env = "PARLEY_WIDGET_RATE_PER_ADDRESS", default_value_t = 20)]
    pub widget_rate_per_address: u32,
    /// Conversations, messages and sockets one widget visitor may start per second, with
    /// bursts of ten times that; 0: no limit.
    #[arg(long, env = "PARLEY_WIDGET_RATE_PER_VISITOR", default_value_t = 2)]
    pub widget_rate_per_visitor: u32,
    /// Agents loaded into an empty store.
    #[arg(long, env = "PARLEY_EXAMPLES_DIR", default_value = "examples/agents")]
    pub examples_dir: PathBuf,
    /// Do not create demo agents in an empty store.
    #[arg(long)]
    pub no_examples: bool,
    /// Redis shared by the nodes of a cluster (`redis://HOST:PORT`); without it this
    /// node serves alone.
    #[arg(long, env = "PARLEY_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// This node's id in the cluster (default: generated, printed at start).
    #[arg(long, env = "PARLEY_NODE_ID")]
    pub node_id: Option<String>,
    /// The base URL other nodes forward requests to (default: http://LISTEN).
    #[arg(long, env = "PARLEY_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The public base URL platforms reach this deployment at (Telegram's setWebhook is
    /// given `{public_url}/hooks/{connection_id}`).
    #[arg(long, env = "PARLEY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Name of the cluster: the prefix of its keys in Redis, so clusters can share one.
    #[arg(long, env = "PARLEY_CLUSTER", default_value = "parley")]
    pub cluster: String,
    /// Milliseconds a node's lease lasts without a heartbeat (it beats four times per
    /// lease); a node silent this long loses its sessions to the others.
    #[arg(long, env = "PARLEY_LEASE_TTL_MS", default_value_t = 2000)]
    pub lease_ttl_ms: u64,
    /// A host name, IP address or CIDR outbound calls may reach even when private
    /// (repeatable; comma-separated in the variable).
    #[arg(long, env = "PARLEY_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<String>,
    /// Deny outbound calls to private addresses (loopback, RFC 1918, link-local, CGNAT,
    /// ULA, unspecified, multicast, `localhost` names) not allowed by --egress-allow.
    #[arg(long, env = "PARLEY_EGRESS_DENY_PRIVATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub egress_deny_private: bool,
    /// Seconds an outbound connection may take to open.
    #[arg(long, env = "PARLEY_EGRESS_CONNECT_TIMEOUT", default_value_t = 5)]
    pub egress_connect_timeout: u64,
    /// Seconds an outbound call may wait for the next bytes of its answer.
    #[arg(long, env = "PARLEY_EGRESS_READ_TIMEOUT", default_value_t = 60)]
    pub egress_read_timeout: u64,
    /// Seconds an outbound call may take in all.
    #[arg(long, env = "PARLEY_EGRESS_TIMEOUT", default_value_t = 300)]
    pub egress_timeout: u64,
}

/// `10.0.0.0/8`, or one address (`10.0.0.7`).
fn parse_proxy(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR"))
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr (stdout has the start banner); colours only on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Agent(AgentCommand::Validate { file }) => validate(&file),
        Command::Migrate(store) => runtime(async move {
            let cfg = ServeConfig {
                database_url: store.database_url,
                ..ServeConfig::new(store.data_dir)
            };
            server::open_store(&cfg).await?;
            println!("store is up to date");
            Ok(())
        }),
        Command::Tree(t) => runtime(async move {
            let watch = t.watch.map(|s| Duration::from_secs(s.max(1)));
            let args = crate::tree::TreeArgs {
                url: t.url,
                admin_key: t.admin_key,
                kind: t.kind,
                depth: t.depth,
                limit: t.limit.max(1),
            };
            crate::tree::run(args, watch).await
        }),
        Command::Serve(args) => {
            init_logging(&args.log_level, args.log_format);
            runtime(serve(*args))
        }
    }
}

fn runtime(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(file: &PathBuf) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: reading {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match parse_and_compile(&text, Format::guess(&file.to_string_lossy())) {
        Ok(agent) => {
            println!(
                "{}: ok — agent {:?}, {} states (initial {:?}), {} result fields, {} knowledge passages",
                file.display(),
                agent.definition.name,
                agent.states.len(),
                agent.init_state_name(),
                agent.fields.len(),
                agent.knowledge.len()
            );
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{}: {e}", file.display());
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = ServeConfig::new(args.store.data_dir);
    cfg.listen = args.listen;
    cfg.database_url = args.store.database_url;
    cfg.admin_key = args.admin_key;
    cfg.super_key = args.super_key;
    cfg.secret_key = args.secret_key;
    cfg.node.passivate_after = Duration::from_secs(args.passivate_after.max(1));
    cfg.node.shards = args.shards.max(1);
    cfg.node.public_url = args.public_url;
    cfg.node.egress =
        parley_engine::egress::EgressPolicy::new(args.egress_deny_private, &args.egress_allow)?;
    cfg.node.timeouts = parley_engine::egress::Timeouts {
        connect: Duration::from_secs(args.egress_connect_timeout.max(1)),
        read: Duration::from_secs(args.egress_read_timeout.max(1)),
        total: Duration::from_secs(args.egress_timeout.max(1)),
    };
    cfg.limits.max_body_bytes = args.max_body_bytes;
    let open_rate = |per_second: u32| crate::api::open_limits::OpenRate {
        per_second,
        burst: per_second.saturating_mul(10),
    };
    cfg.limits.open_per_credential = open_rate(args.open_rate_per_credential);
    cfg.limits.open_per_address = open_rate(args.open_rate_per_address);
    cfg.limits.widget_per_address = open_rate(args.widget_rate_per_address);
    cfg.limits.widget_per_visitor = open_rate(args.widget_rate_per_visitor);
    cfg.trusted_proxies = args.trusted_proxies;
    cfg.connections = ConnectionLimits {
        max_connections: args.max_connections.max(1),
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms.max(1)),
    };
    cfg.examples_dir = args.examples_dir;
    cfg.load_examples = !args.no_examples;
    cfg.cluster = ClusterConfig {
        redis_url: args.redis_url,
        node_id: args.node_id,
        advertise_url: args.advertise_url,
        name: args.cluster,
        lease_ttl: Duration::from_millis(args.lease_ttl_ms.max(100)),
    };
    let server = server::start(cfg).await?;
    let base = format!("http://{}", server.addr);
    println!("parley {} listening on {base}", env!("CARGO_PKG_VERSION"));
    let me = server.node.registry().node();
    if server.node.registry().clustered() {
        println!("node {} of cluster, reachable at {}", me.id, me.url);
    }
    // Secrets are printed to the terminal once, never logged.
    if let Some(key) = &server.tenant.generated_key {
        let file = server
            .tenant
            .key_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        println!("\nadmin API key (shown once, also saved to {file}):\n  {key}");
    }
    for a in &server.demo_agents {
        println!(
            "\ndemo agent {:?}\n  agent id:  {}\n  chat token (shown once): {}",
            a.name, a.id, a.token
        );
        println!("  try it:");
        println!("    SID=$(curl -s -X POST {base}/chatbot/{}/session -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{}}' | sed -E 's/.*\"session_id\":\"([^\"]+)\".*/\\1/')", a.id, a.token);
        println!("    curl -s -X POST {base}/chatbot/{}/session/$SID/run_v2 -H 'Authorization: Bearer {}' -F 'message=How much does the Premium card cost?'", a.id, a.token);
    }
    for (name, widget) in &server.demo_widgets {
        println!("\nweb widget of {name:?}: open {base}/widget/demo/{widget}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
