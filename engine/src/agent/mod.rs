//! Agents: the YAML/JSON definition, its validation and the compiled form sessions run.

pub mod archive;
mod compile;
mod definition;
pub mod limits;
pub mod stored;

pub use compile::{
    compile, parse_and_compile, parse_definition, CompiledAgent, CompiledField, CompiledState,
    CompiledTransition, Format, ValidationError, ValidationErrors,
};
pub use definition::{
    AgentDefinition, BackendDef, BackendKind, FaqEntry, FieldDef, KnowledgeDef, SessionDef,
    StateDef, ToolsDef, TransitionDef, REDACTED,
};
