//! The ParticipantActor: one participant's work, one piece at a time — its flows run on
//! a trigger (conditions decided, actions performed, everything the run changed
//! committed in one transaction), its communications started when due, and its
//! communications' sessions followed. It lives only while it has work.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use parley_engine::campaign::{
    parse_timezone, today_in, CommunicationChange, CommunicationId, CommunicationRecord,
    CommunicationStatus, ParticipantEvent, ParticipantId, ParticipantRecord, ParticipantStep,
};
use parley_engine::flow::{HttpAction, NodeKind, ParticipantData, TriggerType, Walk};
use parley_engine::model::CloseStatus;
use parley_engine::store::StoreResult;
use parley_engine::telemetry;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::open::{open, OpenError};
use super::runner::{CampaignCtx, CampaignMsg, SessionNote, WorkKey};
use super::CommunicationRef;
use crate::session::SessionMsg;

/// A chain of to_another_flow hand-offs longer than this is cut (flows may hand
/// participants to each other in a circle).
const MAX_FLOW_RUNS: usize = 16;
const HTTP_ACTION_TIMEOUT: Duration = Duration::from_secs(10);
const HTTP_ACTION_ATTEMPTS: u32 = 3;

/// One piece of a participant's work.
#[derive(Debug, Clone)]
pub enum Work {
    /// Its created/updated trigger from an upload.
    Pending,
    Event(ParticipantEvent),
    /// A communication is due to start (or to be canceled).
    Due(CommunicationId),
    Session(CommunicationRef, SessionNote),
}

impl Work {
    fn key(&self) -> WorkKey {
        match self {
            Work::Pending => WorkKey::Pending,
            Work::Event(e) => WorkKey::Event(e.id),
            Work::Due(id) => WorkKey::Due(*id),
            Work::Session(..) => WorkKey::Session,
        }
    }
}

pub enum ParticipantMsg {
    Work(Work),
}

pub struct ParticipantActor;

pub struct ParticipantState {
    ctx: Arc<CampaignCtx>,
    parent: ActorRef<CampaignMsg>,
    id: ParticipantId,
}

/// What a piece of work tells the campaign.
#[derive(Default)]
struct Report {
    planned: Option<DateTime<Utc>>,
    queued_events: bool,
}

impl Actor for ParticipantActor {
    type Msg = ParticipantMsg;
    type State = ParticipantState;
    type Arguments = (Arc<CampaignCtx>, ActorRef<CampaignMsg>, ParticipantId);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (ctx, parent, id): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ctx.shared.campaigns.participant_started();
        ctx.resident
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(ParticipantState { ctx, parent, id })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.ctx.shared.campaigns.participant_stopped();
        state
            .ctx
            .resident
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        ParticipantMsg::Work(work): Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let key = work.key();
        // A store error fails the actor: the work is still in the store, and the
        // campaign finds it again.
        let report = match work {
            Work::Pending => state.run_pending().await?,
            Work::Event(e) => state.run_event(e).await?,
            Work::Due(id) => state.start_due(id).await?,
            Work::Session(r, note) => state.follow_session(r, note).await?,
        };
        let _ = state.parent.cast(CampaignMsg::Done {
            participant: state.id,
            work: key,
            planned: report.planned,
            queued_events: report.queued_events,
        });
        Ok(())
    }
}

impl ParticipantState {
    fn now(&self) -> DateTime<Utc> {
        self.ctx.shared.config.clock.now()
    }

    /// The participant's scheduling zone: its own, else the campaign's.
    fn zone(&self, p: &ParticipantRecord) -> Tz {
        p.timezone
            .as_deref()
            .and_then(|z| parse_timezone(z).ok())
            .unwrap_or(self.ctx.tz)
    }

    async fn load(&self) -> StoreResult<Option<(ParticipantRecord, ParticipantData)>> {
        let store = &self.ctx.shared.store;
        let Some(p) = store.get_participant(self.id).await? else {
            return Ok(None);
        };
        let customer = store
            .get_customer(p.customer_id)
            .await?
            .map(|c| c.attributes)
            .unwrap_or_default();
        let data = ParticipantData::new(customer, p.attributes.clone(), p.result.clone());
        Ok(Some((p, data)))
    }

