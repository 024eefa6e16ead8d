//! The definition as the store keeps it: LLM API keys and header values sealed with the
//! master key, inside `{"sealed_definition": …}`. Rows written before sealing existed (a
//! bare definition, secrets in clear) still load; [`is_sealed`] finds them so the node
//! can rewrite them sealed.

use serde::{Deserialize, Serialize};

use super::compile::{parse_definition, Format};
use super::definition::AgentDefinition;
use crate::secrets::{SecretBox, SecretError};

#[derive(Serialize)]
struct SealedOut<'a> {
    sealed_definition: &'a AgentDefinition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedIn {
    sealed_definition: AgentDefinition,
}

#[derive(Debug, thiserror::Error)]
pub enum StoredDefinitionError {
    #[error("stored definition: {0}")]
    Malformed(String),
    #[error("stored definition: {0}")]
    Unsealable(#[from] SecretError),
}

/// The text to store for `def`.
pub fn seal(def: &AgentDefinition, secrets: &SecretBox) -> String {
    let mut sealed = def.clone();
    sealed
        .try_map_secrets(|v| Ok::<_, std::convert::Infallible>(secrets.seal(v)))
        .unwrap_or_else(|never| match never {});
    serde_json::to_string(&SealedOut {
        sealed_definition: &sealed,
    })
    .expect("a definition serialises")
}

/// Whether `text` was written by [`seal`] (not a definition stored in clear).
pub fn is_sealed(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|v| v.get("sealed_definition").is_some())
}

/// The definition a stored text holds, secrets opened; a definition stored in clear
/// comes back as it is.
pub fn open(text: &str, secrets: &SecretBox) -> Result<AgentDefinition, StoredDefinitionError> {
    if !is_sealed(text) {
        return parse_definition(text, Format::Json)
            .map_err(|e| StoredDefinitionError::Malformed(e.to_string()));
    }
    let mut def = serde_json::from_str::<SealedIn>(text)
        .map_err(|e| StoredDefinitionError::Malformed(e.to_string()))?
        .sealed_definition;
    def.try_map_secrets(|v| secrets.open(v))?;
    Ok(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"{"name": "Support", "workflow": [{"name": "Main", "init_state": true}],
        "llm": [{"name": "main", "kind": "openai", "base_url": "https://llm.example/v1",
                 "model": "m1", "api_key": "sk-very-secret", "headers": {"X-Org": "org-secret"}}]}"#;

    fn key() -> SecretBox {
        SecretBox::from_text(&SecretBox::generate_key()).unwrap()
    }

    #[test]
    fn secrets_are_sealed_and_come_back_with_the_same_key_only() {
        let def = parse_definition(AGENT, Format::Json).unwrap();
        let k = key();
        let text = seal(&def, &k);
        assert!(is_sealed(&text));
        assert!(
            !text.contains("sk-very-secret") && !text.contains("org-secret"),
            "{text}"
        );
        assert!(text.contains("https://llm.example/v1"), "{text}");
        assert_eq!(open(&text, &k).unwrap(), def);
        assert!(matches!(
            open(&text, &key()),
            Err(StoredDefinitionError::Unsealable(_))
        ));
    }

    #[test]
    fn a_definition_stored_in_clear_still_loads() {
        assert!(!is_sealed(AGENT));
        let def = open(AGENT, &key()).unwrap();
        assert_eq!(def.llm[0].api_key.as_deref(), Some("sk-very-secret"));
        assert_eq!(def.llm[0].headers["X-Org"], "org-secret");
        assert!(matches!(
            open("{\"sealed_definition\": 3}", &key()),
            Err(StoredDefinitionError::Malformed(_))
        ));
    }
}
