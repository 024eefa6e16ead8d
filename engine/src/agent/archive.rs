//! An agent as a ZIP archive, for moving it between tenants or deployments: its
//! definition (YAML), its knowledge and its channel assignments. Secrets (LLM API keys
//! and header values) are sealed under a key generated for the export and shown once, or
//! left out altogether.
//!
//! ```text
//! manifest.json   format, when, the options, whether secrets are in, a key check
//! agent.yaml      the definition; secret values sealed (`v1:…`)
//! knowledge.json  the FAQ and texts, readable on their own
//! channels.json   the connections the agent talked on: [{connection_id, name, platform, inbound}]
//! ```

use std::io::{Cursor, Read, Write};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::definition::AgentDefinition;
use crate::document;
use crate::secrets::SecretBox;

/// The archive layout this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest archive member read (a definition with its knowledge); bigger is refused.
const MAX_MEMBER_BYTES: u64 = 64 << 20;
/// What the key check seals, so a wrong key is told apart from a damaged archive.
const KEY_CHECK: &str = "parley-agent-export";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportOptions {
    /// Leave API keys and header values out (they must be entered again after import).
    pub remove_sensitive_data: bool,
    /// At import, replace the configuration of an agent of the same name.
    pub force_update_agent: bool,
    /// At import, take over the connections' inbound traffic even from another agent.
    pub force_update_integrations: bool,
}

/// A connection the agent talked on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRef {
    pub connection_id: Uuid,
    pub name: String,
    pub platform: String,
    pub inbound: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    exported_at: DateTime<Utc>,
    agent: String,
    options: ExportOptions,
    secrets: SecretsIncluded,
    /// [`KEY_CHECK`] sealed with the export's key.
    key_check: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SecretsIncluded {
    Sealed,
    Removed,
}

/// An archive read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub definition: AgentDefinition,
    pub channels: Vec<ChannelRef>,
    pub options: ExportOptions,
    /// Secrets were left out at export: the agent needs them entered again.
    pub secrets_removed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("not an agent export: {0}")]
    Malformed(String),
    #[error("the secret key does not open this export")]
    WrongKey,
    #[error("an export of format {0}, newer than this server reads")]
    NewerFormat(u32),
}

fn malformed(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Malformed(e.to_string())
}

/// The archive of `def` and its channels, with the key that opens its secrets.
pub fn export(
    def: &AgentDefinition,
    channels: &[ChannelRef],
    options: ExportOptions,
    now: DateTime<Utc>,
) -> (Vec<u8>, String) {
    let key = SecretBox::generate_key();
    let sealer = SecretBox::from_text(&key).expect("a generated key is valid");
    let mut def = def.clone();
    if options.remove_sensitive_data {
        for b in &mut def.llm {
            b.headers.clear();
            b.api_key = None;
        }
    } else {
        def.try_map_secrets(|v| Ok::<_, std::convert::Infallible>(sealer.seal(v)))
            .unwrap_or_else(|never| match never {});
    }
    let manifest = Manifest {
        format: FORMAT,
        exported_at: now,
        agent: def.name.clone(),
        options,
        secrets: if options.remove_sensitive_data {
            SecretsIncluded::Removed
        } else {
            SecretsIncluded::Sealed
        },
        key_check: sealer.seal(KEY_CHECK),
    };
    let members: [(&str, Vec<u8>); 4] = [
        (
            "manifest.json",
            serde_json::to_vec_pretty(&manifest).expect("serialisable"),
        ),
        (
            "agent.yaml",
            serde_yaml::to_string(&def)
                .expect("serialisable")
                .into_bytes(),
        ),
        (
            "knowledge.json",
            serde_json::to_vec_pretty(&def.knowledge).expect("serialisable"),
        ),
        (
            "channels.json",
            serde_json::to_vec_pretty(channels).expect("serialisable"),
        ),
    ];
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        zip.start_file(name, opts).expect("writing to memory");
        zip.write_all(&bytes).expect("writing to memory");
    }
    let bytes = zip.finish().expect("writing to memory").into_inner();
    (bytes, key)
}

