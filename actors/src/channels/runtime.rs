//! A started connection as its actor and the hooks endpoint use it: the platform's
//! clients and verifiers built from the (opened) config, its settings and its outbound
//! queue.

use std::sync::Mutex;

use parley_connectors::webhook::WebhookSecret;
use parley_connectors::{discord, slack, teams, telegram, whatsapp};
use parley_engine::connection::{CheckedConfig, ConnectionId, ConnectionRecord};
use parley_engine::inbound::Platform;
use parley_engine::rate_limits::RateLimits;
use serde_json::Value;

use super::outbound::Outbound;

/// The platforms' public APIs, used when a connection sets no `api_base`.
pub const TELEGRAM_API: &str = "https://api.telegram.org";
pub const DISCORD_API: &str = "https://discord.com/api/v10";
pub const SLACK_API: &str = "https://slack.com/api";
pub const WHATSAPP_API: &str = "https://graph.facebook.com/v21.0";
pub const TEAMS_TOKEN_ENDPOINT: &str =
    "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token";
pub const TEAMS_OPENID_METADATA: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";

pub enum PlatformRuntime {
    Telegram {
        client: telegram::TelegramClient,
        /// What Telegram echoes in every webhook delivery.
        secret_token: String,
        polling: bool,
        streaming: bool,
    },
    Discord {
        client: discord::DiscordClient,
        public_key: String,
        handle: String,
        guild_id: Option<String>,
        ephemeral: bool,
        stream: bool,
        session_duration_ms: u64,
    },
    Slack {
        client: slack::SlackClient,
        signing_secret: String,
    },
    Whatsapp {
        client: whatsapp::WhatsAppClient,
        app_secret: String,
        verify_token: String,
        numbers: Mutex<whatsapp::NumberRotation>,
    },
    Teams {
        client: teams::TeamsClient,
        /// Boxed: the verifier's JWT settings are large.
        verifier: Box<teams::TeamsVerifier>,
    },
    Webhook {
        url: Option<String>,
        secret: Option<WebhookSecret>,
        incoming_secret: Option<WebhookSecret>,
    },
}

pub struct ChannelRuntime {
    pub id: ConnectionId,
    pub record: ConnectionRecord,
    pub platform: PlatformRuntime,
    pub outbound: Outbound,
}

impl ChannelRuntime {
    /// Builds the clients of a connection; a config that cannot work is the reason for
    /// its Error status.
    pub fn build(
        record: ConnectionRecord,
        config: &CheckedConfig,
        http: &reqwest::Client,
    ) -> Result<ChannelRuntime, String> {
        let secret = |k: &str| config.secrets.get(k).cloned().unwrap_or_default();
        let text = |k: &str| {
            config
                .public
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let flag = |k: &str, default: bool| {
            config
                .public
                .get(k)
                .and_then(Value::as_bool)
                .unwrap_or(default)
        };
        let base = |default: &str| text("api_base").unwrap_or_else(|| default.to_string());
        let platform = match record.platform {
            Platform::Telegram => {
                let token = secret("bot_token");
                PlatformRuntime::Telegram {
                    client: telegram::TelegramClient::new(
                        http.clone(),
                        &base(TELEGRAM_API),
                        &token,
                    ),
                    secret_token: telegram::webhook_secret(&token),
                    polling: text("mode").as_deref() == Some("polling"),
                    streaming: flag("streaming", true),
                }
            }
            Platform::Discord => {
                let application_id = text("application_id").unwrap_or_default();
                PlatformRuntime::Discord {
                    client: discord::DiscordClient::new(
                        http.clone(),
                        &base(DISCORD_API),
                        &application_id,
                        &secret("bot_token"),
                    ),
                    public_key: text("public_key").unwrap_or_default(),
                    handle: text("handle").unwrap_or_else(|| "ask".into()),
                    guild_id: text("guild_id"),
                    ephemeral: flag("ephemeral", false),
                    stream: flag("stream", true),
                    session_duration_ms: config
                        .public
                        .get("session_duration_ms")
                        .and_then(Value::as_u64)
                        .unwrap_or(86_400_000),
                }
            }
            Platform::Slack => PlatformRuntime::Slack {
                client: slack::SlackClient::new(
                    http.clone(),
                    &base(SLACK_API),
                    &secret("bot_token"),
                ),
                signing_secret: secret("signing_secret"),
            },
            Platform::Whatsapp => {
                let numbers: Vec<String> = config
                    .public
                    .get("phone_number_ids")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                PlatformRuntime::Whatsapp {
                    client: whatsapp::WhatsAppClient::new(
                        http.clone(),
                        base(WHATSAPP_API),
                        secret("access_token"),
                    ),
                    app_secret: secret("app_secret"),
                    verify_token: secret("verify_token"),
                    numbers: Mutex::new(
                        whatsapp::NumberRotation::new(numbers)
                            .ok_or("config.phone_number_ids: no business number")?,
                    ),
                }
            }
            Platform::Teams => {
                let app_id = text("app_id").unwrap_or_default();
                PlatformRuntime::Teams {
                    client: teams::TeamsClient::new(
                        http.clone(),
                        base(TEAMS_TOKEN_ENDPOINT),
                        app_id.clone(),
                        secret("app_password"),
                    ),
                    verifier: Box::new(teams::TeamsVerifier::new(
                        http.clone(),
                        text("openid_metadata_url").unwrap_or_else(|| TEAMS_OPENID_METADATA.into()),
                        &app_id,
                    )),
                }
            }
            Platform::Webhook => {
                let key = |k: &str| {
                    config
                        .secrets
                        .get(k)
                        .map(|s| WebhookSecret::parse(s).map_err(|e| format!("config.{k}: {e}")))
                        .transpose()
                };
                PlatformRuntime::Webhook {
                    url: text("url"),
                    secret: key("secret")?,
                    incoming_secret: key("incoming_secret")?,
                }
            }
        };
        let limits =
            RateLimits::parse(record.platform, &record.rate_limits).map_err(|e| e.to_string())?;
        Ok(ChannelRuntime {
            id: record.id,
            outbound: Outbound::new(record.platform, &limits),
            platform,
            record,
        })
    }

    pub fn kind(&self) -> Platform {
        self.record.platform
    }

    /// The first configured WhatsApp business number (what start and test look up).
    pub fn first_number(&self) -> &str {
        self.record
            .config
            .get("phone_number_ids")
            .and_then(|v| v.get(0))
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}
