//! The live supervision tree as operators see it: each actor's kind, id, status, mailbox
//! depth, restarts, uptime and children, paginated so a node with a million sessions still
//! answers at once; and the few actions an operator may take on one actor.
//!
//! Actors are named `node`, `persistence`, `agent_supervisor`, `agent:<id>`,
//! `channel_supervisor`, `channel:<id>`, `campaign_supervisor`, `campaign:<id>` (its
//! children are the participant actors alive, counted), `shard:<n>` and `session:<id>`.
//!
//! Every query has a scope: the whole node (the deployment's super key), or one tenant,
//! which sees a `tenant:<id>` root whose children are its own agents, channels and
//! campaigns, lists its own resident sessions, and acts on those alone. The node's own
//! actors (supervisors, shards, the writer) are shared by every tenant: node-wide only.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ractor::ActorCell;
use serde::Serialize;
use uuid::Uuid;

use parley_engine::model::TenantId;

use super::{read, Node};
use crate::error::{NodeError, NodeResult};

#[derive(Debug, Clone, Serialize)]
pub struct ActorInfo {
    /// node_supervisor, persistence, agent_supervisor, agent, session_shard, session.
    pub kind: &'static str,
    pub id: String,
    /// ractor's own id for the actor.
    pub actor_id: String,
    /// ractor's status: Running, Draining, Stopping, ...
    pub status: String,
    /// Requests queued or in progress, where known (sessions and the persistence writer);
    /// ractor does not expose other mailboxes.
    pub mailbox: Option<u64>,
    pub restarts: u64,
    pub uptime_secs: u64,
    pub children: u64,
    /// The tenant the actor works for (none for the node's own actors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
}

/// An actor and one page of its children.
#[derive(Debug, Clone, Serialize)]
pub struct ActorPage {
    pub actor: ActorInfo,
    pub children: Vec<ActorInfo>,
    /// Children that match the filters (all pages).
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
}

/// Whose actors a caller may see and act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorScope {
    /// Every actor of the node (the super key).
    Node,
    /// One tenant's agents, channels, campaigns and sessions (its admins).
    Tenant(TenantId),
}

impl ActorScope {
    fn sees(self, tenant: Option<TenantId>) -> bool {
        match self {
            ActorScope::Node => true,
            ActorScope::Tenant(t) => tenant == Some(t),
        }
    }
}

fn node_wide_only(id: &str) -> NodeError {
    NodeError::Forbidden(format!(
        "{id} is one of the node's own actors, shared by every tenant: node-wide views need the super key"
    ))
}

#[derive(Debug, Clone)]
pub struct ActorQuery {
    pub scope: ActorScope,
    /// Whose children to list (default: the node).
    pub parent: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

fn status_of(cell: &ActorCell) -> String {
    format!("{:?}", cell.get_status())
}

fn secs_since(t: Option<Instant>) -> u64 {
    t.map_or(0, |t| t.elapsed().as_secs())
}

fn matches(a: &ActorInfo, q: &ActorQuery) -> bool {
    q.kind.as_deref().is_none_or(|k| k == a.kind)
        && q.status
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(&a.status))
}

impl Node {
    fn node_started(&self, id: &str) -> Option<Instant> {
        self.shared.supervision.started.get(id).map(|e| *e)
    }

    fn node_restarts(&self, id: &str) -> u64 {
        self.shared
            .supervision
            .restarts
            .get(id)
            .map_or(0, |e| u64::from(*e))
    }

    fn root_info(&self) -> ActorInfo {
        ActorInfo {
            kind: "node_supervisor",
            id: "node".into(),
            actor_id: self.supervisor.get_id().to_string(),
            status: status_of(&self.supervisor.get_cell()),
            mailbox: None,
            restarts: 0,
            uptime_secs: secs_since(self.node_started("node")),
            children: 4 + self.shared.sessions.shard_count() as u64,
            tenant: None,
        }
    }

    fn persistence_info(&self) -> Option<ActorInfo> {
        let (actor, queue) = read(&self.shared.persistence)?;
        Some(ActorInfo {
            kind: "persistence",
            id: "persistence".into(),
            actor_id: actor.get_id().to_string(),
            status: status_of(&actor.get_cell()),
            mailbox: Some(queue.depth() as u64),
            restarts: self.node_restarts("persistence"),
            uptime_secs: secs_since(self.node_started("persistence")),
            children: 0,
            tenant: None,
        })
    }

