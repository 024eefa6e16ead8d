//! Campaigns (admin API): campaigns with their data fields and flows, participants added
//! by API or streamed CSV, customer profiles. Flows are validated against the campaign's
//! fields and locked while the campaign runs.

use std::collections::BTreeMap;

use chrono::Utc;
use parley_engine::agent::{Format, ValidationError, ValidationErrors};
use parley_engine::campaign::{
    parse_timezone, validate_fields, Campaign, CampaignId, CampaignRecord, CampaignStats,
    CampaignStatus, CheckedParticipant, CommunicationRecord, CsvError, CsvImport, CustomerId,
    CustomerRecord, DataField, FieldLevel, FieldType, FlowRecord, ParticipantId, ParticipantInput,
    ParticipantQuery, ParticipantRecord, ParticipantStatus, UploadId, UploadRecord, UploadRowError,
    UploadStatus, Upserted,
};
use parley_engine::flow::{self, CompiledFlow, TriggerType, ValueKind};
use parley_engine::model::TenantId;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncRead;

use super::check_name;
use super::Node;
use crate::error::{NodeError, NodeResult};

/// Participants upserted per store transaction during an import.
const IMPORT_BATCH: usize = 2000;
/// Bad rows an upload keeps (the count goes on).
const KEPT_ROW_ERRORS: usize = 1000;
/// Most participants one API call adds.
pub const MAX_PARTICIPANTS_PER_CALL: usize = 10_000;

/// `POST /api/v1/campaigns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub timezone: Option<String>,
    #[serde(default)]
    pub fields: Vec<DataField>,
}

/// `PATCH /api/v1/campaigns/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub timezone: Option<String>,
}

/// What adding participants did, item by item.
#[derive(Debug, Clone, Default)]
pub struct AddedParticipants {
    pub created: u64,
    pub updated: u64,
    /// Per input, in order: what happened to it, or why it was refused.
    pub results: Vec<Result<Upserted, Vec<String>>>,
}

fn check_flow_name(name: &str) -> NodeResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NodeError::Invalid(
            "flow name: 1 to 64 characters a-z, 0-9, _ and -".into(),
        ))
    }
}

fn check_timezone(tz: &str) -> NodeResult<String> {
    parse_timezone(tz)
        .map(|tz| tz.name().to_string())
        .map_err(|e| NodeError::Invalid(format!("timezone: {e}")))
}

fn running(r: &CampaignRecord, what: &str) -> NodeResult<()> {
    if r.campaign.status == CampaignStatus::Running {
        return Err(NodeError::Conflict(format!(
            "the campaign is running: stop it before changing its {what}"
        )));
    }
    Ok(())
}

/// The kind a flow sees for each of the campaign's properties, system fields included.
fn schema(fields: &[DataField]) -> BTreeMap<String, ValueKind> {
    let mut all: Vec<DataField> = parley_engine::campaign::system_fields();
    for f in fields {
        all.retain(|s| s.name != f.name);
        all.push(f.clone());
    }
    all.into_iter()
        .map(|f| {
            let scope = match f.level {
                FieldLevel::CustomerProfile => "customer",
                FieldLevel::Participant => "participant",
            };
            let kind = match f.field_type {
                FieldType::String | FieldType::Email | FieldType::Phone => ValueKind::String,
                FieldType::Int | FieldType::Float => ValueKind::Number,
                FieldType::Bool => ValueKind::Bool,
                FieldType::Date => ValueKind::Date,
                FieldType::Datetime => ValueKind::DateTime,
            };
            (format!("{scope}.{}", f.name), kind)
        })
        .collect()
}

pub(crate) fn compile_flow(
    fields: &[DataField],
    format: Format,
    text: &str,
) -> Result<CompiledFlow, ValidationErrors> {
    let schema = schema(fields);
    flow::parse_and_validate(text, format, &|p: &str| schema.get(p).copied())
}

/// Checks the URLs the flow's http_actions call against the egress policy.
fn check_flow_egress(
    flow: &CompiledFlow,
    policy: &parley_engine::egress::EgressPolicy,
) -> NodeResult<()> {
    let errors: Vec<ValidationError> = flow
        .definition
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let e = policy.check_url(n.url.as_deref()?).err()?;
            Some(ValidationError {
                path: format!("nodes[{i}].url"),
                message: e.to_string(),
            })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NodeError::InvalidDefinition(ValidationErrors(errors)))
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    }
}

fn prefixed(prefix: &str, errs: ValidationErrors) -> Vec<ValidationError> {
    errs.0
        .into_iter()
        .map(|e| ValidationError {
            path: format!("{prefix}.{}", e.path),
            message: e.message,
        })
        .collect()
}

