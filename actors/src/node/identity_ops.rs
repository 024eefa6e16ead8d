//! Tenants, users and sign-in: who a bearer token is (the tenant's admin key, or a
//! signed-in user with a role), sign-in with throttling, temporary passwords, user
//! administration with the last-admin rule, tenant settings and new tenants.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use parley_engine::auth::{generate_secret, hash_secret};
use parley_engine::campaign::parse_timezone;
use parley_engine::identity::{
    check_password_policy, AuthToken, OperatorSchedule, Role, TenantSettings, UserId, UserRecord,
    MAX_PASSWORD_BYTES,
};
use parley_engine::identity::{day_period, month_period, SessionUsage, UsageScope};
use parley_engine::model::AgentId;
use parley_engine::model::TenantId;
use parley_engine::store::Tenant;
use serde::Deserialize;
use uuid::Uuid;

use super::check_name;
use super::logins::Busy;
use super::{Node, Shared};
use crate::error::{NodeError, NodeResult};

/// How long a sign-in lasts.
pub const TOKEN_TTL: TimeDelta = TimeDelta::hours(12);
/// How long a sign-in with a temporary password may take to change it.
const PASSWORD_CHANGE_TTL: TimeDelta = TimeDelta::minutes(15);
/// How long a node trusts the tenant settings it read (limits, time zone).
const TENANT_CACHE_TTL: Duration = Duration::from_secs(5);
/// Sessions older than this before a billing period are not looked at for its windows.
const BILLING_LOOKBACK: TimeDelta = TimeDelta::days(90);

/// Whether a new session may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Past the agent's daily limit: record it as `daily_limit_exceeded`.
    DailyLimit,
}

/// A tenant's session usage in its current month.
#[derive(Debug, Clone)]
pub struct Usage {
    pub from: chrono::DateTime<Utc>,
    pub to: chrono::DateTime<Utc>,
    pub timezone: String,
    pub usage: SessionUsage,
    pub monthly_session_limit: Option<u64>,
}

/// Who is calling: the tenant, the role and, for a signed-in person, the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub tenant: TenantId,
    pub role: Role,
    /// `None` for the tenant's admin API key.
    pub user: Option<UserId>,
    /// A sign-in with a temporary password: good only for changing it.
    pub password_change_only: bool,
}

/// What a sign-in answers.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub token: String,
    pub expires_at: chrono::DateTime<Utc>,
    pub user: UserRecord,
    /// The token only changes the temporary password.
    pub password_change_required: bool,
}

/// Why a sign-in was refused.
#[derive(Debug)]
pub enum LoginError {
    /// Wrong e-mail or password (never saying which).
    Invalid,
    /// Too many attempts: try again after this long.
    Throttled(Duration),
    /// Too many passwords being checked at once: try again shortly.
    Busy,
    Node(NodeError),
}

impl From<NodeError> for LoginError {
    fn from(e: NodeError) -> Self {
        LoginError::Node(e)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub email: String,
    pub role: Role,
    /// Temporary: changed at the first sign-in.
    pub password: String,
    pub schedule: Option<OperatorSchedule>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<Role>,
    /// A new temporary password (the user changes it at the next sign-in; their current
    /// sign-ins end).
    pub password: Option<String>,
    /// `null` removes the schedule.
    #[serde(default, deserialize_with = "some")]
    pub schedule: Option<Option<OperatorSchedule>>,
}

fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Tenant details as a request changes them; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub phone: Option<String>,
    pub billing_email: Option<String>,
    pub country: Option<String>,
    pub street: Option<String>,
    pub zip: Option<String>,
    pub website: Option<String>,
    pub timezone: Option<String>,
}

/// The longest e-mail address (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;

fn busy(_: Busy) -> NodeError {
    NodeError::Unavailable("too many passwords are being checked; try again shortly".into())
}

