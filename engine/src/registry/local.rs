//! The in-process registry: one node owns everything.

use std::time::Duration;

use async_trait::async_trait;

use super::{Claim, Lease, NodeInfo, Registry, RegistryResult, RegistryStats};
use crate::model::SessionId;

pub struct LocalRegistry {
    node: NodeInfo,
    stats: RegistryStats,
}

impl LocalRegistry {
    pub fn new(node: NodeInfo) -> Self {
        LocalRegistry {
            node,
            stats: RegistryStats::default(),
        }
    }
}

#[async_trait]
impl Registry for LocalRegistry {
    fn node(&self) -> &NodeInfo {
        &self.node
    }

    fn clustered(&self) -> bool {
        false
    }

    async fn join(&self) -> RegistryResult<()> {
        Ok(())
    }

    async fn claim(&self, _session: SessionId) -> RegistryResult<Claim> {
        RegistryStats::bump(&self.stats.claims);
        Ok(Claim::Mine)
    }

    async fn remote_owner(&self, _session: SessionId) -> RegistryResult<Option<NodeInfo>> {
        Ok(None)
    }

    async fn release(&self, _session: SessionId) -> RegistryResult<()> {
        Ok(())
    }

    async fn heartbeat(&self) -> RegistryResult<Lease> {
        Ok(Lease::Renewed)
    }

    async fn ping(&self) -> RegistryResult<()> {
        Ok(())
    }

    async fn leave(&self) -> RegistryResult<()> {
        Ok(())
    }

    async fn nodes(&self) -> RegistryResult<Vec<NodeInfo>> {
        Ok(vec![self.node.clone()])
    }

    fn lease_ttl(&self) -> Duration {
        Duration::MAX
    }

    fn stats(&self) -> &RegistryStats {
        &self.stats
    }
}
