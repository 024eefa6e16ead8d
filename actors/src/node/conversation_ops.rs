//! The operators' side of conversations: the inbox, taking a conversation from the AI
//! (and giving it back), assigning it to an operator on shift, operator messages and
//! internal notes, resolving and escalating. Every change goes through the session's
//! actor, in order with the customer's messages.

use chrono::Utc;
use parley_engine::identity::{Role as UserRole, UserId};
use parley_engine::model::{CloseStatus, Message, Mode, Role, Session, SessionId, TenantId};
use parley_engine::store::ConversationQuery;

use super::{Caller, Node};
use crate::error::{NodeError, NodeResult};
use crate::session::{Handoff, SessionMsg};

/// Longest operator message or note, in characters.
pub const MAX_OPERATOR_TEXT: usize = 16 * 1024;

impl Node {
    /// The session, if it is the tenant's.
    async fn tenant_session(&self, tenant: TenantId, id: SessionId) -> NodeResult<Session> {
        match self.shared.store.load_session(id).await? {
            Some(s) if s.tenant_id == tenant => Ok(s),
            _ => Err(NodeError::NotFound("conversation")),
        }
    }

    /// The operators' inbox.
    pub async fn inbox(
        &self,
        tenant: TenantId,
        query: &ConversationQuery,
    ) -> NodeResult<(Vec<Session>, u64)> {
        Ok(self.shared.store.list_conversations(tenant, query).await?)
    }

    /// A conversation with its whole log (notes and drafts included).
    pub async fn conversation(
        &self,
        tenant: TenantId,
        id: SessionId,
    ) -> NodeResult<(Session, Vec<Message>)> {
        let s = self.tenant_session(tenant, id).await?;
        let messages = self.shared.store.load_messages(id).await?;
        Ok((s, messages))
    }

    async fn handoff(
        &self,
        tenant: TenantId,
        id: SessionId,
        h: Handoff,
    ) -> NodeResult<(Session, Option<Message>)> {
        self.tenant_session(tenant, id).await?;
        self.shared
            .sessions
            .call(id, |r| SessionMsg::Handoff(h.clone(), r))
            .await
    }

    /// REGULAR (the AI answers), OPERATOR (a person does) or COPILOT (a person does, with
    /// the AI's drafts).
    pub async fn set_conversation_mode(
        &self,
        tenant: TenantId,
        id: SessionId,
        mode: Mode,
    ) -> NodeResult<Session> {
        Ok(self.handoff(tenant, id, Handoff::Mode(mode)).await?.0)
    }

    /// Assigns the conversation to `user` (default: the caller), who must be an operator
    /// on shift; `unassign` leaves it to nobody.
    pub async fn assign_conversation(
        &self,
        caller: Caller,
        id: SessionId,
        user: Option<UserId>,
        unassign: bool,
    ) -> NodeResult<Session> {
        let target = if unassign {
            None
        } else {
            let user = user.or(caller.user).ok_or_else(|| {
                NodeError::Invalid("user_id: required when calling with the admin key".into())
            })?;
            let record = match self.shared.store.get_user(user).await? {
                Some(u) if u.tenant_id == caller.tenant => u,
                _ => return Err(NodeError::NotFound("user")),
            };
            if record.role != UserRole::Operator {
                return Err(NodeError::Conflict(format!(
                    "{} is not an operator",
                    record.email
                )));
            }
            let on_shift = self
                .shared
                .operators_on_shift(caller.tenant, Utc::now())
                .await?;
            if !on_shift.iter().any(|u| u.id == user) {
                return Err(NodeError::Conflict(format!(
                    "{} is not on shift now (see their schedule)",
                    record.email
                )));
            }
            Some(user)
        };
        Ok(self
            .handoff(caller.tenant, id, Handoff::Assign(target))
            .await?
            .0)
    }

    /// An operator's message to the customer (`Role::Operator`) or an internal note
    /// (`Role::Notes`).
    pub async fn operator_message(
        &self,
        caller: Caller,
        id: SessionId,
        role: Role,
        text: &str,
    ) -> NodeResult<Message> {
        if !matches!(role, Role::Operator | Role::Notes) {
            return Err(NodeError::Invalid("role: OPERATOR or NOTES".into()));
        }
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_OPERATOR_TEXT {
            return Err(NodeError::Invalid(format!(
                "text: 1 to {MAX_OPERATOR_TEXT} characters"
            )));
        }
        if role == Role::Operator {
            let s = self.tenant_session(caller.tenant, id).await?;
            if s.mode == Mode::Regular {
                return Err(NodeError::Conflict(
                    "the AI answers this conversation: take it over first (mode OPERATOR or COPILOT)"
                        .into(),
                ));
            }
        }
        let (_, m) = self
            .handoff(
                caller.tenant,
                id,
                Handoff::Message {
                    role,
                    text: text.to_string(),
                    author: caller.user,
                },
            )
            .await?;
        m.ok_or_else(|| NodeError::Internal("the message was not recorded".into()))
    }

    /// Closes the conversation as resolved or escalated by its operator.
    pub async fn finish_conversation(
        &self,
        tenant: TenantId,
        id: SessionId,
        status: CloseStatus,
    ) -> NodeResult<Session> {
        let s = self.tenant_session(tenant, id).await?;
        self.shared
            .sessions
            .call(id, |r| SessionMsg::Close(s.agent_id, status, r))
            .await
    }
}
