//! Running campaigns: a CampaignSupervisor runs one CampaignActor per running campaign
//! this node owns (claimed in the registry, so one node per campaign in a cluster); each
//! runs its participants' flows in ParticipantActors, which exist only while a
//! participant has work. Everything a participant waits for (its pending trigger, queued
//! events, planned communications) is a row in the store, so waiting costs no memory and
//! a restart or takeover picks it up.
//!
//! ```text
//! CampaignSupervisor ── CampaignActor(campaign_id) ── ParticipantActor(participant_id)
//! ```

mod open;
mod participant;
mod runner;
mod sessions;
mod supervisor;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use parley_engine::campaign::{CampaignId, CommunicationId, ParticipantId};
use parley_engine::model::SessionId;
use ractor::ActorRef;

pub use runner::{CampaignCtx, CampaignMsg, MAX_RESIDENT};
pub(crate) use sessions::message_status;
pub use sessions::run_tap;
pub use supervisor::{CampaignSupMsg, CampaignSupervisor};

/// A communication a session was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommunicationRef {
    pub campaign: CampaignId,
    pub participant: ParticipantId,
    pub communication: CommunicationId,
}

/// The campaigns running on this node and the sessions their communications opened.
#[derive(Default)]
pub struct CampaignDirectory {
    running: DashMap<CampaignId, ActorRef<CampaignMsg>>,
    /// What each running campaign's actors share (registered by the actor itself).
    contexts: DashMap<CampaignId, Arc<CampaignCtx>>,
    /// Participant actors alive, over all campaigns.
    resident: AtomicUsize,
    sessions: DashMap<SessionId, CommunicationRef>,
    supervisor: RwLock<Option<ActorRef<CampaignSupMsg>>>,
}

impl CampaignDirectory {
    pub fn supervisor(&self) -> Option<ActorRef<CampaignSupMsg>> {
        self.supervisor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_supervisor(&self, sup: ActorRef<CampaignSupMsg>) {
        *self.supervisor.write().unwrap_or_else(|e| e.into_inner()) = Some(sup);
    }

    pub fn get(&self, id: &CampaignId) -> Option<ActorRef<CampaignMsg>> {
        self.running.get(id).map(|a| a.clone())
    }

    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    pub fn resident_participants(&self) -> usize {
        self.resident.load(Ordering::Relaxed)
    }

    fn participant_started(&self) {
        self.resident.fetch_add(1, Ordering::Relaxed);
    }

    fn participant_stopped(&self) {
        self.resident.fetch_sub(1, Ordering::Relaxed);
    }

    /// The running campaigns' actors with what they share.
    pub(crate) fn running(&self) -> Vec<(ActorRef<CampaignMsg>, Arc<CampaignCtx>)> {
        self.running
            .iter()
            .filter_map(|e| {
                let ctx = self.contexts.get(e.key())?.clone();
                Some((e.value().clone(), ctx))
            })
            .collect()
    }

    pub(crate) fn contexts(&self) -> Vec<Arc<CampaignCtx>> {
        self.contexts.iter().map(|e| e.value().clone()).collect()
    }

    pub fn running_ids(&self) -> Vec<CampaignId> {
        self.running.iter().map(|e| *e.key()).collect()
    }

    /// Starts running the campaign here (if this node can claim it).
    pub fn start(&self, id: CampaignId) {
        if let Some(sup) = self.supervisor() {
            let _ = sup.cast(CampaignSupMsg::Start(id));
        }
    }

    pub fn stop(&self, id: CampaignId) {
        if let Some(sup) = self.supervisor() {
            let _ = sup.cast(CampaignSupMsg::Stop(id));
        }
    }

    /// New participant triggers or events were stored for the campaign: look now rather
    /// than at the next periodic scan.
    pub fn wake(&self, id: CampaignId) {
        if let Some(a) = self.get(&id) {
            let _ = a.cast(CampaignMsg::Scan);
        }
    }

    pub(crate) fn session(&self, id: &SessionId) -> Option<CommunicationRef> {
        self.sessions.get(id).map(|r| *r)
    }

    pub(crate) fn remember_session(&self, id: SessionId, r: CommunicationRef) {
        self.sessions.insert(id, r);
    }

    pub(crate) fn forget_session(&self, id: &SessionId) {
        self.sessions.remove(id);
    }

    fn forget_campaign_sessions(&self, campaign: CampaignId) {
        self.sessions.retain(|_, r| r.campaign != campaign);
    }
}