fn check_email(field: &str, email: &str) -> NodeResult<String> {
    parley_engine::results::FieldType::Email
        .coerce(&serde_json::Value::String(email.to_string()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| NodeError::Invalid(format!("{field}: not an e-mail address")))
}

fn check_schedule(role: Role, schedule: &Option<OperatorSchedule>) -> NodeResult<()> {
    match schedule {
        Some(_) if role != Role::Operator => Err(NodeError::Invalid(
            "schedule: only operators have a schedule".into(),
        )),
        Some(s) => s.check().map_err(NodeError::Invalid),
        None => Ok(()),
    }
}

/// A user's answer shape leaves the password hash out; callers build it from these.
pub fn user_json(u: &UserRecord) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "role": u.role.as_str(),
        "must_change_password": u.must_change_password,
        "schedule": u.schedule,
        "created_at": u.created_at.to_rfc3339(),
        "updated_at": u.updated_at.to_rfc3339(),
    })
}

impl Node {
    /// Who a bearer token is: the tenant's admin API key (an admin without a user), or a
    /// live sign-in (the user's current role: role changes apply at once).
    pub async fn authenticate(&self, token: &str) -> NodeResult<Caller> {
        let store = &self.shared.store;
        if token.starts_with("pk_") {
            let tenant = self.tenant_for_key(token).await?;
            return Ok(Caller {
                tenant: tenant.id,
                role: Role::Admin,
                user: None,
                password_change_only: false,
            });
        }
        let t = store
            .auth_token(&hash_secret(token))
            .await?
            .filter(|t| t.expires_at > Utc::now())
            .ok_or(NodeError::Unauthorized)?;
        let user = store
            .get_user(t.user_id)
            .await?
            .filter(|u| u.tenant_id == t.tenant_id)
            .ok_or(NodeError::Unauthorized)?;
        Ok(Caller {
            tenant: user.tenant_id,
            role: user.role,
            user: Some(user.id),
            password_change_only: t.password_change_only,
        })
    }

    async fn issue_token(&self, user: &UserRecord, change_only: bool) -> NodeResult<SignedIn> {
        let token = generate_secret("put_");
        let now = Utc::now();
        let expires_at = now
            + if change_only {
                PASSWORD_CHANGE_TTL
            } else {
                TOKEN_TTL
            };
        self.shared
            .store
            .put_auth_token(&AuthToken {
                token_hash: hash_secret(&token),
                user_id: user.id,
                tenant_id: user.tenant_id,
                password_change_only: change_only,
                created_at: now,
                expires_at,
            })
            .await?;
        Ok(SignedIn {
            token,
            expires_at,
            user: user.clone(),
            password_change_required: change_only,
        })
    }