    fn agent_sup_info(&self) -> Option<ActorInfo> {
        let actor = read(&self.shared.agent_sup)?;
        Some(ActorInfo {
            kind: "agent_supervisor",
            id: "agent_supervisor".into(),
            actor_id: actor.get_id().to_string(),
            status: status_of(&actor.get_cell()),
            mailbox: None,
            restarts: self.node_restarts("agent_supervisor"),
            uptime_secs: secs_since(self.node_started("agent_supervisor")),
            children: self.shared.agents.running_count() as u64,
            tenant: None,
        })
    }

    fn channel_sup_info(&self) -> Option<ActorInfo> {
        let actor = self.shared.channels.supervisor()?;
        Some(ActorInfo {
            kind: "channel_supervisor",
            id: "channel_supervisor".into(),
            actor_id: actor.get_id().to_string(),
            status: status_of(&actor.get_cell()),
            mailbox: None,
            restarts: self.node_restarts("channel_supervisor"),
            uptime_secs: secs_since(self.node_started("channel_supervisor")),
            children: self.shared.channels.running_count() as u64,
            tenant: None,
        })
    }

    fn campaign_sup_info(&self) -> Option<ActorInfo> {
        let actor = self.shared.campaigns.supervisor()?;
        Some(ActorInfo {
            kind: "campaign_supervisor",
            id: "campaign_supervisor".into(),
            actor_id: actor.get_id().to_string(),
            status: status_of(&actor.get_cell()),
            mailbox: None,
            restarts: self.node_restarts("campaign_supervisor"),
            uptime_secs: secs_since(self.node_started("campaign_supervisor")),
            children: self.shared.campaigns.running_count() as u64,
            tenant: None,
        })
    }

    fn campaign_infos(&self) -> Vec<ActorInfo> {
        self.shared
            .campaigns
            .running()
            .into_iter()
            .map(|(actor, ctx)| {
                let id = format!("campaign:{}", ctx.id());
                ActorInfo {
                    kind: "campaign",
                    actor_id: actor.get_id().to_string(),
                    status: status_of(&actor.get_cell()),
                    mailbox: None,
                    restarts: self.node_restarts(&id),
                    uptime_secs: ctx.started.elapsed().as_secs(),
                    children: ctx.resident.load(Ordering::Relaxed) as u64,
                    tenant: Some(ctx.record.campaign.tenant_id),
                    id,
                }
            })
            .collect()
    }

    fn channel_infos(&self) -> Vec<ActorInfo> {
        self.shared
            .channels
            .all()
            .into_iter()
            .map(|c| {
                let id = format!("channel:{}", c.rt.id);
                ActorInfo {
                    kind: "channel",
                    actor_id: c.actor.get_id().to_string(),
                    status: status_of(&c.actor.get_cell()),
                    mailbox: Some(c.rt.outbound.queued() as u64),
                    restarts: self.node_restarts(&id),
                    uptime_secs: c.started.elapsed().as_secs(),
                    children: 0,
                    tenant: Some(c.rt.record.tenant_id),
                    id,
                }
            })
            .collect()
    }

    fn shard_info(&self, index: usize) -> Option<ActorInfo> {
        let actor = self.shared.sessions.shard(index)?;
        let stats = self.shared.sessions.shard_stats(index);
        let id = format!("shard:{index}");
        Some(ActorInfo {
            kind: "session_shard",
            actor_id: actor.get_id().to_string(),
            status: status_of(&actor.get_cell()),
            mailbox: None,
            restarts: self.node_restarts(&id),
            uptime_secs: secs_since(stats.as_ref().map(|s| s.started)),
            children: stats.map_or(0, |s| s.children.load(Ordering::Relaxed) as u64),
            tenant: None,
            id,
        })
    }

    fn agent_infos(&self) -> Vec<ActorInfo> {
        self.shared
            .agents
            .all()
            .into_iter()
            .map(|a| {
                let actor = a.actor();
                ActorInfo {
                    kind: "agent",
                    id: format!("agent:{}", a.id),
                    actor_id: actor.get_id().to_string(),
                    status: status_of(&actor.get_cell()),
                    mailbox: None,
                    restarts: u64::from(a.restarts.load(Ordering::Relaxed)),
                    uptime_secs: a.started.elapsed().as_secs(),
                    children: 0,
                    tenant: Some(a.tenant_id),
                }
            })
            .collect()
    }

    fn session_info(&self, id: Uuid) -> Option<ActorInfo> {
        let sessions = &self.shared.sessions;
        let e = sessions.live.get(&id)?;
        Some(ActorInfo {
            kind: "session",
            id: format!("session:{id}"),
            actor_id: e.actor.get_id().to_string(),
            status: status_of(&e.actor.get_cell()),
            mailbox: Some(u64::from(e.pending.load(Ordering::Relaxed))),
            restarts: sessions.restarts.get(&id).map_or(0, |r| u64::from(*r)),
            uptime_secs: u64::from(sessions.now_secs().saturating_sub(e.since)),
            children: 0,
            tenant: e.tenant.get().copied(),
        })
    }

