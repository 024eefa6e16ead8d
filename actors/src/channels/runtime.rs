//! A started connection as its actor and the hooks endpoint use it: its platform's
//! [`Channel`] built from the (opened) config, the platform's registry entry, and its
//! outbound queue.

use parley_connectors::platform::{self, Channel, Connect, PlatformKind};
use parley_engine::connection::{CheckedConfig, ConnectionId, ConnectionRecord};
use parley_engine::inbound::Platform;
use parley_engine::rate_limits::RateLimits;

use super::outbound::Outbound;

pub struct ChannelRuntime {
    pub id: ConnectionId,
    pub record: ConnectionRecord,
    pub kind: &'static dyn PlatformKind,
    pub channel: Box<dyn Channel>,
    pub outbound: Outbound,
}

impl ChannelRuntime {
    /// Builds the platform side of a connection; a config that cannot work is the reason
    /// for its Error status.
    pub fn build(
        record: ConnectionRecord,
        config: &CheckedConfig,
        http: &reqwest::Client,
    ) -> Result<ChannelRuntime, String> {
        let kind = platform::kind_or_err(record.platform)?;
        let channel = kind.connect(&Connect { config, http })?;
        let limits = RateLimits::parse(kind.rate_limits(), &record.rate_limits)
            .map_err(|e| e.to_string())?;
        Ok(ChannelRuntime {
            id: record.id,
            outbound: Outbound::new(record.platform, &limits),
            kind,
            channel,
            record,
        })
    }

    pub fn platform(&self) -> Platform {
        self.record.platform
    }
}