    /// Signs a user in by e-mail and password from `address`. Every attempt counts
    /// against the account and the address before the password is checked (a success
    /// gives its count back); past their limits the answer is Throttled.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        tenant: Option<TenantId>,
        address: &str,
    ) -> Result<SignedIn, LoginError> {
        let logins = &self.shared.logins;
        let email = email.trim().to_lowercase();
        // Bounded before anything is kept or hashed.
        if email.chars().count() > MAX_EMAIL_CHARS {
            return Err(
                NodeError::Invalid(format!("email: at most {MAX_EMAIL_CHARS} characters")).into(),
            );
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(NodeError::Invalid(format!(
                "password: at most {MAX_PASSWORD_BYTES} bytes"
            ))
            .into());
        }
        let registry = self.shared.registry.as_ref();
        let attempt = logins
            .reserve(registry, &email, address)
            .await
            .map_err(LoginError::Throttled)?;
        // An address is unique per tenant: the password picks the user among its tenants.
        let users = match self.shared.store.users_by_email(&email).await {
            Ok(mut users) => {
                users.retain(|u| tenant.is_none_or(|t| u.tenant_id == t));
                users
            }
            Err(e) => {
                logins.give_back(registry, attempt).await;
                return Err(NodeError::from(e).into());
            }
        };
        let mut found = None;
        if users.is_empty() {
            // Hashed all the same, so an unknown address takes as long as a wrong password.
            let checked = match logins.dummy_hash().await {
                Ok(hash) => logins.verify(password, &hash).await,
                Err(busy) => Err(busy),
            };
            if checked.is_err() {
                logins.give_back(registry, attempt).await;
                return Err(LoginError::Busy);
            }
        }
        for user in users {
            match logins.verify(password, &user.password_hash).await {
                Ok(true) => {
                    found = Some(user);
                    break;
                }
                Ok(false) => {}
                Err(Busy) => {
                    logins.give_back(registry, attempt).await;
                    return Err(LoginError::Busy);
                }
            }
        }
        let Some(user) = found else {
            tracing::info!(address, "sign-in refused");
            return Err(LoginError::Invalid);
        };
        logins.succeeded(registry, attempt).await;
        Ok(self.issue_token(&user, user.must_change_password).await?)
    }

    /// Changes the caller's password (after checking the current one); every earlier
    /// sign-in of the user ends, and a new one is answered.
    pub async fn change_password(
        &self,
        caller: Caller,
        current: &str,
        new: &str,
    ) -> NodeResult<SignedIn> {
        let user_id = caller.user.ok_or_else(|| {
            NodeError::Invalid("the admin API key has no password; sign in as a user".into())
        })?;
        let store = &self.shared.store;
        let mut user = store
            .get_user(user_id)
            .await?
            .ok_or(NodeError::Unauthorized)?;
        let logins = &self.shared.logins;
        let ok = logins
            .verify(current, &user.password_hash)
            .await
            .map_err(busy)?;
        if !ok {
            return Err(NodeError::Invalid(
                "current_password: does not match".into(),
            ));
        }
        check_password_policy(new).map_err(NodeError::Invalid)?;
        if logins
            .verify(new, &user.password_hash)
            .await
            .map_err(busy)?
        {
            return Err(NodeError::Invalid(
                "password: must differ from the current one".into(),
            ));
        }
        user.password_hash = logins.hash(new).await.map_err(busy)?;
        user.must_change_password = false;
        user.updated_at = Utc::now();
        store.put_user(&user).await?;
        store.delete_auth_tokens(user.id).await?;
        self.issue_token(&user, false).await
    }

    pub async fn logout(&self, token: &str) -> NodeResult<()> {
        Ok(self
            .shared
            .store
            .delete_auth_token(&hash_secret(token))
            .await?)
    }

    pub async fn me(&self, caller: Caller) -> NodeResult<Option<UserRecord>> {
        match caller.user {
            Some(id) => Ok(self.shared.store.get_user(id).await?),
            None => Ok(None),
        }
    }

    /// A user changes their own name.
    pub async fn update_me(&self, caller: Caller, name: &str) -> NodeResult<UserRecord> {
        let id = caller.user.ok_or_else(|| {
            NodeError::Invalid("the admin API key has no profile; sign in as a user".into())
        })?;
        let mut user = self
            .shared
            .store
            .get_user(id)
            .await?
            .ok_or(NodeError::Unauthorized)?;
        user.name = check_name(name)?;
        user.updated_at = Utc::now();
        self.shared.store.put_user(&user).await?;
        Ok(user)
    }

    pub async fn create_user(&self, tenant: TenantId, req: NewUser) -> NodeResult<UserRecord> {
        let name = check_name(&req.name)?;
        let email = check_email("email", &req.email)?;
        check_password_policy(&req.password).map_err(NodeError::Invalid)?;
        check_schedule(req.role, &req.schedule)?;
        let password_hash = self.shared.logins.hash(&req.password).await.map_err(busy)?;
        let now = Utc::now();
        let user = UserRecord {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            name,
            email,
            role: req.role,
            password_hash,
            must_change_password: true,
            schedule: req.schedule,
            created_at: now,
            updated_at: now,
        };
        self.shared.store.put_user(&user).await?;
        Ok(user)
    }

    pub async fn users(&self, tenant: TenantId) -> NodeResult<Vec<UserRecord>> {
        Ok(self.shared.store.list_users(tenant).await?)
    }

    pub async fn user(&self, tenant: TenantId, id: UserId) -> NodeResult<UserRecord> {
        match self.shared.store.get_user(id).await? {
            Some(u) if u.tenant_id == tenant => Ok(u),
            _ => Err(NodeError::NotFound("user")),
        }
    }

    pub async fn update_user(
        &self,
        tenant: TenantId,
        id: UserId,
        patch: UserPatch,
    ) -> NodeResult<UserRecord> {
        let mut user = self.user(tenant, id).await?;
        if let Some(n) = &patch.name {
            user.name = check_name(n)?;
        }
        if let Some(e) = &patch.email {
            user.email = check_email("email", e)?;
        }
        if let Some(r) = patch.role {
            user.role = r;
            if r != Role::Operator && patch.schedule.is_none() {
                user.schedule = None;
            }
        }
        if let Some(s) = patch.schedule {
            user.schedule = s;
        }
        check_schedule(user.role, &user.schedule)?;
        let reset = patch.password.is_some();
        if let Some(p) = patch.password {
            check_password_policy(&p).map_err(NodeError::Invalid)?;
            user.password_hash = self.shared.logins.hash(&p).await.map_err(busy)?;
            user.must_change_password = true;
        }
        user.updated_at = Utc::now();
        self.shared.store.put_user(&user).await?;
        if reset {
            self.shared.store.delete_auth_tokens(user.id).await?;
        }
        Ok(user)
    }

    pub async fn delete_user(&self, tenant: TenantId, id: UserId) -> NodeResult<()> {
        self.user(tenant, id).await?;
        self.shared.store.delete_user(id).await?;
        Ok(())
    }

    pub async fn tenant(&self, id: TenantId) -> NodeResult<Tenant> {
        self.shared
            .store
            .get_tenant(id)
            .await?
            .ok_or(NodeError::NotFound("tenant"))
    }

    pub async fn update_tenant(&self, id: TenantId, patch: TenantPatch) -> NodeResult<Tenant> {
        let mut t = self.tenant(id).await?;
        apply_tenant_patch(&mut t, patch)?;
        self.shared.store.update_tenant(&t).await?;
        self.shared.tenants.remove(&id);
        Ok(t)
    }

    /// A new admin API key for the tenant (shown once); the old one stops working.
    pub async fn rotate_tenant_key(&self, id: TenantId) -> NodeResult<String> {
        self.tenant(id).await?;
        let key = generate_secret("pk_");
        self.shared
            .store
            .set_tenant_key_hash(id, &hash_secret(&key))
            .await?;
        Ok(key)
    }

    /// A new tenant (for a hosting provider's super key) with its admin API key, shown
    /// once.
    pub async fn create_tenant(&self, patch: TenantPatch) -> NodeResult<(Tenant, String)> {
        let name = patch
            .name
            .clone()
            .ok_or_else(|| NodeError::Invalid("name: required".into()))?;
        let key = generate_secret("pk_");
        let mut t = Tenant {
            id: Uuid::now_v7(),
            name: check_name(&name)?,
            api_key_hash: hash_secret(&key),
            created_at: Utc::now(),
            settings: TenantSettings::default(),
        };
        apply_tenant_patch(&mut t, patch)?;
        self.shared.store.create_tenant(&t).await?;
        Ok((t, key))
    }
}