impl Node {
    pub async fn create_campaign(
        &self,
        tenant: TenantId,
        req: NewCampaign,
    ) -> NodeResult<CampaignRecord> {
        let now = Utc::now();
        let mut campaign = Campaign::new(tenant, check_name(&req.name)?, now);
        campaign.description = req.description;
        if let Some(tz) = &req.timezone {
            campaign.timezone = check_timezone(tz)?;
        }
        validate_fields(&req.fields).map_err(NodeError::InvalidFields)?;
        let record = CampaignRecord {
            campaign,
            fields: req.fields,
        };
        self.shared.store.put_campaign(&record).await?;
        Ok(record)
    }

    pub async fn campaign(&self, tenant: TenantId, id: CampaignId) -> NodeResult<CampaignRecord> {
        match self.shared.store.get_campaign(id).await? {
            // Another tenant's campaign is "not found", so ids do not leak.
            Some(c) if c.campaign.tenant_id == tenant => Ok(c),
            _ => Err(NodeError::NotFound("campaign")),
        }
    }

    pub async fn list_campaigns(&self, tenant: TenantId) -> NodeResult<Vec<CampaignRecord>> {
        Ok(self.shared.store.list_campaigns(tenant).await?)
    }

    pub async fn update_campaign(
        &self,
        tenant: TenantId,
        id: CampaignId,
        patch: CampaignPatch,
    ) -> NodeResult<CampaignRecord> {
        let mut r = self.campaign(tenant, id).await?;
        if let Some(name) = &patch.name {
            r.campaign.name = check_name(name)?;
        }
        if let Some(d) = patch.description {
            r.campaign.description = d;
        }
        if let Some(tz) = &patch.timezone {
            r.campaign.timezone = check_timezone(tz)?;
        }
        r.campaign.updated_at = Utc::now();
        self.shared.store.put_campaign(&r).await?;
        Ok(r)
    }

    pub async fn delete_campaign(&self, tenant: TenantId, id: CampaignId) -> NodeResult<()> {
        let r = self.campaign(tenant, id).await?;
        running(&r, "participants")?;
        self.shared.store.delete_campaign(id).await?;
        Ok(())
    }

    /// Replaces the campaign's data fields; every stored flow must still validate against
    /// them (errors name the flow: `flows.<name>.nodes[2].property: …`).
    pub async fn set_fields(
        &self,
        tenant: TenantId,
        id: CampaignId,
        fields: Vec<DataField>,
    ) -> NodeResult<CampaignRecord> {
        let mut r = self.campaign(tenant, id).await?;
        running(&r, "fields")?;
        validate_fields(&fields).map_err(NodeError::InvalidFields)?;
        let mut errors = Vec::new();
        for f in self.shared.store.list_flows(id).await? {
            let format = Format::guess(&format!("application/{}", f.format));
            if let Err(e) = compile_flow(&fields, format, &f.definition) {
                errors.extend(prefixed(&format!("flows.{}", f.name), e));
            }
        }
        if !errors.is_empty() {
            return Err(NodeError::InvalidFields(ValidationErrors(errors)));
        }
        r.fields = fields;
        r.campaign.updated_at = Utc::now();
        self.shared.store.put_campaign(&r).await?;
        Ok(r)
    }

    /// The agents and connections a flow's communications name, each resolved inside the
    /// campaign's tenant: another tenant's id is reported as if it did not exist.
    async fn foreign_refs(
        &self,
        tenant: TenantId,
        prefix: &str,
        flow: &CompiledFlow,
    ) -> NodeResult<Vec<ValidationError>> {
        let store = &self.shared.store;
        let mut errors = Vec::new();
        for (node, c) in flow.communications() {
            let at = format!("{prefix}nodes[{}]", node.index.position());
            let agent = store.get_agent(c.agent_id).await?;
            if agent.is_none_or(|a| a.tenant_id != tenant) {
                errors.push(ValidationError {
                    path: format!("{at}.agent_id"),
                    message: format!("no agent {} in this tenant", c.agent_id),
                });
            }
            if let Some(id) = c.connection_id {
                let conn = store.get_connection(id).await?;
                if conn.is_none_or(|r| r.tenant_id != tenant) {
                    errors.push(ValidationError {
                        path: format!("{at}.connection_id"),
                        message: format!("no connection {id} in this tenant"),
                    });
                }
            }
        }
        Ok(errors)
    }

