//! The workflow state machine at run time: the tools and how a turn applies them.
//!
//! Every change an LLM backend makes to a session goes through [`TurnContext::apply`],
//! which allows a tool only when the current state lists it and a state change only along
//! a declared transition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{CompiledAgent, CompiledState};
use crate::model::CloseStatus;

/// The workflow tools an agent state may list in `available_tools`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tool {
    ChangeState,
    SetResult,
    SendChatMessage,
    FinishSession,
    /// Hands the conversation to a human operator (when one is on shift).
    TransferToOperator,
}

impl Tool {
    pub const ALL: [Tool; 5] = [
        Tool::ChangeState,
        Tool::SetResult,
        Tool::SendChatMessage,
        Tool::FinishSession,
        Tool::TransferToOperator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::ChangeState => "ChangeState",
            Tool::SetResult => "SetResult",
            Tool::SendChatMessage => "SendChatMessage",
            Tool::FinishSession => "FinishSession",
            Tool::TransferToOperator => "TransferToOperator",
        }
    }

    pub fn parse(s: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// One thing a backend asks the workflow to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    SendChatMessage(String),
    ChangeState(String),
    SetResult { field: String, value: Value },
    FinishSession(CloseStatus),
    TransferToOperator,
}

impl Action {
    pub fn tool(&self) -> Tool {
        match self {
            Action::SendChatMessage(_) => Tool::SendChatMessage,
            Action::ChangeState(_) => Tool::ChangeState,
            Action::SetResult { .. } => Tool::SetResult,
            Action::FinishSession(_) => Tool::FinishSession,
            Action::TransferToOperator => Tool::TransferToOperator,
        }
    }
}

/// A working copy of a session's workflow position for one turn. Backends apply actions to
/// it; the session takes the outcome only when the turn succeeds, so a failed backend
/// leaves nothing half-applied.
#[derive(Debug, Clone)]
pub struct TurnContext<'a> {
    agent: &'a CompiledAgent,
    state: usize,
    results: BTreeMap<String, Value>,
    /// Text sent with SendChatMessage during this turn, in order.
    pub messages: Vec<String>,
    pub finish: Option<CloseStatus>,
    /// The backend asked for a human operator.
    pub transfer: bool,
    pub state_changed: bool,
    /// Actions that were refused, with the reason (reported in the AI message metadata).
    pub rejected: Vec<String>,
}

impl<'a> TurnContext<'a> {
    pub fn new(
        agent: &'a CompiledAgent,
        state_name: &str,
        results: &BTreeMap<String, Value>,
    ) -> Self {
        TurnContext {
            agent,
            state: agent.state_index(state_name).unwrap_or(agent.init_state),
            results: results.clone(),
            messages: Vec::new(),
            finish: None,
            transfer: false,
            state_changed: false,
            rejected: Vec::new(),
        }
    }

    pub fn agent(&self) -> &'a CompiledAgent {
        self.agent
    }

    pub fn state(&self) -> &'a CompiledState {
        &self.agent.states[self.state]
    }

    pub fn results(&self) -> &BTreeMap<String, Value> {
        &self.results
    }

    pub fn into_results(self) -> BTreeMap<String, Value> {
        self.results
    }

    /// Applies one action; on refusal the reason is returned and also kept in `rejected`.
    pub fn apply(&mut self, action: Action) -> Result<String, String> {
        let r = self.try_apply(action);
        if let Err(e) = &r {
            self.rejected.push(e.clone());
        }
        r
    }

    fn try_apply(&mut self, action: Action) -> Result<String, String> {
        let state = self.state();
        let tool = action.tool();
        if !state.tools.contains(&tool) {
            return Err(format!(
                "tool {} is not available in state {:?}",
                tool.name(),
                state.name
            ));
        }
        if self.finish.is_some() {
            return Err("the session is already finishing".into());
        }
        match action {
            Action::SendChatMessage(text) => {
                self.messages.push(text);
                Ok("message sent".into())
            }
            Action::ChangeState(target) => {
                let idx = self
                    .agent
                    .state_index(&target)
                    .ok_or_else(|| format!("unknown state {target:?}"))?;
                if !state.transitions.iter().any(|t| t.target == idx) {
                    return Err(format!("no transition from {:?} to {target:?}", state.name));
                }
                self.state = idx;
                self.state_changed = true;
                Ok(format!("state is now {target}"))
            }
            Action::SetResult { field, value } => {
                let f = self
                    .agent
                    .fields
                    .iter()
                    .find(|f| f.name == field)
                    .ok_or_else(|| format!("unknown result field {field:?}"))?;
                let v = f
                    .field_type
                    .coerce(&value)
                    .map_err(|e| format!("{field}: {e}"))?;
                self.results.insert(field.clone(), v);
                Ok(format!("{field} recorded"))
            }
            Action::FinishSession(status) => {
                self.finish = Some(status);
                Ok("session will finish after this reply".into())
            }
            Action::TransferToOperator => {
                self.transfer = true;
                Ok("a human operator takes over if one is on shift".into())
            }
        }
    }
}
