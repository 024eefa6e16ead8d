//! 100,000 participants through a three-node flow (participant_created → field_check →
//! update_field) on the embedded SQLite store, in participants per second and resident
//! memory, against a bare baseline measured in the same run: the same store work (read
//! the participant and its customer, decide the condition, commit the run) done by plain
//! tasks reading the pending participants themselves, with no campaign or participant
//! actors.
//!
//! The node keeps at most `MAX_RESIDENT` participant actors alive per campaign; waiting
//! work stays in the store. The peak of resident memory while the campaign runs shows
//! what that costs against 100,000 resident actors (about 7.8 KiB each).
//!
//! `cargo bench --bench campaign_flow`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use parley_actors::campaigns::MAX_RESIDENT;
use parley_actors::node::NewCampaign;
use parley_engine::agent::Format;
use parley_engine::campaign::{
    CampaignId, CheckedParticipant, DataField, FieldLevel, FieldType, ParticipantInput,
    ParticipantStep,
};
use parley_engine::flow::{ParticipantData, TriggerType, Walk};
use parley_engine::store::Store;
use parley_engine::telemetry::resident_memory_bytes;
use serde_json::{json, Map};
use uuid::Uuid;

const PARTICIPANTS: usize = 100_000;
const BATCH: usize = 2_000;

const FLOW: &str = r#"
nodes:
  - {id: created, type: participant_created, next: high}
  - {id: high, type: field_check, property: participant.score, operator: ge, value: 50, match: gold}
  - id: gold
    type: update_field
    assignments: [{property: participant.tier, value: gold}]
"#;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

fn fields() -> Vec<DataField> {
    let field = |name: &str, field_type| DataField {
        title: name.into(),
        name: name.into(),
        description: String::new(),
        field_type,
        level: FieldLevel::Participant,
        import: true,
        required: false,
    };
    vec![
        field("score", FieldType::Int),
        DataField {
            import: false,
            ..field("tier", FieldType::String)
        },
    ]
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn run() {
    let b = support::bench_node().await;
    let node = &b.node;
    let store = node.shared().store.clone();
    let fields = fields();

    // Two campaigns of the same participants: one run by the node, one by the baseline.
    let mut campaigns = Vec::new();
    for name in ["actors", "bare"] {
        let c = node
            .create_campaign(
                b.tenant,
                NewCampaign {
                    name: name.into(),
                    description: String::new(),
                    timezone: None,
                    fields: fields.clone(),
                },
            )
            .await
            .unwrap();
        let id = c.campaign.id;
        node.put_flow(b.tenant, id, "tiers", FLOW, Format::Yaml)
            .await
            .unwrap();
        node.set_flow_active(b.tenant, id, "tiers", true)
            .await
            .unwrap();
        let loaded = Instant::now();
        for start in (0..PARTICIPANTS).step_by(BATCH) {
            let batch: Vec<CheckedParticipant> = (start..start + BATCH)
                .map(|i| {
                    let input = ParticipantInput {
                        attributes: json!({"external_id": format!("{name}-{i}"), "score": i % 100})
                            .as_object()
                            .unwrap()
                            .clone(),
                        timezone: None,
                        object_id: None,
                    };
                    input.check(&fields, chrono_tz::UTC).unwrap()
                })
                .collect();
            store
                .upsert_participants(b.tenant, id, None, &batch, Utc::now())
                .await
                .unwrap();
        }
        println!(
            "{name}: {PARTICIPANTS} participants stored in {:.1}s",
            loaded.elapsed().as_secs_f64()
        );
        campaigns.push(id);
    }
    let (actors, bare) = (campaigns[0], campaigns[1]);

    // The baseline first, so the node's run cannot warm anything for it.
    let started = Instant::now();
    bare_run(&store, b.tenant, bare).await;
    let bare_secs = started.elapsed().as_secs_f64();
    check_done(&store, bare).await;

    let rss_before = resident_memory_bytes().unwrap_or(0);
    let started = Instant::now();
    node.start_campaign(b.tenant, actors).await.unwrap();
    let mut peak_rss = rss_before;
    let mut peak_actors = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_rss = peak_rss.max(resident_memory_bytes().unwrap_or(0));
        peak_actors = peak_actors.max(node.shared().campaigns.resident_participants());
        if store
            .campaign_stats(actors)
            .await
            .unwrap()
            .participants_pending
            == 0
        {
            break;
        }
    }
    let actor_secs = started.elapsed().as_secs_f64();
    check_done(&store, actors).await;

    let bare_rate = PARTICIPANTS as f64 / bare_secs;
    let actor_rate = PARTICIPANTS as f64 / actor_secs;
    println!("bare baseline: {bare_rate:.0} participants/s ({bare_secs:.1}s)");
    println!("participant actors: {actor_rate:.0} participants/s ({actor_secs:.1}s)");
    println!("ratio actors/bare: {:.2}", actor_rate / bare_rate);
    println!(
        "resident memory: {:.0} MiB before the start, peak {:.0} MiB while running (+{:.0} MiB); \
         at most {peak_actors} participant actors alive (cap {MAX_RESIDENT}); \
         {PARTICIPANTS} resident actors would take about {:.0} MiB",
        mib(rss_before),
        mib(peak_rss),
        mib(peak_rss.saturating_sub(rss_before)),
        PARTICIPANTS as f64 * 7.8 / 1024.0
    );
}

