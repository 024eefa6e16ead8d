//! The CampaignActor: one running campaign on this node. It finds the work its
//! participants have in the store — pending created/updated triggers, queued events,
//! communications coming due — and hands each to the participant's actor, keeping at
//! most [`MAX_RESIDENT`] participant actors alive and the rest of the work in the store.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use parley_engine::agent::Format;
use parley_engine::campaign::{
    parse_timezone, CampaignId, CampaignRecord, CommunicationId, CommunicationStatus, ParticipantId,
};
use parley_engine::flow::{CompiledFlow, TriggerType};
use parley_engine::model::{CloseStatus, SessionState};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use super::participant::{ParticipantActor, ParticipantMsg, Work};
use super::CommunicationRef;
use crate::node::Shared;

/// Participant actors alive at once per campaign; more work waits in a queue, and past
/// that in the store.
pub const MAX_RESIDENT: usize = 256;
/// Work queued beyond the resident actors before the store is read for more.
const LOW_WATER: usize = 256;
/// Rows read from the store at a time.
const PAGE: u32 = 500;
/// How often the store is looked at for work another node or a missed wake-up left.
const SCAN_EVERY: Duration = Duration::from_secs(5);
/// How often open communications are checked against their sessions.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// What a running campaign shares with its participant actors.
pub struct CampaignCtx {
    pub shared: Arc<Shared>,
    pub record: CampaignRecord,
    /// The active flows by name.
    pub flows: BTreeMap<String, CompiledFlow>,
    /// The campaign's zone, for participants without their own.
    pub tz: Tz,
    /// Participant actors alive.
    pub resident: std::sync::atomic::AtomicUsize,
    pub started: std::time::Instant,
}

impl CampaignCtx {
    pub fn id(&self) -> CampaignId {
        self.record.campaign.id
    }

    /// Whether any active flow starts on `trigger` (events nobody listens to are not
    /// queued).
    pub fn listens(&self, trigger: TriggerType) -> bool {
        self.flows
            .values()
            .any(|f| !f.triggers_for(trigger).is_empty())
    }

    /// `trigger` if a flow listens to it.
    pub fn fires(&self, trigger: TriggerType) -> Option<TriggerType> {
        self.listens(trigger).then_some(trigger)
    }
}

/// A change to a communication's session, seen by this node.
#[derive(Debug, Clone)]
pub enum SessionNote {
    /// The customer wrote.
    Replied,
    Closed {
        status: CloseStatus,
        results: Map<String, Value>,
    },
    /// The platform reports the opening message delivered or read.
    Status(CommunicationStatus),
    /// The session is gone (the node stopped while opening it).
    Missing,
}

pub enum CampaignMsg {
    /// Look for pending participants and queued events now.
    Scan,
    /// The timer for communications coming due fired (its generation).
    Due(u64),
    /// A participant actor finished a piece of work.
    Done {
        participant: ParticipantId,
        work: WorkKey,
        /// The earliest start among communications the work planned.
        planned: Option<DateTime<Utc>>,
        /// The work queued events (a status change fired a trigger).
        queued_events: bool,
    },
    Session(CommunicationRef, SessionNote),
    /// Check open communications against their sessions.
    Reconcile,
}

/// Which work finished, for the campaign's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKey {
    Pending,
    Event(i64),
    Due(CommunicationId),
    Session,
}

pub struct CampaignActor;

struct Child {
    actor: ActorRef<ParticipantMsg>,
    in_flight: usize,
    /// The events and due communications sent to it, released if it fails.
    events: Vec<i64>,
    dues: Vec<CommunicationId>,
}

impl Child {
    fn send(&mut self, work: Work) {
        self.in_flight += 1;
        match &work {
            Work::Event(e) => self.events.push(e.id),
            Work::Due(id) => self.dues.push(*id),
            Work::Pending | Work::Session(..) => {}
        }
        let _ = self.actor.cast(ParticipantMsg::Work(work));
    }
}