fn member(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>, ArchiveError> {
    let file = zip
        .by_name(name)
        .map_err(|_| ArchiveError::Malformed(format!("{name} is missing")))?;
    if file.size() > MAX_MEMBER_BYTES {
        return Err(ArchiveError::Malformed(format!("{name} is too large")));
    }
    let mut out = Vec::new();
    file.take(MAX_MEMBER_BYTES)
        .read_to_end(&mut out)
        .map_err(malformed)?;
    Ok(out)
}

/// Reads an archive back with the key its export showed.
pub fn import(bytes: &[u8], key: &str) -> Result<Imported, ArchiveError> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(malformed)?;
    let manifest: Manifest =
        serde_json::from_slice(&member(&mut zip, "manifest.json")?).map_err(malformed)?;
    if manifest.format > FORMAT {
        return Err(ArchiveError::NewerFormat(manifest.format));
    }
    let opener = SecretBox::from_text(key).map_err(|_| ArchiveError::WrongKey)?;
    if opener.open(&manifest.key_check).ok().as_deref() != Some(KEY_CHECK) {
        return Err(ArchiveError::WrongKey);
    }
    let text = String::from_utf8(member(&mut zip, "agent.yaml")?).map_err(malformed)?;
    document::check_yaml(&text).map_err(malformed)?;
    let mut definition: AgentDefinition = serde_yaml::from_str(&text).map_err(malformed)?;
    if manifest.secrets == SecretsIncluded::Sealed {
        definition.try_map_secrets(|v| opener.open(v).map_err(|_| ArchiveError::WrongKey))?;
    }
    let channels: Vec<ChannelRef> =
        serde_json::from_slice(&member(&mut zip, "channels.json")?).map_err(malformed)?;
    Ok(Imported {
        definition,
        channels,
        options: manifest.options,
        secrets_removed: manifest.secrets == SecretsIncluded::Removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{parse_definition, Format};

    const AGENT: &str = r#"
name: Support
identity: A helpful agent.
workflow:
  - name: Main
    init_state: true
knowledge:
  faq:
    - {question: opening hours, answer: 9 to 17}
llm:
  - name: main
    kind: openai
    base_url: https://llm.example/v1
    model: m1
    api_key: sk-very-secret
    headers: {X-Org: org-secret}
"#;

    fn channels() -> Vec<ChannelRef> {
        vec![ChannelRef {
            connection_id: Uuid::nil(),
            name: "Support bot".into(),
            platform: "telegram".into(),
            inbound: true,
        }]
    }

    #[test]
    fn an_export_comes_back_whole_with_its_key_and_not_without() {
        let def = parse_definition(AGENT, Format::Yaml).unwrap();
        let opts = ExportOptions {
            force_update_agent: true,
            ..ExportOptions::default()
        };
        let (zip, key) = export(&def, &channels(), opts, Utc::now());
        let mut archive = zip::ZipArchive::new(Cursor::new(zip.as_slice())).unwrap();
        let yaml = String::from_utf8(member(&mut archive, "agent.yaml").unwrap()).unwrap();
        assert!(
            !yaml.contains("sk-very-secret") && !yaml.contains("org-secret"),
            "{yaml}"
        );
        assert_eq!(yaml.matches(" v1:").count(), 2, "{yaml}");
        assert!(
            yaml.contains("opening hours"),
            "the rest stays readable: {yaml}"
        );
        let back = import(&zip, &key).unwrap();
        assert_eq!(back.definition, def);
        assert_eq!(back.channels, channels());
        assert_eq!(back.options, opts);
        assert!(!back.secrets_removed);
        let other = SecretBox::generate_key();
        assert_eq!(import(&zip, &other), Err(ArchiveError::WrongKey));
        assert_eq!(import(&zip, "not a key"), Err(ArchiveError::WrongKey));
        assert!(matches!(
            import(b"not a zip", &key),
            Err(ArchiveError::Malformed(_))
        ));
    }

    #[test]
    fn sensitive_data_can_be_left_out() {
        let def = parse_definition(AGENT, Format::Yaml).unwrap();
        let opts = ExportOptions {
            remove_sensitive_data: true,
            ..ExportOptions::default()
        };
        let (zip, key) = export(&def, &[], opts, Utc::now());
        let back = import(&zip, &key).unwrap();
        assert!(back.secrets_removed);
        assert_eq!(back.definition.llm[0].api_key, None);
        assert!(back.definition.llm[0].headers.is_empty());
        assert_eq!(back.definition.knowledge, def.knowledge);
        assert_eq!(back.definition.workflow, def.workflow);
    }
}