    /// Stores a flow (new or replacing one of the same name) once it validates against
    /// the campaign's fields and names only the tenant's own agents and connections; a
    /// replaced flow keeps its active flag.
    pub async fn put_flow(
        &self,
        tenant: TenantId,
        id: CampaignId,
        name: &str,
        text: &str,
        format: Format,
    ) -> NodeResult<(FlowRecord, CompiledFlow)> {
        check_flow_name(name)?;
        let r = self.campaign(tenant, id).await?;
        running(&r, "flows")?;
        let compiled =
            compile_flow(&r.fields, format, text).map_err(NodeError::InvalidDefinition)?;
        let foreign = self.foreign_refs(tenant, "", &compiled).await?;
        if !foreign.is_empty() {
            return Err(NodeError::InvalidDefinition(ValidationErrors(foreign)));
        }
        check_flow_egress(&compiled, &self.shared.config.egress)?;
        let active = self
            .shared
            .store
            .get_flow(id, name)
            .await?
            .is_some_and(|f| f.active);
        let record = FlowRecord {
            campaign_id: id,
            name: name.to_string(),
            format: format_name(format).to_string(),
            definition: text.to_string(),
            active,
            updated_at: Utc::now(),
        };
        self.shared.store.put_flow(&record).await?;
        Ok((record, compiled))
    }

    pub async fn flow(
        &self,
        tenant: TenantId,
        id: CampaignId,
        name: &str,
    ) -> NodeResult<FlowRecord> {
        self.campaign(tenant, id).await?;
        self.shared
            .store
            .get_flow(id, name)
            .await?
            .ok_or(NodeError::NotFound("flow"))
    }

    pub async fn list_flows(
        &self,
        tenant: TenantId,
        id: CampaignId,
    ) -> NodeResult<Vec<FlowRecord>> {
        self.campaign(tenant, id).await?;
        Ok(self.shared.store.list_flows(id).await?)
    }

    pub async fn delete_flow(
        &self,
        tenant: TenantId,
        id: CampaignId,
        name: &str,
    ) -> NodeResult<()> {
        let r = self.campaign(tenant, id).await?;
        running(&r, "flows")?;
        if !self.shared.store.delete_flow(id, name).await? {
            return Err(NodeError::NotFound("flow"));
        }
        Ok(())
    }

    /// Activates or deactivates a flow (not while the campaign runs).
    pub async fn set_flow_active(
        &self,
        tenant: TenantId,
        id: CampaignId,
        name: &str,
        active: bool,
    ) -> NodeResult<FlowRecord> {
        let r = self.campaign(tenant, id).await?;
        running(&r, "flows")?;
        let mut f = self.flow(tenant, id, name).await?;
        f.active = active;
        f.updated_at = Utc::now();
        self.shared.store.put_flow(&f).await?;
        Ok(f)
    }