pub struct CampaignState {
    ctx: Arc<CampaignCtx>,
    myself: ActorRef<CampaignMsg>,
    children: HashMap<ParticipantId, Child>,
    queue: VecDeque<(ParticipantId, Work)>,
    /// Participants with a Pending work queued or running (a rescan skips them).
    pending_busy: HashSet<ParticipantId>,
    pending_after: Option<ParticipantId>,
    pending_more: bool,
    events_busy: HashSet<i64>,
    events_after: i64,
    due_busy: HashSet<CommunicationId>,
    timer_gen: u64,
    armed: Option<(DateTime<Utc>, JoinHandle<()>)>,
}

fn compile(
    r: &CampaignRecord,
    flows: &[parley_engine::campaign::FlowRecord],
) -> BTreeMap<String, CompiledFlow> {
    let mut out = BTreeMap::new();
    for f in flows.iter().filter(|f| f.active) {
        let format = Format::guess(&format!("application/{}", f.format));
        match crate::node::compile_flow(&r.fields, format, &f.definition) {
            Ok(c) => {
                out.insert(f.name.clone(), c);
            }
            // Start checked them; a flow edited into invalidity since cannot run.
            Err(e) => {
                tracing::error!(campaign = %r.campaign.id, flow = %f.name, errors = %e, "an active flow does not validate; it does not run")
            }
        }
    }
    out
}

impl CampaignState {
    fn dispatch(&mut self, participant: ParticipantId, work: Work) {
        match self.children.get_mut(&participant) {
            Some(child) => child.send(work),
            None => self.queue.push_back((participant, work)),
        }
    }

    /// Starts actors for queued work while there is room.
    async fn drain(&mut self) -> Result<(), ActorProcessingErr> {
        let mut deferred = VecDeque::new();
        while self.children.len() < MAX_RESIDENT {
            let Some((participant, work)) = self.queue.pop_front() else {
                break;
            };
            if let Some(child) = self.children.get_mut(&participant) {
                child.send(work);
                continue;
            }
            let (actor, _) = Actor::spawn_linked(
                None,
                ParticipantActor,
                (self.ctx.clone(), self.myself.clone(), participant),
                self.myself.get_cell(),
            )
            .await?;
            let mut child = Child {
                actor,
                in_flight: 0,
                events: Vec::new(),
                dues: Vec::new(),
            };
            child.send(work);
            self.children.insert(participant, child);
        }
        // Work for a participant whose actor is alive never waits behind the cap.
        while let Some((participant, work)) = self.queue.pop_front() {
            match self.children.get_mut(&participant) {
                Some(child) => child.send(work),
                None => deferred.push_back((participant, work)),
            }
        }
        self.queue = deferred;
        Ok(())
    }

    /// Reads more pending participants while the queue is short, and the queued events
    /// when `events` (a scan, or work that queued some).
    async fn feed(&mut self, events: bool) {
        let store = self.ctx.shared.store.clone();
        let id = self.ctx.id();
        while self.pending_more && self.queue.len() < LOW_WATER {
            match store
                .pending_participants(id, self.pending_after, PAGE)
                .await
            {
                Ok(page) => {
                    self.pending_more = page.len() == PAGE as usize;
                    self.pending_after = page.last().copied().or(self.pending_after);
                    for p in page {
                        if self.pending_busy.insert(p) {
                            self.dispatch(p, Work::Pending);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "cannot read pending participants; retrying at the next scan");
                    break;
                }
            }
        }
        if events && self.queue.len() < LOW_WATER {
            match store.participant_events(id, self.events_after, PAGE).await {
                Ok(events) => {
                    for e in events {
                        self.events_after = self.events_after.max(e.id);
                        if self.events_busy.insert(e.id) {
                            let p = e.participant_id;
                            self.dispatch(p, Work::Event(e));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "cannot read queued events; retrying at the next scan")
                }
            }
        }
    }

    /// Sets the timer for the next communication coming due (not while due ones are
    /// being started: they are still Planned until their actor has run).
    async fn arm(&mut self) {
        if !self.due_busy.is_empty() {
            return;
        }
        let next = match self
            .ctx
            .shared
            .store
            .next_due_communication(self.ctx.id())
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(campaign = %self.ctx.id(), error = %e, "cannot read the next due communication; retrying at the next scan");
                return;
            }
        };
        self.set_timer(next);
    }