    /// One page of resident sessions (of one shard, or all), filtered, without copying
    /// more than the page.
    fn session_page(&self, shard: Option<usize>, q: &ActorQuery) -> (Vec<ActorInfo>, u64) {
        let sessions = &self.shared.sessions;
        let mut total = 0u64;
        let mut page = Vec::with_capacity(q.limit.min(1000));
        for e in sessions.live.iter() {
            if shard.is_some_and(|s| sessions.shard_of(e.key()) != s) {
                continue;
            }
            if !q.scope.sees(e.tenant.get().copied()) {
                continue;
            }
            if q.status.is_some() {
                let Some(info) = self.session_info(*e.key()) else {
                    continue;
                };
                if !matches(&info, q) {
                    continue;
                }
            }
            if total as usize >= q.offset && page.len() < q.limit {
                if let Some(info) = self.session_info(*e.key()) {
                    page.push(info);
                }
            }
            total += 1;
        }
        (page, total)
    }

    /// The actor named `id`, if it is alive on this node.
    pub fn actor_info(&self, id: &str) -> Option<ActorInfo> {
        match id {
            "node" => Some(self.root_info()),
            "persistence" => self.persistence_info(),
            "agent_supervisor" => self.agent_sup_info(),
            "channel_supervisor" => self.channel_sup_info(),
            "campaign_supervisor" => self.campaign_sup_info(),
            _ => {
                let (kind, rest) = id.split_once(':')?;
                match kind {
                    "shard" => self.shard_info(rest.parse().ok()?),
                    "agent" => {
                        let want = format!("agent:{rest}");
                        self.agent_infos().into_iter().find(|a| a.id == want)
                    }
                    "channel" => {
                        let want = format!("channel:{rest}");
                        self.channel_infos().into_iter().find(|c| c.id == want)
                    }
                    "campaign" => {
                        let want = format!("campaign:{rest}");
                        self.campaign_infos().into_iter().find(|c| c.id == want)
                    }
                    "session" => self.session_info(Uuid::parse_str(rest).ok()?),
                    _ => None,
                }
            }
        }
    }

    /// The actor named `id` as `scope` may see it: a tenant's own actors, its root, and
    /// nothing of other tenants (not found) or of the node itself (forbidden).
    fn scoped_info(&self, id: &str, scope: ActorScope) -> NodeResult<ActorInfo> {
        let ActorScope::Tenant(tenant) = scope else {
            return self.actor_info(id).ok_or(NodeError::NotFound("actor"));
        };
        if id == "node" || id == format!("tenant:{tenant}") {
            return Ok(self.tenant_root(tenant));
        }
        match self.actor_info(id) {
            Some(a) if a.tenant == Some(tenant) => Ok(a),
            Some(a) if a.tenant.is_none() => Err(node_wide_only(id)),
            _ => Err(NodeError::NotFound("actor")),
        }
    }

    /// A tenant's view of the node: its own agents, channels and campaigns ([`Node::actors`]
    /// counts them, as it lists them).
    fn tenant_root(&self, tenant: TenantId) -> ActorInfo {
        let mut root = self.root_info();
        root.kind = "tenant";
        root.id = format!("tenant:{tenant}");
        root.tenant = Some(tenant);
        root.restarts = 0;
        root.children = 0;
        root
    }

    fn tenant_children(&self, tenant: TenantId) -> Vec<ActorInfo> {
        let mut all = self.agent_infos();
        all.extend(self.channel_infos());
        all.extend(self.campaign_infos());
        all.retain(|a| a.tenant == Some(tenant));
        all
    }

