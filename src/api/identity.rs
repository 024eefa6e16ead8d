//! Sign-in, one's own profile, users (admins) and tenants: the tenant's settings and
//! key (admins), new tenants (the deployment's super key).

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parley_actors::node::{
    user_json, Caller, LoginError, NewUser, SignedIn, TenantPatch, UserPatch,
};
use parley_engine::store::Tenant;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{bearer, parse_id, AdminAuth, ApiJson, ClientAddress};
use super::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
    /// Which tenant's user, when the address has users in several tenants with the same
    /// password (otherwise the oldest account whose password matches signs in).
    #[serde(default)]
    tenant_id: Option<uuid::Uuid>,
}

fn signed_in_json(s: &SignedIn) -> Value {
    json!({
        "token": s.token,
        "token_type": "Bearer",
        "expires_at": s.expires_at.to_rfc3339(),
        "password_change_required": s.password_change_required,
        "user": user_json(&s.user),
    })
}

/// The key sign-in attempts from this address are counted under.
fn throttled_as(address: Option<std::net::IpAddr>) -> String {
    address.map_or_else(|| "unknown".into(), |ip| ip.to_string())
}

pub async fn login(
    State(st): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<Login>,
) -> Response {
    match st
        .node
        .login(
            &body.email,
            &body.password,
            body.tenant_id,
            &throttled_as(address),
        )
        .await
    {
        Ok(s) => Json(signed_in_json(&s)).into_response(),
        Err(LoginError::Invalid) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong e-mail address or password",
        )
        .into_response(),
        Err(LoginError::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed sign-ins; try again in {secs} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Err(LoginError::Busy) => {
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many sign-ins at once; try again shortly",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        Err(LoginError::Node(e)) => ApiError::from(e).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub async fn change_password(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> ApiResult<Json<Value>> {
    let s = st
        .node
        .change_password(caller, &body.current_password, &body.new_password)
        .await?;
    Ok(Json(signed_in_json(&s)))
}

pub async fn logout(
    State(st): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let token = bearer(&headers, None).ok_or_else(ApiError::unauthorized)?;
    if !token.starts_with("pk_") {
        st.node.logout(&token).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let user = st.node.me(caller).await?;
    Ok(Json(json!({
        "tenant_id": caller.tenant,
        "role": caller.role.as_str(),
        "password_change_required": caller.password_change_only,
        "user": user.as_ref().map(user_json),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MePatch {
    name: String,
}

pub async fn update_me(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MePatch>,
) -> ApiResult<Json<Value>> {
    let user = st.node.update_me(caller, &body.name).await?;
    Ok(Json(user_json(&user)))
}

pub async fn list_users(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
) -> ApiResult<Json<Value>> {
    let users = st.node.users(tenant.id).await?;
    Ok(Json(
        json!({"users": users.iter().map(user_json).collect::<Vec<_>>()}),
    ))
}

pub async fn create_user(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    ApiJson(body): ApiJson<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let user = st.node.create_user(tenant.id, body).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))))
}

pub async fn get_user(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let user = st.node.user(tenant.id, parse_id(&id, "user")?).await?;
    Ok(Json(user_json(&user)))
}

pub async fn update_user(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<Json<Value>> {
    let user = st
        .node
        .update_user(tenant.id, parse_id(&id, "user")?, body)
        .await?;
    Ok(Json(user_json(&user)))
}

pub async fn delete_user(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.node
        .delete_user(tenant.id, parse_id(&id, "user")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "settings": t.settings,
        "created_at": t.created_at.to_rfc3339(),
    })
}

pub async fn get_tenant(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
) -> ApiResult<Json<Value>> {
    Ok(Json(tenant_json(&st.node.tenant(tenant.id).await?)))
}

pub async fn update_tenant(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
    ApiJson(body): ApiJson<TenantPatch>,
) -> ApiResult<Json<Value>> {
    Ok(Json(tenant_json(
        &st.node.update_tenant(tenant.id, body).await?,
    )))
}

pub async fn rotate_key(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
) -> ApiResult<Json<Value>> {
    let key = st.node.rotate_tenant_key(tenant.id).await?;
    Ok(Json(json!({"admin_key": key})))
}

pub async fn create_tenant(
    State(st): State<AppState>,
    ApiJson(body): ApiJson<TenantPatch>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (t, key) = st.node.create_tenant(body).await?;
    let mut answer = tenant_json(&t);
    answer["admin_key"] = json!(key);
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `null` lifts the limit.
    monthly_session_limit: Option<u64>,
}

/// `PATCH /api/v1/tenants/{id}` (super key): the tenant's monthly session limit.
pub async fn set_limits(
    State(st): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Limits>,
) -> ApiResult<Json<Value>> {
    let t = st
        .node
        .set_session_limit(parse_id(&id, "tenant")?, body.monthly_session_limit)
        .await?;
    Ok(Json(tenant_json(&t)))
}

/// `GET /api/v1/billing/usage`: this month's sessions and billable sessions.
pub async fn usage(
    State(st): State<AppState>,
    AdminAuth(tenant): AdminAuth,
) -> ApiResult<Json<Value>> {
    let u = st.node.usage(tenant.id).await?;
    let limit = u.monthly_session_limit;
    Ok(Json(json!({
        "period": {"from": u.from.to_rfc3339(), "to": u.to.to_rfc3339(), "timezone": u.timezone},
        "sessions": u.usage.sessions,
        "billable_sessions": u.usage.billable,
        "refused_sessions": u.usage.refused,
        "monthly_session_limit": limit,
        "remaining": limit.map(|l| l.saturating_sub(u.usage.sessions)),
    })))
}