    fn set_timer(&mut self, at: Option<DateTime<Utc>>) {
        if let Some((_, task)) = self.armed.take() {
            task.abort();
        }
        let Some(at) = at else {
            return;
        };
        self.timer_gen += 1;
        let (generation, clock, me) = (
            self.timer_gen,
            self.ctx.shared.config.clock.clone(),
            self.myself.clone(),
        );
        let task = tokio::spawn(async move {
            clock.sleep_until(at).await;
            let _ = me.cast(CampaignMsg::Due(generation));
        });
        self.armed = Some((at, task));
    }

    async fn start_due(&mut self) {
        let now = self.ctx.shared.config.clock.now();
        match self
            .ctx
            .shared
            .store
            .due_communications(self.ctx.id(), now, PAGE)
            .await
        {
            Ok(due) => {
                for c in due {
                    if self.due_busy.insert(c.id) {
                        self.dispatch(c.participant_id, Work::Due(c.id));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(campaign = %self.ctx.id(), error = %e, "cannot read due communications; retrying at the next scan")
            }
        }
        if self.due_busy.is_empty() {
            self.arm().await;
        }
    }

    /// Open communications whose session closed or vanished while nobody watched (this
    /// node was down, or the session lived on another node).
    async fn reconcile(&mut self) {
        let shared = self.ctx.shared.clone();
        let live = match shared.store.live_communications(self.ctx.id()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(campaign = %self.ctx.id(), error = %e, "cannot read open communications");
                return;
            }
        };
        for (communication, session) in live {
            let participant = match shared.campaigns.session(&session) {
                Some(r) => r.participant,
                None => match shared.store.get_communication(communication).await {
                    Ok(Some(c)) => {
                        let r = CommunicationRef {
                            campaign: self.ctx.id(),
                            participant: c.participant_id,
                            communication,
                        };
                        shared.campaigns.remember_session(session, r);
                        c.participant_id
                    }
                    _ => continue,
                },
            };
            let r = CommunicationRef {
                campaign: self.ctx.id(),
                participant,
                communication,
            };
            let note = match shared.store.load_session(session).await {
                Ok(None) => SessionNote::Missing,
                Ok(Some(s)) => match s.state {
                    SessionState::Closed(status) => SessionNote::Closed {
                        status,
                        results: s.conversation_result.into_iter().collect(),
                    },
                    _ => continue,
                },
                Err(_) => continue,
            };
            self.dispatch(participant, Work::Session(r, note));
        }
    }
}

impl Actor for CampaignActor {
    type Msg = CampaignMsg;
    type State = CampaignState;
    type Arguments = (Arc<Shared>, CampaignId);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (shared, id): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let record = shared
            .store
            .get_campaign(id)
            .await?
            .ok_or("the campaign no longer exists")?;
        let flows = shared.store.list_flows(id).await?;
        let flows = compile(&record, &flows);
        let tz = parse_timezone(&record.campaign.timezone).unwrap_or(chrono_tz::UTC);
        let ctx = Arc::new(CampaignCtx {
            shared,
            record,
            flows,
            tz,
            resident: Default::default(),
            started: std::time::Instant::now(),
        });
        ctx.shared.campaigns.contexts.insert(id, ctx.clone());
        myself.send_interval(SCAN_EVERY, || CampaignMsg::Scan);
        myself.send_interval(RECONCILE_EVERY, || CampaignMsg::Reconcile);
        let _ = myself.cast(CampaignMsg::Reconcile);
        let _ = myself.cast(CampaignMsg::Scan);
        tracing::info!(campaign = %id, flows = ctx.flows.len(), "campaign running here");
        Ok(CampaignState {
            ctx,
            myself,
            children: HashMap::new(),
            queue: VecDeque::new(),
            pending_busy: HashSet::new(),
            pending_after: None,
            pending_more: true,
            events_busy: HashSet::new(),
            events_after: 0,
            due_busy: HashSet::new(),
            timer_gen: 0,
            armed: None,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, task)) = state.armed.take() {
            task.abort();
        }
        let dir = &state.ctx.shared.campaigns;
        dir.contexts.remove(&state.ctx.id());
        for (_, child) in state.children.drain() {
            child.actor.stop(None);
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CampaignMsg::Scan => {
                // From the start: triggers left behind an earlier page are found too, and
                // events whose transaction committed after a later one's (ids are taken
                // in one order and committed in another).
                state.pending_more = true;
                state.pending_after = None;
                state.events_after = 0;
                state.feed(true).await;
                if state.armed.is_none() {
                    state.arm().await;
                }
            }
            CampaignMsg::Due(generation) => {
                if generation == state.timer_gen {
                    state.armed = None;
                    state.start_due().await;
                }
            }
            CampaignMsg::Done {
                participant,
                work,
                planned,
                queued_events,
            } => {
                if let Some(child) = state.children.get_mut(&participant) {
                    child.in_flight = child.in_flight.saturating_sub(1);
                    match work {
                        WorkKey::Event(id) => child.events.retain(|e| *e != id),
                        WorkKey::Due(id) => child.dues.retain(|d| *d != id),
                        _ => {}
                    }
                    if child.in_flight == 0 {
                        child.actor.stop(None);
                        state.children.remove(&participant);
                    }
                }
                match work {
                    WorkKey::Pending => {
                        state.pending_busy.remove(&participant);
                    }
                    WorkKey::Event(id) => {
                        state.events_busy.remove(&id);
                    }
                    WorkKey::Due(id) => {
                        state.due_busy.remove(&id);
                        if state.due_busy.is_empty() {
                            state.arm().await;
                        }
                    }
                    WorkKey::Session => {}
                }
                if let Some(at) = planned {
                    if state.armed.as_ref().is_none_or(|(t, _)| at < *t)
                        && state.due_busy.is_empty()
                    {
                        state.set_timer(Some(at));
                    }
                }
                if queued_events || (state.pending_more && state.queue.len() < LOW_WATER) {
                    state.feed(queued_events).await;
                }
            }
            CampaignMsg::Session(r, note) => state.dispatch(r.participant, Work::Session(r, note)),
            CampaignMsg::Reconcile => state.reconcile().await,
        }
        state.drain().await
    }

    // Overrides ractor's default, which would stop the campaign when a participant's
    // actor ends. A failed participant actor's work is still in the store: the next scan
    // (events, pending) or timer (due) finds it again.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupervisionEvent::ActorFailed(cell, err) = event else {
            return Ok(());
        };
        let Some(participant) = state
            .children
            .iter()
            .find(|(_, c)| c.actor.get_id() == cell.get_id())
            .map(|(p, _)| *p)
        else {
            return Ok(());
        };
        tracing::error!(campaign = %state.ctx.id(), %participant, error = %err, "a participant's flow run failed; it is retried from the store");
        metrics::counter!(parley_engine::telemetry::RESTARTS_TOTAL, "kind" => "participant")
            .increment(1);
        if let Some(child) = state.children.remove(&participant) {
            for id in &child.events {
                state.events_busy.remove(id);
            }
            // Read again from the failed event on.
            if let Some(first) = child.events.iter().min() {
                state.events_after = state.events_after.min(first - 1);
            }
            for id in &child.dues {
                state.due_busy.remove(id);
            }
        }
        state.pending_busy.remove(&participant);
        state.arm().await;
        Ok(())
    }
}