fn optional(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn apply_tenant_patch(t: &mut Tenant, p: TenantPatch) -> NodeResult<()> {
    if let Some(n) = p.name {
        t.name = check_name(&n)?;
    }
    let s = &mut t.settings;
    if let Some(d) = p.description {
        if d.chars().count() > 2000 {
            return Err(NodeError::Invalid(
                "description: at most 2000 characters".into(),
            ));
        }
        s.description = d;
    }
    if let Some(e) = p.billing_email {
        s.billing_email = match optional(Some(e)) {
            Some(e) => Some(check_email("billing_email", &e)?),
            None => None,
        };
    }
    if let Some(w) = p.website {
        s.website = optional(Some(w));
        if let Some(w) = &s.website {
            let ok = reqwest::Url::parse(w).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(NodeError::Invalid("website: an http(s) URL".into()));
            }
        }
    }
    if let Some(tz) = p.timezone {
        s.timezone = optional(Some(tz));
        if let Some(tz) = &s.timezone {
            parse_timezone(tz).map_err(|e| NodeError::Invalid(format!("timezone: {e}")))?;
        }
    }
    for (field, value, slot) in [
        ("phone", p.phone, &mut s.phone),
        ("country", p.country, &mut s.country),
        ("street", p.street, &mut s.street),
        ("zip", p.zip, &mut s.zip),
    ] {
        if let Some(v) = value {
            if v.chars().count() > 200 {
                return Err(NodeError::Invalid(format!(
                    "{field}: at most 200 characters"
                )));
            }
            *slot = optional(Some(v));
        }
    }
    Ok(())
}