/// The same store work as a participant actor's run, without actors: tasks take pages of
/// pending participants and run each through the flow.
async fn bare_run(store: &Arc<dyn Store>, tenant: Uuid, campaign: CampaignId) {
    let flow = parley_engine::flow::parse_and_validate(FLOW, Format::Yaml, &|p: &str| match p {
        "participant.score" => Some(parley_engine::flow::ValueKind::Number),
        "participant.tier" => Some(parley_engine::flow::ValueKind::String),
        _ => None,
    })
    .unwrap();
    let flow = Arc::new(flow);
    let ids = {
        let mut all = Vec::with_capacity(PARTICIPANTS);
        let mut after = None;
        loop {
            let page = store
                .pending_participants(campaign, after, 500)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().copied();
            all.extend(page);
        }
        Arc::new(all)
    };
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..MAX_RESIDENT {
        let (store, flow, ids, next) = (store.clone(), flow.clone(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&id) = ids.get(i) else {
                    break;
                };
                let p = store.get_participant(id).await.unwrap().unwrap();
                let customer = store
                    .get_customer(p.customer_id)
                    .await
                    .unwrap()
                    .map(|c| c.attributes)
                    .unwrap_or_default();
                let mut data = ParticipantData::new(customer, p.attributes.clone(), Map::new());
                let today = Utc::now().date_naive();
                let start = flow.triggers_for(TriggerType::ParticipantCreated)[0];
                let mut walk = Walk::new(&flow, start);
                while let Some(node) = {
                    let ctx = data.context(today);
                    walk.next_action(&ctx)
                } {
                    if let parley_engine::flow::NodeKind::UpdateField(a) = &node.kind {
                        data.assign(a, today);
                    }
                }
                let step = ParticipantStep {
                    tenant_id: tenant,
                    campaign_id: campaign,
                    participant_id: id,
                    customer_id: p.customer_id,
                    clear_pending: Some(p.updated_at),
                    event_done: None,
                    participant_patch: std::mem::take(&mut data.participant_patch),
                    customer_patch: Map::new(),
                    cancel_open: false,
                    new_communications: Vec::new(),
                    visited: walk
                        .visited()
                        .map(|n| ("tiers".to_string(), n.id.clone()))
                        .collect(),
                    at: Utc::now(),
                };
                store.commit_participant_step(&step).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Every participant ran: none pending, and half of them (score ≥ 50) reached `gold`.
async fn check_done(store: &Arc<dyn Store>, campaign: CampaignId) {
    let s = store.campaign_stats(campaign).await.unwrap();
    assert_eq!(s.participants_pending, 0);
    let count = |node: &str| {
        s.nodes
            .iter()
            .find(|n| n.node == node)
            .map_or(0, |n| n.count)
    };
    assert_eq!(count("created"), PARTICIPANTS as u64, "{s:?}");
    assert_eq!(count("gold"), PARTICIPANTS as u64 / 2, "{s:?}");
}