    async fn run_pending(&self) -> StoreResult<Report> {
        let Some((p, data)) = self.load().await? else {
            return Ok(Report::default());
        };
        let Some(pending) = p.pending else {
            // Already run (a rescan found it before its commit).
            return Ok(Report::default());
        };
        let mut step = self.step(&p);
        step.clear_pending = Some(p.updated_at);
        self.run(pending.trigger(), &p, data, step).await
    }

    async fn run_event(&self, e: ParticipantEvent) -> StoreResult<Report> {
        let Some((p, data)) = self.load().await? else {
            // Gone with its participant: only the event is removed.
            let mut step = ParticipantStep {
                event_done: Some(e.id),
                ..self.empty_step()
            };
            step.at = self.now();
            self.ctx.shared.store.commit_participant_step(&step).await?;
            return Ok(Report::default());
        };
        let mut data = data;
        if let Some(id) = e.communication_id {
            // The communication the event is about: its results, with its name, status
            // and channel, are what `result.` reads in this run.
            if let Some(c) = self.ctx.shared.store.get_communication(id).await? {
                data.result = communication_result(&c);
            }
        }
        let mut step = self.step(&p);
        step.event_done = Some(e.id);
        self.run(e.trigger, &p, data, step).await
    }

    fn empty_step(&self) -> ParticipantStep {
        ParticipantStep {
            tenant_id: self.ctx.record.campaign.tenant_id,
            campaign_id: self.ctx.id(),
            participant_id: self.id,
            customer_id: Uuid::nil(),
            clear_pending: None,
            event_done: None,
            participant_patch: Map::new(),
            customer_patch: Map::new(),
            cancel_open: false,
            new_communications: Vec::new(),
            visited: Vec::new(),
            at: self.now(),
        }
    }

    fn step(&self, p: &ParticipantRecord) -> ParticipantStep {
        ParticipantStep {
            customer_id: p.customer_id,
            ..self.empty_step()
        }
    }

    /// Runs every active flow that starts on `trigger` (and the flows they hand the
    /// participant to), then commits what the runs did.
    async fn run(
        &self,
        trigger: TriggerType,
        p: &ParticipantRecord,
        mut data: ParticipantData,
        mut step: ParticipantStep,
    ) -> StoreResult<Report> {
        let now = step.at;
        let tz = self.zone(p);
        let today = today_in(tz, now);
        let mut open_names: Option<Vec<String>> = None;
        let mut runs: VecDeque<(String, TriggerType)> = self
            .ctx
            .flows
            .iter()
            .filter(|(_, f)| !f.triggers_for(trigger).is_empty())
            .map(|(name, _)| (name.clone(), trigger))
            .collect();
        let mut ran = 0;
        while let Some((name, t)) = runs.pop_front() {
            ran += 1;
            if ran > MAX_FLOW_RUNS {
                tracing::warn!(campaign = %self.ctx.id(), participant = %self.id, "flows hand the participant on in a circle; stopped after {MAX_FLOW_RUNS} runs");
                break;
            }
            let Some(flow) = self.ctx.flows.get(&name) else {
                continue;
            };
            for &start in flow.triggers_for(t) {
                let mut walk = Walk::new(flow, start);
                // The context is dropped before the action changes the data.
                while let Some(node) = {
                    let ctx = data.context(today);
                    walk.next_action(&ctx)
                } {
                    match &node.kind {
                        NodeKind::StartCommunication(c) => {
                            if open_names.is_none() {
                                open_names = Some(self.open_names().await?);
                            }
                            let comm = self.plan(
                                &name,
                                node,
                                c,
                                &data,
                                tz,
                                now,
                                &step,
                                open_names.as_deref().unwrap_or_default(),
                            );
                            step.new_communications.push(comm);
                        }
                        NodeKind::CancelCommunications => {
                            step.cancel_open = true;
                            for c in &mut step.new_communications {
                                if c.status.is_open() {
                                    c.status = CommunicationStatus::Canceled;
                                    c.reason = Some("canceled by the flow".into());
                                }
                            }
                        }
                        NodeKind::UpdateField(assignments) => data.assign(assignments, today),
                        NodeKind::ToAnotherFlow(target) => {
                            runs.push_back((target.clone(), TriggerType::FromAnotherFlow))
                        }
                        NodeKind::HttpAction(h) => self.http_action(h, &mut data, p).await,
                        NodeKind::Trigger(_) | NodeKind::FieldCheck(_) => {}
                    }
                }
                step.visited
                    .extend(walk.visited().map(|n| (name.clone(), n.id.clone())));
            }
        }
        step.participant_patch = std::mem::take(&mut data.participant_patch);
        step.customer_patch = std::mem::take(&mut data.customer_patch);
        let planned = step
            .new_communications
            .iter()
            .filter(|c| c.status == CommunicationStatus::Planned)
            .map(CommunicationRecord::due_at)
            .min();
        let outcome = self.ctx.shared.store.commit_participant_step(&step).await?;
        metrics::counter!(telemetry::CAMPAIGN_RUNS_TOTAL, "trigger" => trigger.as_str())
            .increment(1);
        for c in &step.new_communications {
            metrics::counter!(telemetry::CAMPAIGN_COMMUNICATIONS_TOTAL, "status" => c.status.as_str())
                .increment(1);
        }
        for c in outcome.canceled {
            if let Some(session) = c.session_id {
                self.close_session(c.agent_id, session, CloseStatus::Canceled)
                    .await;
            }
        }
        Ok(Report {
            planned,
            queued_events: false,
        })
    }

