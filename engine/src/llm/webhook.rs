//! The seed's AI-backend webhook contract. (Being written.)

use async_trait::async_trait;

use super::{DeltaSink, Generation, LlmBackend, LlmError, TurnInput};
use crate::agent::BackendDef;
use crate::workflow::TurnContext;

pub struct WebhookBackend {
    _client: reqwest::Client,
}

impl WebhookBackend {
    pub fn new(_def: &BackendDef, client: reqwest::Client) -> Result<Self, LlmError> {
        Ok(WebhookBackend { _client: client })
    }
}

#[async_trait]
impl LlmBackend for WebhookBackend {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn generate(
        &self,
        _input: &TurnInput<'_>,
        _ctx: &mut TurnContext<'_>,
        _deltas: DeltaSink<'_>,
    ) -> Result<Generation, LlmError> {
        Err(LlmError::Config("webhook backend not written yet".into()))
    }
}