fn zone(t: &Tenant) -> chrono_tz::Tz {
    t.settings
        .timezone
        .as_deref()
        .and_then(|z| parse_timezone(z).ok())
        .unwrap_or(chrono_tz::UTC)
}

impl Shared {
    /// The tenant's operators on shift at `now` (by their schedules in the tenant's time
    /// zone; an operator without a schedule is always on shift).
    pub(crate) async fn operators_on_shift(
        &self,
        tenant: TenantId,
        now: chrono::DateTime<Utc>,
    ) -> NodeResult<Vec<UserRecord>> {
        let tz = zone(&*self.tenant_cached(tenant).await?);
        Ok(self
            .store
            .list_users(tenant)
            .await?
            .into_iter()
            .filter(|u| u.role == Role::Operator)
            .filter(|u| u.schedule.as_ref().is_none_or(|s| s.on_shift(tz, now)))
            .collect())
    }

    /// The tenant, as read at most [`TENANT_CACHE_TTL`] ago.
    pub(crate) async fn tenant_cached(&self, id: TenantId) -> NodeResult<std::sync::Arc<Tenant>> {
        if let Some(e) = self.tenants.get(&id) {
            if e.0.elapsed() < TENANT_CACHE_TTL {
                return Ok(e.1.clone());
            }
        }
        let t = std::sync::Arc::new(
            self.store
                .get_tenant(id)
                .await?
                .ok_or(NodeError::NotFound("tenant"))?,
        );
        self.tenants.insert(id, (Instant::now(), t.clone()));
        Ok(t)
    }

    /// Counts a new session against the agent's daily and the tenant's monthly limits
    /// (only those that are set cost a store round trip).
    pub(crate) async fn admit_session(
        &self,
        tenant: TenantId,
        agent: AgentId,
        daily_limit: Option<u64>,
        now: chrono::DateTime<Utc>,
    ) -> NodeResult<Admission> {
        let t = self.tenant_cached(tenant).await?;
        let tz = zone(&t);
        let mut daily = None;
        if let Some(limit) = daily_limit {
            let (from, to) = day_period(tz, now);
            if !self
                .store
                .reserve_session(UsageScope::Agent(agent), from, to, limit)
                .await?
            {
                return Ok(Admission::DailyLimit);
            }
            daily = Some((from, to));
        }
        if let Some(limit) = t.settings.monthly_session_limit {
            let (from, to) = month_period(tz, now);
            if !self
                .store
                .reserve_session(UsageScope::Tenant(tenant), from, to, limit)
                .await?
            {
                // The start does not happen: its place in the agent's day is free again.
                if let Some((from, to)) = daily {
                    self.store
                        .release_session(UsageScope::Agent(agent), from, to)
                        .await?;
                }
                return Err(NodeError::LimitReached(format!(
                    "the tenant's monthly limit of {limit} sessions is reached; new sessions start again when it is raised or on {}",
                    to.to_rfc3339()
                )));
            }
        }
        Ok(Admission::Admitted)
    }
}

impl Node {
    /// The tenant's sessions and billable sessions in its current month.
    pub async fn usage(&self, tenant: TenantId) -> NodeResult<Usage> {
        let t = self.tenant(tenant).await?;
        let tz = zone(&t);
        let now = Utc::now();
        let (from, to) = month_period(tz, now);
        let usage = self
            .shared
            .store
            .session_usage(tenant, from, to, now, BILLING_LOOKBACK)
            .await?;
        Ok(Usage {
            from,
            to,
            timezone: tz.name().to_string(),
            usage,
            monthly_session_limit: t.settings.monthly_session_limit,
        })
    }

    /// Sets (or with `None` lifts) a tenant's monthly session limit.
    pub async fn set_session_limit(
        &self,
        tenant: TenantId,
        limit: Option<u64>,
    ) -> NodeResult<Tenant> {
        if limit == Some(0) {
            return Err(NodeError::Invalid(
                "monthly_session_limit: greater than 0, or null for none".into(),
            ));
        }
        let mut t = self.tenant(tenant).await?;
        t.settings.monthly_session_limit = limit;
        self.shared.store.update_tenant(&t).await?;
        self.shared.tenants.remove(&tenant);
        Ok(t)
    }
}
