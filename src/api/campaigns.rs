//! Admin API: campaigns, their fields and flows, participants (JSON or streamed CSV
//! uploads) and customer profiles (tenant admin key).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header::CONTENT_TYPE, HeaderMap, StatusCode};
use axum::Json;
use futures::TryStreamExt;
use parley_actors::node::{campaign_json, CampaignPatch, NewCampaign};
use parley_engine::agent::Format;
use parley_engine::campaign::{
    CommunicationRecord, CustomerRecord, DataField, FlowRecord, ParticipantInput, ParticipantQuery,
    ParticipantRecord, ParticipantStatus, UploadRecord,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::io::StreamReader;

use super::error::{ApiError, ApiResult};
use super::extract::{page_limit, parse_id, AdminAuth, ApiJson};
use super::AppState;

/// Largest page of participants or customers.
const MAX_PAGE: u64 = 1000;

pub async fn create(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    ApiJson(req): ApiJson<NewCampaign>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c = st.node.create_campaign(tenant.id, req).await?;
    Ok((StatusCode::CREATED, Json(campaign_json(&c))))
}

pub async fn list(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
) -> ApiResult<Json<Value>> {
    let all = st.node.list_campaigns(tenant.id).await?;
    Ok(Json(
        json!({"campaigns": all.iter().map(campaign_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .campaign(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    Ok(Json(campaign_json(&c)))
}

pub async fn update(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<CampaignPatch>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .update_campaign(tenant.id, parse_id(&id, "campaign")?, patch)
        .await?;
    Ok(Json(campaign_json(&c)))
}

pub async fn delete(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.node
        .delete_campaign(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_fields(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    ApiJson(fields): ApiJson<Vec<DataField>>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .set_fields(tenant.id, parse_id(&id, "campaign")?, fields)
        .await?;
    Ok(Json(campaign_json(&c)))
}

fn flow_json(f: &FlowRecord) -> Value {
    json!({
        "name": f.name,
        "format": f.format,
        "active": f.active,
        "definition": f.definition,
        "updated_at": f.updated_at.to_rfc3339(),
    })
}

/// `PUT …/flows/{flow}` with the flow as YAML or JSON (by content type).
pub async fn put_flow(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text =
        std::str::from_utf8(&body).map_err(|_| ApiError::invalid("the flow must be UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            "the request body must hold the flow (YAML or JSON)",
        ));
    }
    let (record, compiled) = st
        .node
        .put_flow(
            tenant.id,
            parse_id(&id, "campaign")?,
            &name,
            text,
            Format::guess(ct),
        )
        .await?;
    let mut v = flow_json(&record);
    v["nodes"] = json!(compiled.nodes().len());
    Ok(Json(v))
}

pub async fn get_flow(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let f = st
        .node
        .flow(tenant.id, parse_id(&id, "campaign")?, &name)
        .await?;
    Ok(Json(flow_json(&f)))
}

pub async fn list_flows(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let all = st
        .node
        .list_flows(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    Ok(Json(
        json!({"flows": all.iter().map(flow_json).collect::<Vec<_>>()}),
    ))
}

pub async fn delete_flow(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    st.node
        .delete_flow(tenant.id, parse_id(&id, "campaign")?, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_active(
    st: &AppState,
    tenant: uuid::Uuid,
    id: &str,
    name: &str,
    on: bool,
) -> ApiResult<Json<Value>> {
    let f = st
        .node
        .set_flow_active(tenant, parse_id(id, "campaign")?, name, on)
        .await?;
    Ok(Json(flow_json(&f)))
}

pub async fn activate_flow(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    set_active(&st, tenant.id, &id, &name, true).await
}

pub async fn deactivate_flow(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    set_active(&st, tenant.id, &id, &name, false).await
}

pub async fn start(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .start_campaign(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    Ok(Json(campaign_json(&c)))
}

pub async fn stop(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .stop_campaign(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    Ok(Json(campaign_json(&c)))
}

fn participant_json(p: &ParticipantRecord, c: Option<&CustomerRecord>) -> Value {
    json!({
        "id": p.id,
        "customer_id": p.customer_id,
        "object_id": p.object_id,
        "timezone": p.timezone,
        "upload_id": p.upload_id,
        "attributes": p.attributes,
        "pending_trigger": p.pending,
        "result": p.result,
        "result_at": p.result_at.map(|t| t.to_rfc3339()),
        "customer": c.map(customer_json),
        "created_at": p.created_at.to_rfc3339(),
        "updated_at": p.updated_at.to_rfc3339(),
    })
}

fn communication_json(c: &CommunicationRecord) -> Value {
    json!({
        "id": c.id,
        "name": c.name,
        "status": c.status.as_str(),
        "reason": c.reason,
        "channel": c.channel.as_str(),
        "agent_id": c.agent_id,
        "connection_id": c.connection_id,
        "flow": c.flow,
        "node": c.node,
        "scheduled_at": c.start_at.to_rfc3339(),
        "cancel_at": c.cancel_at.map(|t| t.to_rfc3339()),
        "session_id": c.session_id,
        "results": c.results,
        "created_at": c.created_at.to_rfc3339(),
        "updated_at": c.updated_at.to_rfc3339(),
    })
}

/// `GET …/participants/{pid}/communications`: the participant's communications, oldest
/// first.
pub async fn communications(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, participant)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let all = st
        .node
        .communications(
            tenant.id,
            parse_id(&id, "campaign")?,
            parse_id(&participant, "participant")?,
        )
        .await?;
    Ok(Json(
        json!({"communications": all.iter().map(communication_json).collect::<Vec<_>>()}),
    ))
}

/// `GET …/stats`: participants, communications by status and channel, passes per node.
pub async fn stats(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let s = st
        .node
        .campaign_stats(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    let mut by_status = serde_json::Map::new();
    let mut by_channel = serde_json::Map::new();
    for c in &s.communications {
        let n = by_status.entry(c.status.as_str()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + c.count);
        let n = by_channel.entry(c.channel.as_str()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + c.count);
    }
    let total: u64 = s.communications.iter().map(|c| c.count).sum();
    Ok(Json(json!({
        "participants": {"total": s.participants, "pending": s.participants_pending},
        "communications": {
            "total": total,
            "by_status": by_status,
            "by_channel": by_channel,
            "by_status_and_channel": s.communications.iter().map(|c| json!({
                "status": c.status.as_str(), "channel": c.channel.as_str(), "count": c.count,
            })).collect::<Vec<_>>(),
        },
        "nodes": s.nodes.iter().map(|n| json!({"flow": n.flow, "node": n.node, "count": n.count}))
            .collect::<Vec<_>>(),
    })))
}

fn customer_json(c: &CustomerRecord) -> Value {
    json!({
        "id": c.id,
        "external_id": c.external_id,
        "email": c.email,
        "phone": c.phone,
        "attributes": c.attributes,
        "created_at": c.created_at.to_rfc3339(),
        "updated_at": c.updated_at.to_rfc3339(),
    })
}

fn upload_json(u: &UploadRecord) -> Value {
    json!({
        "id": u.id,
        "status": u.status,
        "error": u.error,
        "total": u.total,
        "created": u.created,
        "updated": u.updated,
        "failed": u.failed,
        "errors": u.errors,
        "created_at": u.created_at.to_rfc3339(),
        "finished_at": u.finished_at.map(|t| t.to_rfc3339()),
    })
}

/// `POST …/participants` with `[{attributes, timezone?, object_id?}]`: good items are
/// stored, bad ones answered with their problems (422 when none was good).
pub async fn add_participants(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    ApiJson(inputs): ApiJson<Vec<ParticipantInput>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let added = st
        .node
        .add_participants(tenant.id, parse_id(&id, "campaign")?, inputs)
        .await?;
    let results: Vec<Value> = added
        .results
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(u) => json!({"index": i, "participant_id": u.participant_id,
                            "customer_id": u.customer_id, "created": u.created}),
            Err(errors) => json!({"index": i, "errors": errors}),
        })
        .collect();
    let failed = added.results.iter().filter(|r| r.is_err()).count();
    let status = if failed > 0 && failed == added.results.len() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"created": added.created, "updated": added.updated,
                    "failed": failed, "results": results})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantsQuery {
    name: Option<String>,
    status: Option<String>,
    external_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    upload_id: Option<String>,
    created_from: Option<chrono::DateTime<chrono::Utc>>,
    created_to: Option<chrono::DateTime<chrono::Utc>>,
    offset: Option<u64>,
    limit: Option<u64>,
}

pub async fn list_participants(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    q: Result<Query<ParticipantsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = page_limit(q.limit, 100, MAX_PAGE)?;
    let upload_id = q
        .upload_id
        .map(|u| uuid::Uuid::parse_str(&u).map_err(|_| ApiError::invalid("upload_id: not an id")))
        .transpose()?;
    let status = q
        .status
        .map(|s| {
            ParticipantStatus::parse(&s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "status: {s:?} is not one of {}",
                    ParticipantStatus::ALL.map(|p| p.as_str()).join(", ")
                ))
            })
        })
        .transpose()?;
    let query = ParticipantQuery {
        name: q.name.filter(|n| !n.trim().is_empty()),
        status,
        external_id: q.external_id,
        email: q.email.map(|e| e.trim().to_lowercase()),
        phone: q.phone,
        upload_id,
        created_from: q.created_from,
        created_to: q.created_to,
        offset: q.offset.unwrap_or(0),
        limit,
    };
    let (page, total) = st
        .node
        .participants(tenant.id, parse_id(&id, "campaign")?, &query)
        .await?;
    let participants: Vec<Value> = page
        .iter()
        .map(|v| {
            let mut j = participant_json(&v.participant, v.customer.as_ref());
            j["status"] = json!(v.status().as_str());
            j["communications"] = json!(v.communications.len());
            j
        })
        .collect();
    Ok(Json(json!({"participants": participants, "total": total,
                    "offset": query.offset, "limit": limit})))
}

pub async fn delete_participant(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, participant)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    st.node
        .delete_participant(
            tenant.id,
            parse_id(&id, "campaign")?,
            parse_id(&participant, "participant")?,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/uploads`: a CSV as a multipart `file` field or as a `text/csv` body, read as a
/// stream (files of gigabytes are never held whole); answers when the import is through,
/// with its counts and the bad rows. `GET …/uploads/{id}` shows progress meanwhile.
pub async fn upload(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = parse_id(&id, "campaign")?;
    let ct = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let record = if ct.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &st)
            .await
            .map_err(|e| ApiError::invalid(e.body_text()))?;
        let field = loop {
            match form.next_field().await {
                Ok(Some(f)) if f.name() == Some("file") => break f,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(ApiError::invalid(
                        "the form needs a `file` field with the CSV",
                    ))
                }
                Err(e) => return Err(ApiError::invalid(e.body_text())),
            }
        };
        let reader = StreamReader::new(field.map_err(std::io::Error::other));
        st.node.import_csv(tenant.id, id, reader).await?
    } else if ct.starts_with("text/csv") || ct.starts_with("application/csv") {
        let stream = req
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        st.node
            .import_csv(tenant.id, id, StreamReader::new(stream))
            .await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the CSV as multipart/form-data (field `file`) or as text/csv",
        ));
    };
    Ok((StatusCode::CREATED, Json(upload_json(&record))))
}

pub async fn uploads(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let all = st
        .node
        .uploads(tenant.id, parse_id(&id, "campaign")?)
        .await?;
    Ok(Json(
        json!({"uploads": all.iter().map(upload_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_upload(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path((id, upload)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let u = st
        .node
        .upload(
            tenant.id,
            parse_id(&id, "campaign")?,
            parse_id(&upload, "upload")?,
        )
        .await?;
    Ok(Json(upload_json(&u)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

pub async fn customers(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::invalid(e.body_text()))?;
    let limit = page_limit(q.limit, 100, MAX_PAGE)?;
    let offset = q.offset.unwrap_or(0);
    let (page, total) = st.node.customers(tenant.id, offset, limit).await?;
    Ok(Json(
        json!({"customers": page.iter().map(customer_json).collect::<Vec<_>>(),
                    "total": total, "offset": offset, "limit": limit}),
    ))
}

pub async fn customer(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = st
        .node
        .customer(tenant.id, parse_id(&id, "customer")?)
        .await?;
    Ok(Json(customer_json(&c)))
}