    /// Names of the participant's communications in progress (a second one of the same
    /// name is skipped, so a re-upload does not message a customer twice).
    async fn open_names(&self) -> StoreResult<Vec<String>> {
        Ok(self
            .ctx
            .shared
            .store
            .list_communications(self.id)
            .await?
            .into_iter()
            .filter(|c| c.status.is_open())
            .map(|c| c.name)
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        flow_name: &str,
        node: &parley_engine::flow::Node,
        c: &parley_engine::flow::Communication,
        data: &ParticipantData,
        tz: Tz,
        now: DateTime<Utc>,
        step: &ParticipantStep,
        open_names: &[String],
    ) -> CommunicationRecord {
        let mut record = CommunicationRecord {
            id: Uuid::now_v7(),
            tenant_id: self.ctx.record.campaign.tenant_id,
            campaign_id: self.ctx.id(),
            participant_id: self.id,
            flow: flow_name.to_string(),
            node: node.id.clone(),
            name: c.name.clone(),
            channel: c.channel,
            agent_id: c.agent_id,
            connection_id: c.connection_id,
            status: CommunicationStatus::Planned,
            reason: None,
            start_at: now,
            cancel_at: None,
            session_id: None,
            message_id: None,
            results: Map::new(),
            created_at: now,
            updated_at: now,
        };
        let in_progress = (!step.cancel_open && open_names.contains(&c.name))
            || step
                .new_communications
                .iter()
                .any(|n| n.name == c.name && n.status.is_open());
        if in_progress {
            record.status = CommunicationStatus::Skipped;
            record.reason = Some(format!(
                "a communication named {} is already in progress for this participant",
                c.name
            ));
            return record;
        }
        match data.plan(&c.schedule, tz, now) {
            Ok(plan) => {
                record.start_at = plan.start;
                record.cancel_at = Some(plan.cancel_at);
            }
            Err(reason) => {
                record.status = CommunicationStatus::Skipped;
                record.reason = Some(reason);
            }
        }
        record
    }

    /// POSTs the participant's data and the node's params; writes the response fields
    /// the node names. A call that keeps failing is logged and the flow goes on without
    /// its writes.
    async fn http_action(&self, h: &HttpAction, data: &mut ParticipantData, p: &ParticipantRecord) {
        let body = json!({
            "campaign_id": self.ctx.id(),
            "participant_id": self.id,
            "object_id": p.object_id,
            "params": h.params,
            "participant": data.participant,
            "customer": data.customer,
            "result": data.result,
        });
        let host = reqwest::Url::parse(&h.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        if let Err(error) = self.ctx.shared.config.egress.check_url(&h.url) {
            tracing::warn!(campaign = %self.ctx.id(), participant = %self.id, %host, %error, "http_action denied; the flow goes on without its writes");
            return;
        }
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=HTTP_ACTION_ATTEMPTS {
            let sent = self
                .ctx
                .shared
                .http
                .post(&h.url)
                .timeout(HTTP_ACTION_TIMEOUT)
                .json(&body)
                .send()
                .await;
            let error = match sent {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(answer) => {
                        for (pointer, property) in &h.writes {
                            if let Some(v) = answer.pointer(pointer) {
                                data.set(property, v.clone());
                            }
                        }
                        return;
                    }
                    Err(e) => format!("the answer is not JSON: {e}"),
                },
                Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                    // Will not get better by asking again.
                    tracing::warn!(campaign = %self.ctx.id(), participant = %self.id, %host, status = %r.status(), "http_action refused");
                    return;
                }
                Ok(r) => format!("status {}", r.status()),
                Err(e) => e.without_url().to_string(),
            };
            if attempt == HTTP_ACTION_ATTEMPTS {
                tracing::warn!(campaign = %self.ctx.id(), participant = %self.id, %host, %error, "http_action failed; the flow goes on without its writes");
                return;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }

    async fn close_session(
        &self,
        agent: parley_engine::model::AgentId,
        session: Uuid,
        status: CloseStatus,
    ) {
        let shared = &self.ctx.shared;
        shared.campaigns.forget_session(&session);
        if let Err(e) = shared
            .sessions
            .call(session, |r| SessionMsg::Close(agent, status, r))
            .await
        {
            tracing::debug!(%session, error = %e, "could not close a communication's session");
        }
    }

    async fn change(
        &self,
        id: CommunicationId,
        from: &[CommunicationStatus],
        change: CommunicationChange,
    ) -> StoreResult<Option<CommunicationRecord>> {
        let changed = self
            .ctx
            .shared
            .store
            .change_communication(id, from, &change)
            .await?;
        if changed.is_some() {
            metrics::counter!(telemetry::CAMPAIGN_COMMUNICATIONS_TOTAL, "status" => change.status.as_str())
                .increment(1);
        }
        Ok(changed)
    }

    fn change_to(
        &self,
        status: CommunicationStatus,
        reason: Option<String>,
    ) -> CommunicationChange {
        CommunicationChange {
            status,
            reason,
            session_id: None,
            message_id: None,
            results: None,
            fire: self.ctx.fires(TriggerType::CommunicationUpdated),
            at: self.now(),
        }
    }

    /// Starts a communication that came due, or cancels it if its duration ran out.
    async fn start_due(&self, id: CommunicationId) -> StoreResult<Report> {
        let store = &self.ctx.shared.store;
        let mut report = Report::default();
        let Some(c) = store.get_communication(id).await? else {
            return Ok(report);
        };
        let now = self.now();
        if c.status != CommunicationStatus::Planned || now < c.due_at() {
            return Ok(report);
        }
        let planned = [CommunicationStatus::Planned];
        if c.cancel_at.is_some_and(|t| now >= t) {
            let change = self.change_to(
                CommunicationStatus::Canceled,
                Some("it could not start before its duration ran out".into()),
            );
            report.queued_events = change.fire.is_some();
            self.change(id, &planned, change).await?;
            return Ok(report);
        }
        let spec = self
            .ctx
            .flows
            .get(&c.flow)
            .and_then(|f| f.node(&c.node))
            .and_then(|n| match &n.kind {
                NodeKind::StartCommunication(s) => Some(s.clone()),
                _ => None,
            });
        let loaded = self.load().await?;
        let (Some(spec), Some((p, data))) = (spec, loaded) else {
            let change = self.change_to(
                CommunicationStatus::Failed,
                Some(format!(
                    "flow {} no longer has node {} active",
                    c.flow, c.node
                )),
            );
            report.queued_events = change.fire.is_some();
            self.change(id, &planned, change).await?;
            return Ok(report);
        };
        // Claimed before anything goes out: a second start finds it Started.
        let session_id = Uuid::now_v7();
        let dir = &self.ctx.shared.campaigns;
        dir.remember_session(
            session_id,
            CommunicationRef {
                campaign: self.ctx.id(),
                participant: self.id,
                communication: id,
            },
        );
        let claim = CommunicationChange {
            session_id: Some(session_id),
            fire: None,
            ..self.change_to(CommunicationStatus::Started, None)
        };
        let Some(c) = self.change(id, &planned, claim).await? else {
            dir.forget_session(&session_id);
            return Ok(report);
        };
        let today: NaiveDate = today_in(self.zone(&p), now);
        let change = match open(&self.ctx, &c, &spec, &data, today, session_id).await {
            Ok(opened) => CommunicationChange {
                message_id: opened.message_id,
                ..self.change_to(opened.status, None)
            },
            Err(e) => {
                let reason = match e {
                    OpenError::Before(r) => r,
                    OpenError::After(r) => {
                        self.close_session(c.agent_id, session_id, CloseStatus::Failed)
                            .await;
                        r
                    }
                };
                dir.forget_session(&session_id);
                tracing::info!(campaign = %self.ctx.id(), communication = %id, %reason, "communication failed");
                self.change_to(CommunicationStatus::Failed, Some(reason))
            }
        };
        report.queued_events = change.fire.is_some();
        let message_id = change.message_id.clone();
        if self
            .change(id, &[CommunicationStatus::Started], change)
            .await?
            .is_none()
        {
            // A delivery report or the customer's reply came first: keep their status,
            // record the message id.
            if let Some(now) = store.get_communication(id).await? {
                if now.status.is_open() && message_id.is_some() {
                    let keep = CommunicationChange {
                        message_id,
                        fire: None,
                        ..self.change_to(now.status, now.reason.clone())
                    };
                    self.change(id, &[now.status], keep).await?;
                }
            }
        }
        Ok(report)
    }

    /// Follows what happened to a communication's session.
    async fn follow_session(&self, r: CommunicationRef, note: SessionNote) -> StoreResult<Report> {
        use CommunicationStatus as S;
        let mut report = Report::default();
        let (from, change): (&[S], CommunicationChange) = match note {
            SessionNote::Replied => (
                &[S::Started, S::Delivered, S::Read],
                self.change_to(S::Replied, None),
            ),
            SessionNote::Status(S::Delivered) => {
                (&[S::Started], self.change_to(S::Delivered, None))
            }
            SessionNote::Status(S::Read) => {
                (&[S::Started, S::Delivered], self.change_to(S::Read, None))
            }
            SessionNote::Status(S::Failed) => (
                &[S::Started, S::Delivered],
                self.change_to(S::Failed, Some("the platform could not deliver it".into())),
            ),
            SessionNote::Status(_) => return Ok(report),
            SessionNote::Missing => (
                &[S::Started],
                self.change_to(
                    S::Failed,
                    Some("the node stopped while it was being opened".into()),
                ),
            ),
            SessionNote::Closed { status, results } => {
                let Some(c) = self
                    .ctx
                    .shared
                    .store
                    .get_communication(r.communication)
                    .await?
                else {
                    return Ok(report);
                };
                let ended = if c.status == S::Replied {
                    S::Completed
                } else {
                    S::NoResponse
                };
                let change = CommunicationChange {
                    results: Some(results),
                    fire: self.ctx.fires(TriggerType::CommunicationEnded),
                    reason: (ended == S::NoResponse).then(|| {
                        format!("the session closed ({}) without a reply", status.as_str())
                    }),
                    ..self.change_to(ended, None)
                };
                report.queued_events = change.fire.is_some();
                self.change(r.communication, &CommunicationStatus::LIVE, change)
                    .await?;
                return Ok(report);
            }
        };
        report.queued_events = change.fire.is_some();
        self.change(r.communication, from, change).await?;
        Ok(report)
    }
}

/// A communication as `result.` reads it after communication_ended or _updated: the
/// agent's conversation results plus `communication_name`, `communication_status` and
/// `communication_channel`.
fn communication_result(c: &CommunicationRecord) -> Map<String, Value> {
    let mut result = c.results.clone();
    result.insert("communication_name".into(), json!(c.name));
    result.insert("communication_status".into(), json!(c.status.as_str()));
    result.insert("communication_channel".into(), json!(c.channel.as_str()));
    result
}