    /// An actor (the node, or the tenant's root, by default) and a page of its children;
    /// with `kind` and no parent, every actor of that kind the scope sees.
    pub fn actors(&self, q: &ActorQuery) -> NodeResult<ActorPage> {
        let parent = q.parent.as_deref().unwrap_or("node");
        let mut actor = self.scoped_info(parent, q.scope)?;
        let own = match (actor.kind, actor.tenant) {
            ("tenant", Some(t)) => {
                let own = self.tenant_children(t);
                actor.children = own.len() as u64;
                own
            }
            _ => Vec::new(),
        };
        let (children, total) = match (q.parent.is_none(), q.kind.as_deref()) {
            // A flat listing of one kind across the tree.
            (true, Some("session")) => self.session_page(None, q),
            (true, Some(_)) => {
                let mut all = self.everything_but_sessions();
                all.retain(|a| q.scope.sees(a.tenant));
                self.page(all, q)
            }
            _ => match actor.kind {
                "tenant" => self.page(own, q),
                "node_supervisor" => self.page(self.node_children(), q),
                "agent_supervisor" => self.page(self.agent_infos(), q),
                "channel_supervisor" => self.page(self.channel_infos(), q),
                "campaign_supervisor" => self.page(self.campaign_infos(), q),
                "session_shard" => {
                    let index = parent.strip_prefix("shard:").and_then(|i| i.parse().ok());
                    self.session_page(index, q)
                }
                _ => (Vec::new(), 0),
            },
        };
        Ok(ActorPage {
            actor,
            children,
            total,
            offset: q.offset,
            limit: q.limit,
        })
    }

    fn node_children(&self) -> Vec<ActorInfo> {
        let mut all: Vec<ActorInfo> = self.persistence_info().into_iter().collect();
        all.extend(self.agent_sup_info());
        all.extend(self.channel_sup_info());
        all.extend(self.campaign_sup_info());
        all.extend((0..self.shared.sessions.shard_count()).filter_map(|i| self.shard_info(i)));
        all
    }

    fn everything_but_sessions(&self) -> Vec<ActorInfo> {
        let mut all = vec![self.root_info()];
        all.extend(self.node_children());
        all.extend(self.agent_infos());
        all.extend(self.channel_infos());
        all.extend(self.campaign_infos());
        all
    }

    fn page(&self, all: Vec<ActorInfo>, q: &ActorQuery) -> (Vec<ActorInfo>, u64) {
        let matching: Vec<ActorInfo> = all.into_iter().filter(|a| matches(a, q)).collect();
        let total = matching.len() as u64;
        (
            matching.into_iter().skip(q.offset).take(q.limit).collect(),
            total,
        )
    }

    /// Stops a session actor now (its state is in the store; the next request activates it
    /// again). Other actors are supervised parts of the node and are not stopped by hand.
    pub async fn stop_actor(&self, id: &str, scope: ActorScope) -> NodeResult<()> {
        let session = self.session_of(id, scope)?;
        self.stop_session(session).await
    }

    /// Stops a session actor and activates it again from the store.
    pub async fn restart_actor(&self, id: &str, scope: ActorScope) -> NodeResult<()> {
        let session = self.session_of(id, scope)?;
        self.stop_session(session).await?;
        self.activate_session(session).await
    }

    async fn stop_session(&self, session: Uuid) -> NodeResult<()> {
        self.shared.sessions.evict(session);
        self.wait_gone(session).await
    }

    fn session_of(&self, id: &str, scope: ActorScope) -> NodeResult<Uuid> {
        let session = id
            .strip_prefix("session:")
            .and_then(|s| Uuid::parse_str(s).ok());
        let sessions = &self.shared.sessions;
        match session {
            Some(s) if sessions.is_resident(&s) && scope.sees(sessions.tenant_of(&s)) => Ok(s),
            Some(_) => Err(NodeError::NotFound("actor")),
            None if self.scoped_info(id, scope).is_ok() => Err(NodeError::Invalid(format!(
                "{id}: only session actors can be stopped or restarted by hand; the others are the node's own and restart themselves"
            ))),
            None => Err(NodeError::NotFound("actor")),
        }
    }

    async fn wait_gone(&self, session: Uuid) -> NodeResult<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.sessions.is_resident(&session) {
            if Instant::now() > deadline {
                return Err(NodeError::Unavailable(
                    "the session is still stopping".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Passivates every session of the scope idle for at least `idle_secs` now; answers
    /// how many of its sessions were resident before and after.
    pub async fn passivate_idle(&self, idle_secs: u32, scope: ActorScope) -> (usize, usize) {
        let sessions = &self.shared.sessions;
        let (tenant, resident) = match scope {
            ActorScope::Node => (None, sessions.resident()),
            ActorScope::Tenant(t) => (Some(t), self.resident_of(t)),
        };
        for i in 0..sessions.shard_count() {
            if let Some(s) = sessions.shard(i) {
                let _ = s.send_message(crate::session::ShardMsg::Passivate { idle_secs, tenant });
            }
        }
        // Shards handle it in their own time; give them a moment to report.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after = match tenant {
            None => sessions.resident(),
            Some(t) => self.resident_of(t),
        };
        (resident, after)
    }

    fn resident_of(&self, tenant: TenantId) -> usize {
        self.shared
            .sessions
            .live
            .iter()
            .filter(|e| e.tenant.get() == Some(&tenant))
            .count()
    }
}
