//! What campaigns learn from conversations: a communication's customer replying, its
//! session closing, the platform reporting its opening message delivered or read, and a
//! participant starting a conversation on their own (incoming_session).

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use parley_engine::campaign::CommunicationStatus;
use parley_engine::connection::ConnectionId;
use parley_engine::flow::TriggerType;
use parley_engine::model::{CloseStatus, SessionId};
use tokio::sync::mpsc;

use super::runner::{CampaignMsg, SessionNote};
use super::supervisor::notify;
use super::CommunicationRef;
use crate::events::UserEvent;
use crate::node::Shared;

/// Customers matched to participants per new session, at most.
const MAX_CUSTOMERS: u32 = 10;

/// Follows conversation events while campaigns run on this node.
pub async fn run_tap(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<Arc<UserEvent>>) {
    // Sessions whose reply was reported: later messages need no store round trip.
    let mut replied: HashSet<SessionId> = HashSet::new();
    while let Some(event) = events.recv().await {
        let dir = &shared.campaigns;
        match &*event {
            UserEvent::ConversationNewMessage {
                session_id, role, ..
            } if *role == "HUMAN" => {
                if let Some(r) = dir.session(session_id) {
                    if replied.insert(*session_id) {
                        notify(
                            &shared,
                            r.campaign,
                            CampaignMsg::Session(r, SessionNote::Replied),
                        );
                    }
                }
            }
            UserEvent::ConversationClosed {
                session_id,
                status,
                conversation_result,
                ..
            } => {
                replied.remove(session_id);
                if let Some(r) = dir.session(session_id) {
                    dir.forget_session(session_id);
                    let note = SessionNote::Closed {
                        status: CloseStatus::parse(status).unwrap_or(CloseStatus::Unknown),
                        results: conversation_result
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    };
                    notify(&shared, r.campaign, CampaignMsg::Session(r, note));
                }
            }
            UserEvent::ConversationCreated { session_id, .. }
                if dir.session(session_id).is_none() =>
            {
                let (shared, id) = (shared.clone(), *session_id);
                tokio::spawn(async move { incoming_session(&shared, id).await });
            }
            _ => {}
        }
    }
}

/// A session a customer started: for each running campaign here that listens for
/// incoming sessions, the customer's participants get the trigger.
async fn incoming_session(shared: &Shared, id: SessionId) {
    let listening: Vec<_> = shared
        .campaigns
        .contexts()
        .into_iter()
        .filter(|c| c.listens(TriggerType::IncomingSession))
        .collect();
    if listening.is_empty() {
        return;
    }
    let store = &shared.store;
    let Ok(Some(session)) = store.load_session(id).await else {
        return;
    };
    let user = session.user_id.as_str();
    let (attribute, value) = match session.ext_type.as_str() {
        "telegram" => (
            "telegram_id",
            user.strip_prefix("telegram:").unwrap_or(user),
        ),
        "whatsapp" => (
            "whatsapp_id",
            user.strip_prefix("whatsapp:").unwrap_or(user),
        ),
        "web" | "mobile" => ("web_id", user),
        _ => return,
    };
    let customers = match store
        .customers_by_channel_id(session.tenant_id, attribute, value, MAX_CUSTOMERS)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "cannot match a new session to participants");
            return;
        }
    };
    for ctx in listening
        .iter()
        .filter(|c| c.record.campaign.tenant_id == session.tenant_id)
    {
        let mut queued = false;
        for &customer in &customers {
            let Ok(participants) = store.participants_of_customer(ctx.id(), customer).await else {
                continue;
            };
            for p in participants {
                match store
                    .add_participant_event(
                        ctx.id(),
                        p,
                        TriggerType::IncomingSession,
                        None,
                        Utc::now(),
                    )
                    .await
                {
                    Ok(_) => queued = true,
                    Err(e) => {
                        tracing::warn!(campaign = %ctx.id(), participant = %p, error = %e, "could not queue incoming_session")
                    }
                }
            }
        }
        if queued {
            shared.campaigns.wake(ctx.id());
        }
    }
}

/// A platform's delivery report for a message a connection sent (WhatsApp statuses):
/// the communication it opened moves to Delivered, Read or Failed.
pub(crate) async fn message_status(
    shared: &Shared,
    connection: ConnectionId,
    message_id: &str,
    status: &str,
) {
    let status = match status {
        "delivered" => CommunicationStatus::Delivered,
        "read" => CommunicationStatus::Read,
        "failed" => CommunicationStatus::Failed,
        _ => return,
    };
    if shared.campaigns.running_count() == 0 {
        return;
    }
    match shared
        .store
        .communication_by_message(connection, message_id)
        .await
    {
        Ok(Some(c)) => {
            let r = CommunicationRef {
                campaign: c.campaign_id,
                participant: c.participant_id,
                communication: c.id,
            };
            notify(
                shared,
                c.campaign_id,
                CampaignMsg::Session(r, SessionNote::Status(status)),
            );
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "cannot match a delivery report to a communication"),
    }
}
