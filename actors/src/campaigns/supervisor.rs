//! The CampaignSupervisor: runs a CampaignActor for each running campaign this node
//! claims, stops those that were stopped (here or on another node), takes over the
//! campaigns of nodes that left, and restarts a failed campaign actor.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parley_engine::campaign::{CampaignId, CampaignStatus};
use parley_engine::registry::Claim;
use parley_engine::telemetry;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::runner::{CampaignActor, CampaignMsg};
use crate::node::Shared;

/// How often the supervisor compares what runs here with the store and the registry.
const SYNC: Duration = Duration::from_secs(2);

pub enum CampaignSupMsg {
    Start(CampaignId),
    Stop(CampaignId),
    /// Claim running campaigns nobody runs; stop the ones no longer running.
    Sync,
}

pub struct CampaignSupervisor;

pub struct CampaignSupState {
    shared: Arc<Shared>,
    /// Campaigns whose actor is being started (a Sync must not start a second one).
    starting: HashSet<CampaignId>,
}

impl CampaignSupState {
    async fn start(&mut self, myself: &ActorRef<CampaignSupMsg>, id: CampaignId) {
        let dir = &self.shared.campaigns;
        if dir.get(&id).is_some() || !self.starting.insert(id) {
            return;
        }
        match self.shared.registry.claim(id).await {
            Ok(Claim::Mine) => {
                let spawned = Actor::spawn_linked(
                    None,
                    CampaignActor,
                    (self.shared.clone(), id),
                    myself.get_cell(),
                )
                .await;
                match spawned {
                    Ok((actor, _)) => {
                        dir.running.insert(id, actor);
                    }
                    Err(e) => {
                        tracing::warn!(campaign = %id, error = %e, "could not start the campaign here; retrying")
                    }
                }
            }
            Ok(Claim::Owned(owner)) => {
                tracing::debug!(campaign = %id, owner = %owner.id, "the campaign runs on another node")
            }
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "cannot claim the campaign yet")
            }
        }
        self.starting.remove(&id);
    }

    async fn stop(&mut self, id: CampaignId) {
        if let Some((_, actor)) = self.shared.campaigns.running.remove(&id) {
            actor.stop(Some("campaign stopped".into()));
            self.shared.campaigns.forget_campaign_sessions(id);
            let _ = self.shared.registry.release(id).await;
        }
    }

    async fn sync(&mut self, myself: &ActorRef<CampaignSupMsg>) {
        let running = match self.shared.store.list_running_campaigns().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the running campaigns");
                return;
            }
        };
        let wanted: HashSet<CampaignId> = running
            .iter()
            .filter(|c| c.campaign.status == CampaignStatus::Running)
            .map(|c| c.campaign.id)
            .collect();
        for id in self.shared.campaigns.running_ids() {
            if !wanted.contains(&id) {
                self.stop(id).await;
            }
        }
        for id in wanted {
            self.start(myself, id).await;
        }
        self.shared
            .events
            .set_campaign_tapping(self.shared.campaigns.running_count() > 0);
    }
}

impl Actor for CampaignSupervisor {
    type Msg = CampaignSupMsg;
    type State = CampaignSupState;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        shared.campaigns.set_supervisor(myself.clone());
        myself.send_interval(SYNC, || CampaignSupMsg::Sync);
        let _ = myself.cast(CampaignSupMsg::Sync);
        Ok(CampaignSupState {
            shared,
            starting: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CampaignSupMsg::Start(id) => state.start(&myself, id).await,
            CampaignSupMsg::Stop(id) => state.stop(id).await,
            CampaignSupMsg::Sync => state.sync(&myself).await,
        }
        state
            .shared
            .events
            .set_campaign_tapping(state.shared.campaigns.running_count() > 0);
        Ok(())
    }

    // Overrides ractor's default, which would stop the supervisor when a campaign ends.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, err) = event else {
            return Ok(());
        };
        let dir = &state.shared.campaigns;
        let failed = dir
            .running
            .iter()
            .find(|e| e.value().get_id() == cell.get_id())
            .map(|e| *e.key());
        if let Some(id) = failed {
            tracing::error!(campaign = %id, error = %err, "campaign actor failed; the next sync restarts it");
            metrics::counter!(telemetry::RESTARTS_TOTAL, "kind" => "campaign").increment(1);
            state.shared.supervision.restarted(format!("campaign:{id}"));
            // Not released: the claim stays with this node, which restarts it at the next
            // sync from what the store holds.
            dir.running.remove(&id);
        }
        Ok(())
    }
}

/// The message a CampaignActor gets from outside the campaign's own flow.
pub(crate) fn notify(shared: &Shared, campaign: CampaignId, msg: CampaignMsg) {
    if let Some(a) = shared.campaigns.get(&campaign) {
        let _ = a.cast(msg);
    }
}
