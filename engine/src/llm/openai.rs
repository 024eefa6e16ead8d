//! OpenAI-compatible chat completions. (Being written.)

use async_trait::async_trait;

use super::{DeltaSink, Generation, LlmBackend, LlmError, TurnInput};
use crate::agent::BackendDef;
use crate::workflow::TurnContext;

pub struct OpenAiBackend {
    _client: reqwest::Client,
}

impl OpenAiBackend {
    pub fn new(_def: &BackendDef, client: reqwest::Client) -> Result<Self, LlmError> {
        Ok(OpenAiBackend { _client: client })
    }
}

#[async_trait]
impl LlmBackend for OpenAiBackend {
    fn kind(&self) -> &'static str {
        "openai"
    }

    async fn generate(
        &self,
        _input: &TurnInput<'_>,
        _ctx: &mut TurnContext<'_>,
        _deltas: DeltaSink<'_>,
    ) -> Result<Generation, LlmError> {
        Err(LlmError::Config("openai backend not written yet".into()))
    }
}
