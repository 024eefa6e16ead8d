//! First start: the default tenant with its admin key, and the demo agents of an empty
//! store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::Utc;
use parley_actors::Node;
use parley_engine::agent::Format;
use parley_engine::auth::{generate_secret, hash_secret};
use parley_engine::model::{AgentId, TenantId};
use parley_engine::secrets::SecretBox;
use parley_engine::store::{Store, Tenant};
use parley_engine::widget::WidgetUpdate;
use uuid::Uuid;

/// The agent the README's quick start uses; compiled in so a bare binary has it too.
pub const DEMO_AGENT: &str = include_str!("../examples/agents/debit-cards.yaml");

/// The tenant every admin request of this node acts in, and its key if this start
/// generated one (shown once, also written to `<data-dir>/admin.key`).
pub struct TenantSetup {
    pub tenant: TenantId,
    pub generated_key: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// Shortest admin key accepted (the prefix included).
pub const MIN_ADMIN_KEY_CHARS: usize = 24;

/// A given admin key must work once the node runs: admin keys are told apart from
/// sign-in tokens by their `pk_` prefix, so a key without it would start the node and
/// then answer 401 to every request.
pub fn check_admin_key(key: &str) -> anyhow::Result<()> {
    if !key.starts_with("pk_") {
        anyhow::bail!("--admin-key must start with `pk_` (admin keys are told apart from sign-in tokens by that prefix)");
    }
    if key.chars().count() < MIN_ADMIN_KEY_CHARS {
        anyhow::bail!("--admin-key must be at least {MIN_ADMIN_KEY_CHARS} characters long");
    }
    Ok(())
}

/// Makes sure a tenant exists. A given admin key becomes (or stays) the key of the first
/// tenant; without one, a new tenant gets a generated key.
pub async fn ensure_tenant(
    store: &dyn Store,
    data_dir: &Path,
    admin_key: Option<&str>,
) -> anyhow::Result<TenantSetup> {
    let tenants = store.list_tenants().await?;
    if let Some(first) = tenants.first() {
        if let Some(key) = admin_key {
            store
                .set_tenant_key_hash(first.id, &hash_secret(key))
                .await?;
        }
        return Ok(TenantSetup {
            tenant: first.id,
            generated_key: None,
            key_file: None,
        });
    }
    let (key, generated) = match admin_key {
        Some(k) => (k.to_string(), false),
        None => (generate_secret("pk_"), true),
    };
    let tenant = Tenant {
        id: Uuid::now_v7(),
        name: "default".into(),
        api_key_hash: hash_secret(&key),
        created_at: Utc::now(),
        settings: Default::default(),
    };
    store.create_tenant(&tenant).await?;
    let mut key_file = None;
    if generated {
        let path = data_dir.join("admin.key");
        write_secret_file(&path, &key)?;
        key_file = Some(path);
    }
    Ok(TenantSetup {
        tenant: tenant.id,
        generated_key: generated.then_some(key),
        key_file,
    })
}

/// The master key that seals connection secrets: the given one, else the one in
/// `<data-dir>/secret.key`, else a new one written there (mode 0600).
pub fn master_key(data_dir: &Path, given: Option<&str>) -> anyhow::Result<SecretBox> {
    if let Some(text) = given {
        return SecretBox::from_text(text).context("--secret-key");
    }
    let path = data_dir.join("secret.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => SecretBox::from_text(&text).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretBox::generate_key();
            write_secret_file(&path, &key)
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(file = %path.display(), "generated the master key for connection secrets");
            Ok(SecretBox::from_text(&key)?)
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

pub struct DemoAgent {
    pub id: AgentId,
    pub name: String,
    pub token: String,
}

/// With no agents at all, creates and starts every agent in `dir` (or the compiled-in demo
/// when the folder is missing).
pub async fn load_examples(
    node: &Node,
    tenant: TenantId,
    dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<Vec<DemoAgent>> {
    if !node.list_agents(tenant).await?.is_empty() {
        return Ok(Vec::new());
    }
    let mut sources: Vec<(String, String)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        paths.sort();
        for p in paths {
            sources.push((p.display().to_string(), std::fs::read_to_string(&p)?));
        }
    }
    if sources.is_empty() {
        sources.push(("built-in demo".into(), DEMO_AGENT.into()));
    }
    let mut out = Vec::new();
    for (name, text) in sources {
        let (record, _, token) = node
            .create_agent(tenant, &text, Format::guess(&name))
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        node.start_agent(tenant, record.id).await?;
        // The demo page is served by parley itself, so its own origins are allowed.
        let widget = WidgetUpdate {
            enabled: true,
            allowed_origins: own_origins(listen),
            ..WidgetUpdate::default()
        };
        node.put_widget(tenant, record.id, widget).await?;
        out.push(DemoAgent {
            id: record.id,
            name: record.name,
            token,
        });
    }
    Ok(out)
}

/// The origins a browser on this machine reaches the server by.
fn own_origins(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    let mut origins = vec![
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
    ];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        origins.push(format!("http://{listen}"));
    }
    origins
}

/// The tenant's widgets that allow this server's own origin, by agent name: their demo
/// pages work here.
pub async fn demo_widgets(
    node: &Node,
    tenant: TenantId,
    listen: SocketAddr,
) -> anyhow::Result<Vec<(String, String)>> {
    let own = own_origins(listen);
    let mut out = Vec::new();
    for agent in node.list_agents(tenant).await? {
        if let Some(w) = node.widget_settings(tenant, agent.id).await? {
            if w.settings.enabled && own.iter().any(|o| w.allows_origin(o)) {
                out.push((agent.name, w.widget_id));
            }
        }
    }
    Ok(out)
}
