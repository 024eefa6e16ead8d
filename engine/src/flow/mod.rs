//! Campaign flows: the YAML/JSON graph a campaign runs its participants through, its
//! validation against the campaign's fields, and the pure parts of running it (evaluating
//! conditions, planning communications, rendering start phrases). Storage, participant
//! actors and HTTP live elsewhere.

mod compiled;
mod config;
mod definition;
mod eval;
mod perform;
mod run;
mod schedule;
mod template;
mod validate;

pub use compiled::{
    Assignment, Communication, CompiledFlow, Condition, DateOperand, HttpAction, Node, NodeId,
    NodeKind, Operand, Outcome, Property, Scope, Source, ValueKind,
};
pub use definition::{
    parse_definition, AssignmentDef, Channel, FlowDefinition, NodeDef, NodeType, Operator,
    TemplateDef, TriggerType, WriteDef,
};
pub use eval::{check, display, EvalContext};
pub use perform::ParticipantData;
pub use run::Walk;
pub use schedule::{BaseDate, Plan, Schedule, Window};
pub use template::{placeholders, render};
pub use validate::{parse_and_validate, validate};