    /// Starts the campaign: at least one active flow, every active flow valid, and every
    /// flow an active one hands participants to exists, is active and starts with a
    /// from_another_flow trigger.
    pub async fn start_campaign(
        &self,
        tenant: TenantId,
        id: CampaignId,
    ) -> NodeResult<CampaignRecord> {
        let mut r = self.campaign(tenant, id).await?;
        let flows = self.shared.store.list_flows(id).await?;
        let mut compiled = BTreeMap::new();
        let mut errors = Vec::new();
        for f in flows.iter().filter(|f| f.active) {
            let format = Format::guess(&format!("application/{}", f.format));
            match compile_flow(&r.fields, format, &f.definition) {
                Ok(c) => {
                    // Checked again: an agent or connection may be gone since the write.
                    let prefix = format!("flows.{}.", f.name);
                    errors.extend(self.foreign_refs(tenant, &prefix, &c).await?);
                    compiled.insert(f.name.clone(), c);
                }
                Err(e) => errors.extend(prefixed(&format!("flows.{}", f.name), e)),
            }
        }
        if compiled.is_empty() && errors.is_empty() {
            return Err(NodeError::Conflict(
                "the campaign has no active flow: activate one before starting it".into(),
            ));
        }
        for (name, c) in &compiled {
            for (node, target) in c.flow_references() {
                let ok = compiled
                    .get(target)
                    .is_some_and(|t| !t.triggers_for(TriggerType::FromAnotherFlow).is_empty());
                if !ok {
                    errors.push(ValidationError {
                        path: format!("flows.{name}"),
                        message: format!(
                            "node {:?} hands participants to {target:?}, which is not an active flow with a from_another_flow trigger",
                            node.id
                        ),
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(NodeError::InvalidFields(ValidationErrors(errors)));
        }
        r.campaign.status = CampaignStatus::Running;
        r.campaign.updated_at = Utc::now();
        self.shared.store.put_campaign(&r).await?;
        self.shared.campaigns.start(id);
        Ok(r)
    }

    pub async fn stop_campaign(
        &self,
        tenant: TenantId,
        id: CampaignId,
    ) -> NodeResult<CampaignRecord> {
        let mut r = self.campaign(tenant, id).await?;
        if r.campaign.status == CampaignStatus::Running {
            r.campaign.status = CampaignStatus::Stopped;
            r.campaign.updated_at = Utc::now();
            self.shared.store.put_campaign(&r).await?;
        }
        // Planned communications wait in the store for the next start.
        self.shared.campaigns.stop(id);
        Ok(r)
    }

    /// Adds or updates participants (the seed's body): good items are upserted, bad ones
    /// answered with their problems.
    pub async fn add_participants(
        &self,
        tenant: TenantId,
        id: CampaignId,
        inputs: Vec<ParticipantInput>,
    ) -> NodeResult<AddedParticipants> {
        if inputs.len() > MAX_PARTICIPANTS_PER_CALL {
            return Err(NodeError::Invalid(format!(
                "at most {MAX_PARTICIPANTS_PER_CALL} participants per call; upload a CSV for more"
            )));
        }
        let r = self.campaign(tenant, id).await?;
        let tz = r.campaign.tz();
        let mut results: Vec<Result<Upserted, Vec<String>>> = Vec::with_capacity(inputs.len());
        let mut good: Vec<CheckedParticipant> = Vec::new();
        let mut slots = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            match input.check(&r.fields, tz) {
                Ok(p) => {
                    slots.push(i);
                    good.push(p);
                    results.push(Err(Vec::new()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut added = AddedParticipants::default();
        if !good.is_empty() {
            let done = self
                .shared
                .store
                .upsert_participants(tenant, id, None, &good, Utc::now())
                .await?;
            for (slot, u) in slots.into_iter().zip(done) {
                if u.created {
                    added.created += 1;
                } else {
                    added.updated += 1;
                }
                results[slot] = Ok(u);
            }
            self.shared.campaigns.wake(id);
        }
        added.results = results;
        Ok(added)
    }

    /// Imports a CSV stream: rows are checked and upserted in batches as they arrive (the
    /// file is never held whole); bad rows are counted and the first ones kept with their
    /// row numbers; progress is stored as it goes, so `GET …/uploads/{id}` shows it.
    pub async fn import_csv<R: AsyncRead + Unpin + Send>(
        &self,
        tenant: TenantId,
        id: CampaignId,
        reader: R,
    ) -> NodeResult<UploadRecord> {
        let r = self.campaign(tenant, id).await?;
        let store = &self.shared.store;
        let mut upload = UploadRecord {
            id: uuid::Uuid::now_v7(),
            campaign_id: id,
            status: UploadStatus::Running,
            error: None,
            total: 0,
            created: 0,
            updated: 0,
            failed: 0,
            errors: Vec::new(),
            created_at: Utc::now(),
            finished_at: None,
        };
        store.put_upload(&upload).await?;
        let outcome = self.import_rows(tenant, &r, reader, &mut upload).await;
        upload.finished_at = Some(Utc::now());
        match outcome {
            Ok(()) => upload.status = UploadStatus::Done,
            Err(e) => {
                upload.status = UploadStatus::Failed;
                upload.error = Some(e);
            }
        }
        store.put_upload(&upload).await?;
        Ok(upload)
    }

    async fn import_rows<R: AsyncRead + Unpin + Send>(
        &self,
        tenant: TenantId,
        r: &CampaignRecord,
        reader: R,
        upload: &mut UploadRecord,
    ) -> Result<(), String> {
        let store = &self.shared.store;
        let mut rows = CsvImport::open(reader, &r.fields, r.campaign.tz())
            .await
            .map_err(|e: CsvError| e.to_string())?;
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        loop {
            let next = rows.next_row().await.map_err(|e| e.to_string())?;
            let end = next.is_none();
            match next {
                Some(Ok(p)) => batch.push(p),
                Some(Err(e)) => {
                    upload.total += 1;
                    upload.failed += 1;
                    if upload.errors.len() < KEPT_ROW_ERRORS {
                        upload.errors.push(UploadRowError {
                            row: e.row as u64,
                            reason: e.reason,
                        });
                    }
                }
                None => {}
            }
            if batch.len() >= IMPORT_BATCH || (end && !batch.is_empty()) {
                let done = store
                    .upsert_participants(tenant, r.campaign.id, Some(upload.id), &batch, Utc::now())
                    .await
                    .map_err(|e| format!("storing participants: {e}"))?;
                upload.total += batch.len() as u64;
                upload.created += done.iter().filter(|u| u.created).count() as u64;
                upload.updated += done.iter().filter(|u| !u.created).count() as u64;
                batch.clear();
                self.shared.campaigns.wake(r.campaign.id);
                // Progress for whoever watches the upload.
                store
                    .put_upload(upload)
                    .await
                    .map_err(|e| format!("recording progress: {e}"))?;
            }
            if end {
                return Ok(());
            }
        }
    }

    pub async fn upload(
        &self,
        tenant: TenantId,
        id: CampaignId,
        upload: UploadId,
    ) -> NodeResult<UploadRecord> {
        self.campaign(tenant, id).await?;
        match self.shared.store.get_upload(upload).await? {
            Some(u) if u.campaign_id == id => Ok(u),
            _ => Err(NodeError::NotFound("upload")),
        }
    }

    pub async fn uploads(&self, tenant: TenantId, id: CampaignId) -> NodeResult<Vec<UploadRecord>> {
        self.campaign(tenant, id).await?;
        Ok(self.shared.store.list_uploads(id).await?)
    }

    /// A page of participants, each with its customer profile.
    pub async fn participants(
        &self,
        tenant: TenantId,
        id: CampaignId,
        query: &ParticipantQuery,
    ) -> NodeResult<(Vec<ParticipantView>, u64)> {
        self.campaign(tenant, id).await?;
        let store = &self.shared.store;
        let (page, total) = store.list_participants(id, query).await?;
        let mut out = Vec::with_capacity(page.len());
        for participant in page {
            let customer = store.get_customer(participant.customer_id).await?;
            let communications = store.list_communications(participant.id).await?;
            out.push(ParticipantView {
                participant,
                customer,
                communications,
            });
        }
        Ok((out, total))
    }

    pub async fn delete_participant(
        &self,
        tenant: TenantId,
        id: CampaignId,
        participant: ParticipantId,
    ) -> NodeResult<()> {
        self.campaign(tenant, id).await?;
        match self.shared.store.get_participant(participant).await? {
            Some(p) if p.campaign_id == id => {
                self.shared.store.delete_participant(participant).await?;
                Ok(())
            }
            _ => Err(NodeError::NotFound("participant")),
        }
    }

    /// A participant's communications, oldest first.
    pub async fn communications(
        &self,
        tenant: TenantId,
        id: CampaignId,
        participant: ParticipantId,
    ) -> NodeResult<Vec<CommunicationRecord>> {
        self.campaign(tenant, id).await?;
        match self.shared.store.get_participant(participant).await? {
            Some(p) if p.campaign_id == id => {
                Ok(self.shared.store.list_communications(participant).await?)
            }
            _ => Err(NodeError::NotFound("participant")),
        }
    }

    pub async fn campaign_stats(
        &self,
        tenant: TenantId,
        id: CampaignId,
    ) -> NodeResult<CampaignStats> {
        self.campaign(tenant, id).await?;
        Ok(self.shared.store.campaign_stats(id).await?)
    }

    pub async fn customers(
        &self,
        tenant: TenantId,
        offset: u64,
        limit: u64,
    ) -> NodeResult<(Vec<CustomerRecord>, u64)> {
        Ok(self
            .shared
            .store
            .list_customers(tenant, offset, limit)
            .await?)
    }

    pub async fn customer(&self, tenant: TenantId, id: CustomerId) -> NodeResult<CustomerRecord> {
        match self.shared.store.get_customer(id).await? {
            Some(c) if c.tenant_id == tenant => Ok(c),
            _ => Err(NodeError::NotFound("customer")),
        }
    }
}

/// A participant as the participants list shows it.
#[derive(Debug, Clone)]
pub struct ParticipantView {
    pub participant: ParticipantRecord,
    pub customer: Option<CustomerRecord>,
    pub communications: Vec<CommunicationRecord>,
}

impl ParticipantView {
    pub fn status(&self) -> ParticipantStatus {
        ParticipantStatus::of(
            self.participant.pending.is_some(),
            self.communications.iter().any(|c| c.status.is_open()),
        )
    }
}

/// A campaign as the API shows it.
pub fn campaign_json(r: &CampaignRecord) -> Value {
    json!({
        "id": r.campaign.id,
        "name": r.campaign.name,
        "description": r.campaign.description,
        "status": r.campaign.status.as_str(),
        "timezone": r.campaign.timezone,
        "fields": r.fields,
        "system_fields": parley_engine::campaign::system_fields(),
        "created_at": r.campaign.created_at.to_rfc3339(),
        "updated_at": r.campaign.updated_at.to_rfc3339(),
    })
}
