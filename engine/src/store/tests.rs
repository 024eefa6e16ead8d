//! The store's behaviour, written against `&dyn Store` so every implementation runs the same
//! suite. Each `suite_*` function expects a fresh, migrated, empty store.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc, Weekday};
use serde_json::json;
use uuid::Uuid;

use super::{
    commit_isolating, AgentRecord, AgentStatus, Assignee, ConnectionEvent, ConnectionWrite,
    ConversationQuery, LogLine, NewConnectionEvent, RepeatedConnectionEvent, RequestOutcome,
    SessionWrites, Store, StoreError, Tenant, Write, FIRST_EPOCH,
};
use crate::campaign::{
    Campaign, CampaignId, CampaignRecord, CampaignStats, CampaignStatus, CheckedParticipant,
    CommunicationChange, CommunicationCount, CommunicationRecord, CommunicationStatus, CustomerId,
    CustomerKey, CustomerRecord, DataField, FieldLevel, FieldType, FlowRecord, NodeCount,
    ParticipantEvent, ParticipantId, ParticipantQuery, ParticipantRecord, ParticipantStatus,
    ParticipantStep, PendingTrigger, StepOutcome, UploadRecord, UploadRowError, UploadStatus,
    Upserted,
};
use crate::flow::{Channel, TriggerType};
use crate::identity::{
    AuthToken, OperatorSchedule, Role as UserRole, SessionUsage, TenantSettings, UsageScope,
    UserRecord,
};
use crate::model::{
    AgentId, AttachmentMeta, ChannelRef, CloseStatus, Feedback, Message, Mode, Role, Session,
    SessionId, SessionState, TenantId,
};

fn at(secs: i64) -> DateTime<Utc> {
    // Sub-second parts prove timestamps round-trip exactly.
    Utc.timestamp_opt(1_700_000_000 + secs, 123_456_789)
        .unwrap()
}

pub(crate) fn tenant(name: &str, key_hash: &str) -> Tenant {
    Tenant {
        id: Uuid::new_v4(),
        name: name.into(),
        api_key_hash: key_hash.into(),
        created_at: at(0),
        settings: TenantSettings::default(),
    }
}

pub(crate) fn agent(tenant: TenantId, name: &str) -> AgentRecord {
    AgentRecord {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        name: name.into(),
        status: AgentStatus::Stopped,
        status_reason: None,
        current_version: 1,
        token_hash: format!("token-of-{name}"),
        created_at: at(1),
        updated_at: at(1),
    }
}

/// An open session with every optional field set, so a round trip checks them all.
pub(crate) fn session(tenant: TenantId, agent: AgentId, user_id: &str, created: i64) -> Session {
    let mut result = BTreeMap::new();
    result.insert("intent".to_string(), json!("refund"));
    result.insert("score".to_string(), json!(4.5));
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("campaign".into(), json!({"id": 7, "tags": ["a", "b"]}));
    Session {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        agent_id: agent,
        agent_version: 3,
        session_type: "chat".into(),
        mode: Mode::Copilot,
        ext_type: "telegram".into(),
        user_id: user_id.into(),
        name: Some("Ada".into()),
        email: Some("ada@example.com".into()),
        phone: Some("+15550100".into()),
        channel_id: Some("chan-1".into()),
        timeout: 3600,
        user_timeout: Some(600),
        greeting_text: Some("Hi!".into()),
        start_phrase: Some("/start".into()),
        language: Some("de".into()),
        llm_backend: Some("builtin".into()),
        workflow_state: "greeting".into(),
        conversation_result: result,
        kwargs,
        user_info: json!({"vip": true, "ünïcode": "ß"}),
        created_at: at(created),
        last_activity: at(created),
        closed_at: None,
        state: SessionState::Active,
        message_count: 0,
        assignee: None,
        // Stored and read back like every other field.
        channel: Some(ChannelRef {
            connection_id: Uuid::from_u128(7),
            chat_id: "chat-7".into(),
            thread_id: Some("1712345678.000100".into()),
            user_id: Some("U7".into()),
        }),
    }
}

pub(crate) fn message(session: SessionId, id: i64, role: Role, text: &str) -> Message {
    Message {
        id,
        session_id: session,
        role,
        text: text.into(),
        timestamp: at(id),
        attachments: Vec::new(),
        metadata: serde_json::Value::Null,
        feedback: Feedback::None,
        idempotency_key: None,
    }
}

fn w_session(s: &Session) -> Write {
    Write::Session(Box::new(s.clone()))
}

fn w_message(m: &Message) -> Write {
    Write::Message(Box::new(m.clone()))
}

/// The writes grouped by session, each under the first epoch.
pub(crate) fn grouped(writes: &[Write]) -> Vec<SessionWrites> {
    let mut groups: Vec<SessionWrites> = Vec::new();
    for w in writes {
        let session = match w {
            Write::Session(s) => s.id,
            Write::Message(m) => m.session_id,
            Write::Attachment { session_id, .. } => *session_id,
        };
        match groups.iter_mut().find(|g| g.session == session) {
            Some(g) => g.writes.push(w.clone()),
            None => groups.push(SessionWrites {
                session,
                epoch: FIRST_EPOCH,
                writes: vec![w.clone()],
            }),
        }
    }
    groups
}

/// Commits writes made under the first claim of their sessions (never fenced).
async fn commit(store: &dyn Store, writes: &[Write]) -> Result<(), StoreError> {
    let fenced = store.commit(&grouped(writes)).await?;
    assert!(fenced.is_empty(), "unexpectedly fenced: {fenced:?}");
    Ok(())
}

fn is_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

pub(crate) async fn suite_tenants(store: &dyn Store) {
    let a = tenant("acme", "hash-a");
    let b = tenant("globex", "hash-b");
    store.create_tenant(&a).await.unwrap();
    store.create_tenant(&b).await.unwrap();

    assert_eq!(
        store.tenant_by_key_hash("hash-a").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.tenant_by_key_hash("hash-b").await.unwrap(),
        Some(b.clone())
    );
    assert_eq!(store.tenant_by_key_hash("nope").await.unwrap(), None);
    let mut all = store.list_tenants().await.unwrap();
    all.sort_by_key(|t| t.name.clone());
    assert_eq!(all, vec![a.clone(), b.clone()]);

    // Key hashes are unique.
    assert!(is_conflict(
        store.create_tenant(&tenant("dup", "hash-a")).await
    ));

    store.set_tenant_key_hash(a.id, "hash-a2").await.unwrap();
    assert_eq!(store.tenant_by_key_hash("hash-a").await.unwrap(), None);
    let rotated = store.tenant_by_key_hash("hash-a2").await.unwrap().unwrap();
    assert_eq!(rotated.id, a.id);
    assert!(is_conflict(store.set_tenant_key_hash(a.id, "hash-b").await));
    assert!(is_conflict(
        store.set_tenant_key_hash(Uuid::new_v4(), "x").await
    ));
}

pub(crate) async fn suite_tenant_settings(store: &dyn Store) {
    let mut a = tenant("acme", "hash-a");
    a.settings = TenantSettings {
        description: "Widgets for everyone".into(),
        phone: Some("+49 30 1234567".into()),
        timezone: Some("Europe/Berlin".into()),
        ..TenantSettings::default()
    };
    let b = tenant("globex", "hash-b");
    store.create_tenant(&a).await.unwrap();
    store.create_tenant(&b).await.unwrap();

    assert_eq!(store.get_tenant(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_tenant(b.id).await.unwrap(), Some(b.clone()));
    assert_eq!(store.get_tenant(Uuid::new_v4()).await.unwrap(), None);
    let mut all = store.list_tenants().await.unwrap();
    all.sort_by_key(|t| t.name.clone());
    assert_eq!(all, vec![a.clone(), b.clone()]);

    // Only the name and the settings are written: the key hash and the creation time the
    // update carries are ignored.
    let update = Tenant {
        name: "Acme GmbH".into(),
        api_key_hash: "hash-b".into(),
        created_at: at(99),
        settings: TenantSettings {
            description: String::new(),
            phone: None,
            billing_email: Some("billing@acme.test".into()),
            country: Some("DE".into()),
            street: Some("Hauptstraße 1".into()),
            zip: Some("10115".into()),
            website: Some("https://acme.test".into()),
            timezone: Some("America/New_York".into()),
            monthly_session_limit: Some(1000),
        },
        ..a.clone()
    };
    store.update_tenant(&update).await.unwrap();
    let updated = Tenant {
        name: update.name.clone(),
        settings: update.settings.clone(),
        ..a.clone()
    };
    assert_eq!(store.get_tenant(a.id).await.unwrap(), Some(updated.clone()));
    assert_eq!(
        store.tenant_by_key_hash("hash-a").await.unwrap(),
        Some(updated.clone())
    );
    assert_eq!(store.get_tenant(b.id).await.unwrap(), Some(b.clone()));
    let mut all = store.list_tenants().await.unwrap();
    all.sort_by_key(|t| t.name.clone());
    assert_eq!(all, vec![updated, b]);

    assert!(is_conflict(
        store.update_tenant(&tenant("ghost", "hash-g")).await
    ));
}

pub(crate) fn user(tenant: TenantId, email: &str, role: UserRole, created: i64) -> UserRecord {
    UserRecord {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        name: format!("Name of {email}"),
        email: email.into(),
        role,
        password_hash: format!("$argon2id$hash-of-{email}"),
        must_change_password: false,
        schedule: None,
        created_at: at(created),
        updated_at: at(created),
    }
}

fn is_conflict_about<T: std::fmt::Debug>(r: Result<T, StoreError>, about: &str) -> bool {
    matches!(r, Err(StoreError::Conflict(m)) if m.contains(about))
}

pub(crate) async fn suite_users(store: &dyn Store) {
    let (t, other) = (Uuid::new_v4(), Uuid::new_v4());
    let admin = user(t, "ada@acme.test", UserRole::Admin, 20);
    let mut operator = user(t, "olga@acme.test", UserRole::Operator, 10);
    operator.must_change_password = true;
    operator.schedule = Some(OperatorSchedule {
        days: vec![Weekday::Mon, Weekday::Fri],
        from: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
        to: NaiveTime::from_hms_opt(6, 30, 0).unwrap(),
    });
    let elsewhere = user(other, "vic@globex.test", UserRole::Viewer, 5);
    for u in [&admin, &operator, &elsewhere] {
        store.put_user(u).await.unwrap();
    }

    assert_eq!(store.get_user(admin.id).await.unwrap(), Some(admin.clone()));
    assert_eq!(
        store.get_user(operator.id).await.unwrap(),
        Some(operator.clone())
    );
    assert_eq!(store.get_user(Uuid::new_v4()).await.unwrap(), None);
    // Oldest first; the other tenant's users are not listed.
    assert_eq!(
        store.list_users(t).await.unwrap(),
        vec![operator.clone(), admin.clone()]
    );
    assert_eq!(
        store.list_users(other).await.unwrap(),
        vec![elsewhere.clone()]
    );
    assert_eq!(store.list_users(Uuid::new_v4()).await.unwrap(), vec![]);
    assert_eq!(
        store.users_by_email("olga@acme.test").await.unwrap(),
        vec![operator.clone()]
    );
    assert_eq!(
        store.users_by_email("vic@globex.test").await.unwrap(),
        vec![elsewhere.clone()]
    );
    // An exact match: callers lower-case the address first.
    assert_eq!(
        store.users_by_email("OLGA@acme.test").await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.users_by_email("nobody@acme.test").await.unwrap(),
        vec![]
    );

    // Replaced whole, e-mail address included.
    let replaced = UserRecord {
        name: "Olga Renamed".into(),
        email: "olga.r@acme.test".into(),
        role: UserRole::User,
        password_hash: "$argon2id$new".into(),
        must_change_password: false,
        schedule: None,
        updated_at: at(30),
        ..operator.clone()
    };
    store.put_user(&replaced).await.unwrap();
    assert_eq!(
        store.get_user(operator.id).await.unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(
        store.users_by_email("olga@acme.test").await.unwrap(),
        vec![]
    );
    assert_eq!(
        store.users_by_email("olga.r@acme.test").await.unwrap(),
        vec![replaced.clone()]
    );
    assert_eq!(
        store.list_users(t).await.unwrap(),
        vec![replaced.clone(), admin.clone()]
    );
    // Writing a user again unchanged keeps its own address.
    store.put_user(&admin).await.unwrap();

    // An address another user of this tenant has is refused; nothing changes. Another
    // tenant may have a user of the same address (addresses are unique per tenant).
    let newcomer = user(t, "ada@acme.test", UserRole::User, 40);
    assert!(is_conflict_about(store.put_user(&newcomer).await, "e-mail"));
    let taking = UserRecord {
        email: "ada@acme.test".into(),
        name: "Olga Again".into(),
        ..replaced.clone()
    };
    assert!(is_conflict_about(store.put_user(&taking).await, "e-mail"));
    assert_eq!(store.get_user(newcomer.id).await.unwrap(), None);
    assert_eq!(
        store.get_user(replaced.id).await.unwrap(),
        Some(replaced.clone())
    );
    assert_eq!(
        store.users_by_email("ada@acme.test").await.unwrap(),
        vec![admin.clone()]
    );
    let stranger = user(other, "ada@acme.test", UserRole::User, 40);
    store.put_user(&stranger).await.unwrap();
    assert_eq!(
        store.users_by_email("ada@acme.test").await.unwrap(),
        vec![admin.clone(), stranger.clone()]
    );
    assert!(store.delete_user(stranger.id).await.unwrap());
    assert_eq!(
        store.list_users(t).await.unwrap(),
        vec![replaced.clone(), admin.clone()]
    );
    assert_eq!(store.list_users(other).await.unwrap(), vec![elsewhere]);

    assert!(store.delete_user(replaced.id).await.unwrap());
    assert!(!store.delete_user(replaced.id).await.unwrap());
    assert_eq!(store.get_user(replaced.id).await.unwrap(), None);
    assert_eq!(
        store.users_by_email("olga.r@acme.test").await.unwrap(),
        vec![]
    );
    assert_eq!(store.list_users(t).await.unwrap(), vec![admin]);
    // The address is free again.
    let reuse = user(t, "olga.r@acme.test", UserRole::User, 50);
    store.put_user(&reuse).await.unwrap();
    assert_eq!(store.get_user(reuse.id).await.unwrap(), Some(reuse));
}

fn with_role(u: &UserRecord, role: UserRole) -> UserRecord {
    UserRecord {
        role,
        updated_at: u.updated_at + Duration::seconds(1),
        ..u.clone()
    }
}

pub(crate) async fn suite_last_admin(store: &dyn Store) {
    let t = Uuid::new_v4();
    let a = user(t, "a@acme.test", UserRole::Admin, 1);
    let b = user(t, "b@acme.test", UserRole::User, 2);
    store.put_user(&a).await.unwrap();
    store.put_user(&b).await.unwrap();

    // A is the last admin: no demotion, no move to another tenant, no deletion.
    for role in [UserRole::User, UserRole::Viewer, UserRole::Operator] {
        assert!(is_conflict_about(
            store.put_user(&with_role(&a, role)).await,
            "last admin"
        ));
    }
    let moved = UserRecord {
        tenant_id: Uuid::new_v4(),
        ..a.clone()
    };
    assert!(is_conflict_about(
        store.put_user(&moved).await,
        "last admin"
    ));
    assert!(is_conflict_about(
        store.delete_user(a.id).await,
        "last admin"
    ));
    assert_eq!(store.get_user(a.id).await.unwrap(), Some(a.clone()));
    // Changes that keep A an admin are fine.
    let renamed = UserRecord {
        name: "Ada Admin".into(),
        ..a.clone()
    };
    store.put_user(&renamed).await.unwrap();

    // With B an admin too, A can step down; then B is the last one.
    let b_admin = with_role(&b, UserRole::Admin);
    store.put_user(&b_admin).await.unwrap();
    let a_user = with_role(&renamed, UserRole::User);
    store.put_user(&a_user).await.unwrap();
    assert_eq!(store.get_user(a.id).await.unwrap(), Some(a_user.clone()));
    assert!(is_conflict_about(
        store.put_user(&with_role(&b_admin, UserRole::Viewer)).await,
        "last admin"
    ));
    assert!(is_conflict_about(
        store.delete_user(b.id).await,
        "last admin"
    ));
    assert!(store.delete_user(a.id).await.unwrap());
    assert_eq!(store.list_users(t).await.unwrap(), vec![b_admin]);

    // A tenant without admins from the start: its users come and go freely.
    let u = Uuid::new_v4();
    let x = user(u, "x@initech.test", UserRole::Viewer, 1);
    let y = user(u, "y@initech.test", UserRole::Operator, 2);
    store.put_user(&x).await.unwrap();
    store.put_user(&y).await.unwrap();
    let x_user = with_role(&x, UserRole::User);
    store.put_user(&x_user).await.unwrap();
    assert_eq!(store.get_user(x.id).await.unwrap(), Some(x_user));
    assert!(store.delete_user(x.id).await.unwrap());
    assert!(store.delete_user(y.id).await.unwrap());
    assert_eq!(store.list_users(u).await.unwrap(), vec![]);
    // Once it has an admin, the rule protects that one.
    let z = user(u, "z@initech.test", UserRole::Admin, 3);
    store.put_user(&z).await.unwrap();
    assert!(is_conflict_about(
        store.put_user(&with_role(&z, UserRole::User)).await,
        "last admin"
    ));
    assert!(is_conflict_about(
        store.delete_user(z.id).await,
        "last admin"
    ));
    assert_eq!(store.list_users(u).await.unwrap(), vec![z]);
}

/// Two admins demoted (or deleted) at the same moment: exactly one of the two writes goes
/// through, so the tenant keeps one admin.
pub(crate) async fn suite_concurrent_demotions(store: &dyn Store) {
    let admins = |t: TenantId| async move {
        store
            .list_users(t)
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.role == UserRole::Admin)
            .count()
    };
    for round in 0..20 {
        let t = Uuid::new_v4();
        let a = user(t, &format!("a{round}@acme.test"), UserRole::Admin, 1);
        let b = user(t, &format!("b{round}@acme.test"), UserRole::Admin, 2);
        store.put_user(&a).await.unwrap();
        store.put_user(&b).await.unwrap();
        let (ra, rb) = if round % 2 == 0 {
            let (a, b) = (
                with_role(&a, UserRole::User),
                with_role(&b, UserRole::Viewer),
            );
            tokio::join!(store.put_user(&a), store.put_user(&b))
        } else {
            let (ra, rb) = tokio::join!(store.delete_user(a.id), store.delete_user(b.id));
            (ra.map(|gone| assert!(gone)), rb.map(|gone| assert!(gone)))
        };
        let conflicts = [&ra, &rb]
            .into_iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict(m)) if m.contains("last admin")))
            .count();
        assert!(
            conflicts == 1 && (ra.is_ok() || rb.is_ok()),
            "round {round}: {ra:?} {rb:?}"
        );
        assert_eq!(admins(t).await, 1, "round {round}");
    }
}

fn token(user: &UserRecord, hash: &str, expires: i64) -> AuthToken {
    AuthToken {
        token_hash: hash.into(),
        user_id: user.id,
        tenant_id: user.tenant_id,
        password_change_only: false,
        created_at: at(0),
        expires_at: at(expires),
    }
}

pub(crate) async fn suite_auth_tokens(store: &dyn Store) {
    let t = Uuid::new_v4();
    let u = user(t, "u@acme.test", UserRole::Admin, 1);
    let v = user(t, "v@acme.test", UserRole::User, 2);
    store.put_user(&u).await.unwrap();
    store.put_user(&v).await.unwrap();
    let u1 = token(&u, "hash-u1", 100);
    let u2 = AuthToken {
        password_change_only: true,
        ..token(&u, "hash-u2", 200)
    };
    let v1 = token(&v, "hash-v1", 50);
    for tok in [&u1, &u2, &v1] {
        store.put_auth_token(tok).await.unwrap();
    }
    assert!(is_conflict(
        store.put_auth_token(&token(&v, "hash-u1", 300)).await
    ));
    assert_eq!(store.auth_token("hash-u1").await.unwrap(), Some(u1.clone()));
    assert_eq!(store.auth_token("hash-u2").await.unwrap(), Some(u2.clone()));
    assert_eq!(store.auth_token("nope").await.unwrap(), None);

    // Expired tokens are still answered (the caller checks expiry) until pruned; pruning
    // takes those expired by `now`, the one expiring at `now` included.
    assert_eq!(store.prune_auth_tokens(at(49)).await.unwrap(), 0);
    assert_eq!(store.auth_token("hash-v1").await.unwrap(), Some(v1.clone()));
    assert_eq!(store.prune_auth_tokens(at(50)).await.unwrap(), 1);
    assert_eq!(store.auth_token("hash-v1").await.unwrap(), None);
    assert_eq!(store.auth_token("hash-u1").await.unwrap(), Some(u1.clone()));
    assert_eq!(store.auth_token("hash-u2").await.unwrap(), Some(u2.clone()));

    store.delete_auth_token("hash-u1").await.unwrap();
    assert_eq!(store.auth_token("hash-u1").await.unwrap(), None);
    store.delete_auth_token("hash-u1").await.unwrap();
    assert_eq!(store.auth_token("hash-u2").await.unwrap(), Some(u2.clone()));

    let u3 = token(&u, "hash-u3", 300);
    let v2 = token(&v, "hash-v2", 300);
    store.put_auth_token(&u3).await.unwrap();
    store.put_auth_token(&v2).await.unwrap();
    assert_eq!(store.delete_auth_tokens(u.id).await.unwrap(), 2);
    assert_eq!(store.delete_auth_tokens(u.id).await.unwrap(), 0);
    assert_eq!(store.auth_token("hash-u2").await.unwrap(), None);
    assert_eq!(store.auth_token("hash-u3").await.unwrap(), None);
    assert_eq!(store.auth_token("hash-v2").await.unwrap(), Some(v2.clone()));

    // Deleting a user signs it out.
    assert!(store.delete_user(v.id).await.unwrap());
    assert_eq!(store.auth_token("hash-v2").await.unwrap(), None);
    assert_eq!(store.delete_auth_tokens(v.id).await.unwrap(), 0);
    assert_eq!(store.prune_auth_tokens(at(1000)).await.unwrap(), 0);
}

pub(crate) async fn suite_agents(store: &dyn Store) {
    let t = tenant("acme", "h1");
    let other_t = tenant("globex", "h2");
    store.create_tenant(&t).await.unwrap();
    store.create_tenant(&other_t).await.unwrap();
    let a = agent(t.id, "sales");
    let b = agent(t.id, "support");
    let c = agent(other_t.id, "elsewhere");
    store.create_agent(&a, "name: sales v1").await.unwrap();
    store.create_agent(&b, "name: support v1").await.unwrap();
    store.create_agent(&c, "name: elsewhere v1").await.unwrap();
    assert!(is_conflict(store.create_agent(&a, "again").await));

    assert_eq!(store.get_agent(a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_agent(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store.get_agent_version(a.id, 1).await.unwrap().as_deref(),
        Some("name: sales v1")
    );
    assert_eq!(store.get_agent_version(a.id, 2).await.unwrap(), None);

    // Versions.
    store
        .add_agent_version(a.id, 2, "sales v2", "name: sales v2", at(50))
        .await
        .unwrap();
    let a2 = store.get_agent(a.id).await.unwrap().unwrap();
    assert_eq!(a2.current_version, 2);
    assert_eq!(a2.name, "sales v2");
    assert_eq!(a2.updated_at, at(50));
    assert_eq!(a2.created_at, a.created_at);
    assert_eq!(
        store.get_agent_version(a.id, 1).await.unwrap().as_deref(),
        Some("name: sales v1")
    );
    assert_eq!(
        store.get_agent_version(a.id, 2).await.unwrap().as_deref(),
        Some("name: sales v2")
    );
    assert!(is_conflict(
        store.add_agent_version(a.id, 2, "d", "dup", at(60)).await
    ));
    assert!(is_conflict(
        store
            .add_agent_version(Uuid::new_v4(), 1, "x", "x", at(60))
            .await
    ));
    assert_eq!(
        store
            .get_agent(a.id)
            .await
            .unwrap()
            .unwrap()
            .current_version,
        2
    );

    // Listing.
    let mut listed: Vec<_> = store
        .list_agents(t.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    listed.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(store.all_agents().await.unwrap().len(), 3);
    assert!(store.list_agents(Uuid::new_v4()).await.unwrap().is_empty());

    // Status and token.
    store
        .set_agent_status(a.id, AgentStatus::Error, Some("bad backend"))
        .await
        .unwrap();
    let errored = store.get_agent(a.id).await.unwrap().unwrap();
    assert_eq!(errored.status, AgentStatus::Error);
    assert_eq!(errored.status_reason.as_deref(), Some("bad backend"));
    store
        .set_agent_status(a.id, AgentStatus::Running, None)
        .await
        .unwrap();
    let running = store.get_agent(a.id).await.unwrap().unwrap();
    assert_eq!(running.status, AgentStatus::Running);
    assert_eq!(running.status_reason, None);
    store.set_agent_token_hash(a.id, "new-token").await.unwrap();
    assert_eq!(
        store.get_agent(a.id).await.unwrap().unwrap().token_hash,
        "new-token"
    );
    assert!(is_conflict(
        store
            .set_agent_status(Uuid::new_v4(), AgentStatus::Running, None)
            .await
    ));
    assert!(is_conflict(
        store.set_agent_token_hash(Uuid::new_v4(), "x").await
    ));

    // Delete cascades to versions, sessions, messages and attachments, and to nothing else.
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    let mut batch = Vec::new();
    for (owner, out) in [(a.id, &mut doomed), (b.id, &mut kept)] {
        for n in 0..2 {
            let s = session(t.id, owner, "u1", n);
            let file = AttachmentMeta {
                id: Uuid::new_v4(),
                filename: "f.txt".into(),
                content_type: "text/plain".into(),
                size: 3,
            };
            batch.push(w_session(&s));
            batch.push(w_message(&message(s.id, 1, Role::Human, "hi")));
            batch.push(Write::Attachment {
                session_id: s.id,
                meta: file.clone(),
                bytes: Bytes::from_static(b"abc"),
            });
            out.push((s.id, file.id));
        }
    }
    commit(store, &batch).await.unwrap();

    assert!(store.delete_agent(a.id).await.unwrap());
    assert_eq!(store.get_agent(a.id).await.unwrap(), None);
    assert_eq!(store.get_agent_version(a.id, 1).await.unwrap(), None);
    assert_eq!(store.get_agent_version(a.id, 2).await.unwrap(), None);
    for (s, f) in &doomed {
        assert_eq!(store.load_session(*s).await.unwrap(), None);
        assert!(store.load_messages(*s).await.unwrap().is_empty());
        assert_eq!(store.get_attachment(*f).await.unwrap(), None);
    }
    for (s, f) in &kept {
        assert!(store.load_session(*s).await.unwrap().is_some());
        assert_eq!(store.load_messages(*s).await.unwrap().len(), 1);
        assert!(store.get_attachment(*f).await.unwrap().is_some());
    }
    assert!(store.get_agent(b.id).await.unwrap().is_some());
    assert!(!store.delete_agent(a.id).await.unwrap());
    // The id is free again, versions included.
    store.create_agent(&a, "name: sales again").await.unwrap();
}

pub(crate) async fn suite_widgets(store: &dyn Store) {
    use crate::widget::{new_widget_id, WidgetRecord, WidgetSecrets, WidgetSettings};
    let t = tenant("acme", "h1");
    store.create_tenant(&t).await.unwrap();
    let a = agent(t.id, "sales");
    let b = agent(t.id, "support");
    store.create_agent(&a, "name: sales").await.unwrap();
    store.create_agent(&b, "name: support").await.unwrap();
    assert_eq!(store.widget_of_agent(a.id).await.unwrap(), None);
    let mut w = WidgetRecord {
        agent_id: a.id,
        tenant_id: t.id,
        widget_id: new_widget_id(),
        settings: WidgetSettings {
            enabled: true,
            allowed_origins: vec!["https://shop.example".into()],
            title: Some("Ask us".into()),
            ..WidgetSettings::default()
        },
        secrets: WidgetSecrets {
            identity_secret: Some("v2:sealed".into()),
            stt_api_key: None,
        },
        updated_at: at(5),
    };
    store.put_widget(&w).await.unwrap();
    assert_eq!(store.widget_of_agent(a.id).await.unwrap(), Some(w.clone()));
    assert_eq!(store.widget(&w.widget_id).await.unwrap(), Some(w.clone()));
    assert_eq!(store.widget(&new_widget_id()).await.unwrap(), None);
    assert_eq!(store.widget_of_agent(b.id).await.unwrap(), None);

    // A replacement keeps the row (and its public id) and changes the rest.
    w.settings.enabled = false;
    w.secrets.identity_secret = None;
    w.updated_at = at(9);
    store.put_widget(&w).await.unwrap();
    assert_eq!(store.widget(&w.widget_id).await.unwrap(), Some(w.clone()));

    // Public ids are unique across agents.
    let clash = WidgetRecord {
        agent_id: b.id,
        ..w.clone()
    };
    assert!(store.put_widget(&clash).await.is_err());

    // The widget goes with its agent.
    assert!(store.delete_agent(a.id).await.unwrap());
    assert_eq!(store.widget(&w.widget_id).await.unwrap(), None);
}

pub(crate) async fn suite_session_roundtrip(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let s = session(t, a, "u1", 0);
    assert_eq!(store.load_session(s.id).await.unwrap(), None);
    commit(store, &[w_session(&s)]).await.unwrap();
    assert_eq!(store.load_session(s.id).await.unwrap(), Some(s.clone()));

    // Several versions in one batch: the last one wins.
    let mut v2 = s.clone();
    v2.workflow_state = "qualify".into();
    v2.message_count = 2;
    let mut v3 = v2.clone();
    v3.state = SessionState::Closed(CloseStatus::ResolvedByOperator);
    v3.closed_at = Some(at(99));
    v3.mode = Mode::Operator;
    v3.conversation_result.insert("done".into(), json!(true));
    let other = session(t, a, "u2", 1);
    commit(store, &[w_session(&v2), w_session(&other), w_session(&v3)])
        .await
        .unwrap();
    assert_eq!(store.load_session(s.id).await.unwrap(), Some(v3));
    assert_eq!(store.load_session(other.id).await.unwrap(), Some(other));

    // A minimal session (all options empty) round-trips too.
    let mut bare = session(t, a, "u3", 2);
    bare.name = None;
    bare.email = None;
    bare.phone = None;
    bare.channel_id = None;
    bare.user_timeout = None;
    bare.greeting_text = None;
    bare.start_phrase = None;
    bare.language = None;
    bare.llm_backend = None;
    bare.conversation_result.clear();
    bare.kwargs.clear();
    bare.user_info = serde_json::Value::Null;
    commit(store, &[w_session(&bare)]).await.unwrap();
    assert_eq!(store.load_session(bare.id).await.unwrap(), Some(bare));

    commit(store, &[]).await.unwrap();

    // Turns appended without rewriting the row: the log brings the count and the last
    // customer activity up to date.
    let mut lagging = session(t, a, "u4", 3);
    lagging.message_count = 0;
    commit(store, &[w_session(&lagging)]).await.unwrap();
    let human = message(lagging.id, 1, Role::Human, "hi");
    let ai = message(lagging.id, 2, Role::Ai, "hello");
    commit(store, &[w_message(&human), w_message(&ai)])
        .await
        .unwrap();
    let loaded = store.load_session(lagging.id).await.unwrap().unwrap();
    assert_eq!(loaded.message_count, 2);
    assert_eq!(
        loaded.last_activity,
        lagging.last_activity.max(human.timestamp)
    );
    assert_eq!(loaded.workflow_state, lagging.workflow_state);
}

pub(crate) async fn suite_messages(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s = session(t, a, "u1", 0);
    let other = session(t, a, "u2", 0);
    let m1 = message(s.id, 1, Role::Human, "hello");
    let mut m2 = message(s.id, 2, Role::Ai, "hi, how can I help?");
    m2.metadata = json!({"state": "greeting", "tokens": [1, 2, 3]});
    m2.idempotency_key = Some("k1".into());
    let mut m3 = message(s.id, 3, Role::Human, "here's a file 📎");
    m3.attachments = vec![AttachmentMeta {
        id: Uuid::new_v4(),
        filename: "invoice.pdf".into(),
        content_type: "application/pdf".into(),
        size: 1234,
    }];
    m3.feedback = Feedback::Bad;
    let o1 = message(other.id, 1, Role::Operator, "other session");
    s.message_count = 2;
    commit(
        store,
        &[
            w_session(&s),
            w_message(&m1),
            w_message(&m2),
            w_session(&other),
            w_message(&o1),
        ],
    )
    .await
    .unwrap();
    s.message_count = 3;
    commit(store, &[w_session(&s), w_message(&m3)])
        .await
        .unwrap();

    assert_eq!(
        store.load_messages(s.id).await.unwrap(),
        vec![m1.clone(), m2.clone(), m3.clone()]
    );
    assert_eq!(store.load_messages(other.id).await.unwrap(), vec![o1]);
    // The tail of a log, oldest first.
    assert_eq!(
        store.load_recent_messages(s.id, 2).await.unwrap(),
        vec![m2.clone(), m3.clone()]
    );
    assert_eq!(store.load_recent_messages(s.id, 10).await.unwrap().len(), 3);
    assert!(store
        .load_recent_messages(Uuid::new_v4(), 5)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .load_messages(Uuid::new_v4())
        .await
        .unwrap()
        .is_empty());

    // Every role survives.
    let roles = [
        Role::Human,
        Role::Ai,
        Role::Operator,
        Role::Copilot,
        Role::Notes,
    ];
    let third = session(t, a, "u3", 0);
    let logs: Vec<_> = roles
        .iter()
        .enumerate()
        .map(|(i, r)| message(third.id, i as i64 + 1, *r, r.as_str()))
        .collect();
    let mut batch = vec![w_session(&third)];
    batch.extend(logs.iter().map(w_message));
    commit(store, &batch).await.unwrap();
    assert_eq!(store.load_messages(third.id).await.unwrap(), logs);
}

pub(crate) async fn suite_duplicate_message_conflict(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let mut s1 = session(t, a, "u1", 0);
    let m1 = message(s1.id, 1, Role::Human, "original");
    // A session row that matches its log (load_session reconciles the two).
    s1.message_count = 1;
    s1.last_activity = m1.timestamp;
    commit(store, &[w_session(&s1), w_message(&m1)])
        .await
        .unwrap();

    // A batch that repeats an existing message id fails whole: the session update, the
    // new messages, the new session and the attachment all roll back.
    let mut s1b = s1.clone();
    s1b.workflow_state = "changed".into();
    let fresh = session(t, a, "u2", 1);
    let file = AttachmentMeta {
        id: Uuid::new_v4(),
        filename: "a.bin".into(),
        content_type: "application/octet-stream".into(),
        size: 1,
    };
    let clash = message(s1.id, 1, Role::Ai, "overwrite attempt");
    let batch = [
        w_session(&s1b),
        w_session(&fresh),
        w_message(&message(s1.id, 2, Role::Ai, "new")),
        w_message(&message(fresh.id, 1, Role::Human, "new session")),
        Write::Attachment {
            session_id: fresh.id,
            meta: file.clone(),
            bytes: Bytes::from_static(b"x"),
        },
        w_message(&clash),
    ];
    assert!(is_conflict(commit(store, &batch).await));
    assert_eq!(store.load_session(s1.id).await.unwrap(), Some(s1.clone()));
    assert_eq!(store.load_messages(s1.id).await.unwrap(), vec![m1.clone()]);
    assert_eq!(store.load_session(fresh.id).await.unwrap(), None);
    assert!(store.load_messages(fresh.id).await.unwrap().is_empty());
    assert_eq!(store.get_attachment(file.id).await.unwrap(), None);

    // The same id twice inside one batch fails it too.
    let dup = message(s1.id, 2, Role::Ai, "twice");
    assert!(is_conflict(
        commit(store, &[w_session(&s1b), w_message(&dup), w_message(&dup)]).await
    ));
    assert_eq!(store.load_session(s1.id).await.unwrap(), Some(s1.clone()));
    assert_eq!(store.load_messages(s1.id).await.unwrap(), vec![m1.clone()]);

    // The store is still usable afterwards.
    commit(store, &[w_session(&s1b), w_message(&dup)])
        .await
        .unwrap();
    assert_eq!(store.load_messages(s1.id).await.unwrap(), vec![m1, dup]);
    // The row is s1b; the log has grown past its count to message 2.
    let loaded = store.load_session(s1.id).await.unwrap().unwrap();
    assert_eq!(loaded.workflow_state, "changed");
    assert_eq!(loaded.message_count, 2);
}

/// A batch with bad requests in it: each bad one fails alone, the good ones commit, a
/// stale one is still fenced.
pub(crate) async fn suite_bad_writes_fail_alone(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let existing = session(t, a, "u0", 0);
    let m1 = message(existing.id, 1, Role::Human, "original");
    commit(store, &[w_session(&existing), w_message(&m1)])
        .await
        .unwrap();
    let claimed = session(t, a, "u-claimed", 0);
    commit(store, &[w_session(&claimed)]).await.unwrap();
    let epoch = store.claim_session(claimed.id).await.unwrap().unwrap();
    assert!(epoch > FIRST_EPOCH);

    let good = session(t, a, "u1", 1);
    let good_msg = message(good.id, 1, Role::Human, "hello");
    // Deadlines past the calendar's end are stored as "never", not a panic.
    let mut far = session(t, a, "u2", 2);
    far.timeout = u64::MAX;
    far.user_timeout = Some(u64::MAX);
    let batch = vec![
        SessionWrites {
            session: good.id,
            epoch: FIRST_EPOCH,
            writes: vec![w_session(&good), w_message(&good_msg)],
        },
        SessionWrites {
            session: existing.id,
            epoch: FIRST_EPOCH,
            writes: vec![w_message(&message(existing.id, 1, Role::Ai, "clash"))],
        },
        SessionWrites {
            session: claimed.id,
            epoch: FIRST_EPOCH,
            writes: vec![w_message(&message(claimed.id, 1, Role::Human, "stale"))],
        },
        SessionWrites {
            session: far.id,
            epoch: FIRST_EPOCH,
            writes: vec![w_session(&far)],
        },
    ];
    // A connection's writes in the same batch commit as well.
    let c = Uuid::new_v4();
    let connection = vec![
        ConnectionWrite::Inbox {
            connection: c,
            message: Box::new(inbound("d1", "hi")),
            at: at(1),
            line: Some(log_line(c, 1, "delivery")),
        },
        ConnectionWrite::Line(log_line(c, 2, "status")),
    ];
    let outcome = commit_isolating(store, &batch, &connection, &[connection.len()]).await;
    assert!(outcome.isolated);
    assert!(
        matches!(&outcome.connections[..], [Ok(a)] if a == &[true, true]),
        "{:?}",
        outcome.connections
    );
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        [inbound("d1", "hi")]
    );
    assert_eq!(store.connection_events(c, None, 10).await.unwrap().len(), 2);
    let r = &outcome.sessions;
    assert!(matches!(r[0], RequestOutcome::Committed), "{r:?}");
    assert!(
        matches!(&r[1], RequestOutcome::Failed(StoreError::Conflict(_))),
        "{r:?}"
    );
    // Callers read what kind of conflict it is, never the database's own words.
    if let RequestOutcome::Failed(StoreError::Conflict(m)) = &r[1] {
        for leak in [
            "UNIQUE",
            "unique",
            "duplicate key",
            "constraint",
            "pkey",
            "messages.",
        ] {
            assert!(!m.contains(leak), "{m}");
        }
    }
    assert!(matches!(r[2], RequestOutcome::Fenced), "{r:?}");
    assert!(matches!(r[3], RequestOutcome::Committed), "{r:?}");

    assert_eq!(store.load_messages(good.id).await.unwrap(), vec![good_msg]);
    assert_eq!(store.load_messages(existing.id).await.unwrap(), vec![m1]);
    assert!(store.load_messages(claimed.id).await.unwrap().is_empty());
    let far_loaded = store.load_session(far.id).await.unwrap().unwrap();
    assert_eq!(far_loaded.timeout, u64::MAX);
    assert_eq!(far_loaded.next_deadline(), Some(DateTime::<Utc>::MAX_UTC));
    // Not due in a thousand years.
    let due = store.due_sessions(Utc::now() + Duration::days(365_000), 100);
    assert!(!due.await.unwrap().iter().any(|(s, _)| *s == far.id));

    // A batch that commits is not split.
    let later = session(t, a, "u3", 3);
    let whole = commit_isolating(store, &grouped(&[w_session(&later)]), &[], &[]).await;
    assert!(!whole.isolated);
    assert!(matches!(whole.sessions[..], [RequestOutcome::Committed]));
}

/// Postgres cannot hold a NUL character in text: that message, or that delivery, fails
/// alone.
pub(crate) async fn suite_nul_text_fails_alone(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let good = session(t, a, "u1", 0);
    let bad = session(t, a, "u2", 0);
    let good_msg = message(good.id, 1, Role::Human, "fine");
    let batch = grouped(&[
        w_session(&good),
        w_message(&good_msg),
        w_session(&bad),
        w_message(&message(bad.id, 1, Role::Human, "nul \0 inside")),
    ]);
    let outcome = commit_isolating(store, &batch, &[], &[]).await;
    assert!(outcome.isolated);
    assert!(matches!(outcome.sessions[0], RequestOutcome::Committed));
    assert!(matches!(
        outcome.sessions[1],
        RequestOutcome::Failed(StoreError::Conflict(_))
    ));
    assert_eq!(store.load_messages(good.id).await.unwrap(), vec![good_msg]);
    assert_eq!(store.load_session(bad.id).await.unwrap(), None);

    // A delivery the store cannot hold fails its own request only: the session's turn and
    // the other connection's lines beside it commit.
    let c = Uuid::new_v4();
    let later = session(t, a, "u3", 0);
    let delivery = |dedup_id: &str| ConnectionWrite::Inbox {
        connection: c,
        message: Box::new(inbound(dedup_id, "hi")),
        at: at(1),
        line: Some(log_line(c, 1, "delivery")),
    };
    let connections = [
        delivery("nul \0 inside"),
        delivery("fine"),
        ConnectionWrite::Line(log_line(c, 2, "reply")),
    ];
    let outcome =
        commit_isolating(store, &grouped(&[w_session(&later)]), &connections, &[1, 2]).await;
    assert!(outcome.isolated);
    assert!(matches!(outcome.sessions[..], [RequestOutcome::Committed]));
    assert!(matches!(
        outcome.connections[0],
        Err(StoreError::Conflict(_))
    ));
    assert!(
        matches!(&outcome.connections[1], Ok(a) if a == &[true, true]),
        "{:?}",
        outcome.connections
    );
    assert_eq!(store.load_session(later.id).await.unwrap(), Some(later));
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        [inbound("fine", "hi")]
    );
    let kinds: Vec<String> = store
        .connection_events(c, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["reply", "delivery"]);
}

pub(crate) async fn suite_idempotency(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let s = session(t, a, "u1", 0);
    let other = session(t, a, "u2", 0);
    let human = message(s.id, 1, Role::Human, "q");
    let mut reply = message(s.id, 2, Role::Ai, "a");
    reply.idempotency_key = Some("key-1".into());
    let mut other_reply = message(other.id, 1, Role::Ai, "other");
    other_reply.idempotency_key = Some("key-2".into());
    commit(
        store,
        &[
            w_session(&s),
            w_message(&human),
            w_message(&reply),
            w_session(&other),
            w_message(&other_reply),
        ],
    )
    .await
    .unwrap();

    assert_eq!(
        store.find_reply(s.id, "key-1").await.unwrap(),
        Some(reply.clone())
    );
    assert_eq!(store.find_reply(s.id, "key-2").await.unwrap(), None);
    assert_eq!(store.find_reply(other.id, "key-1").await.unwrap(), None);
    assert_eq!(
        store.find_reply(Uuid::new_v4(), "key-1").await.unwrap(),
        None
    );

    // A key answers once per session.
    let mut again = message(s.id, 3, Role::Ai, "again");
    again.idempotency_key = Some("key-1".into());
    assert!(is_conflict(commit(store, &[w_message(&again)]).await));
    assert_eq!(store.load_messages(s.id).await.unwrap().len(), 2);
}

pub(crate) async fn suite_feedback(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let s = session(t, a, "u1", 0);
    let m1 = message(s.id, 1, Role::Human, "q");
    let m2 = message(s.id, 2, Role::Ai, "a");
    commit(store, &[w_session(&s), w_message(&m1), w_message(&m2)])
        .await
        .unwrap();

    assert!(store.set_feedback(s.id, 2, Feedback::Good).await.unwrap());
    let log = store.load_messages(s.id).await.unwrap();
    assert_eq!(log[0].feedback, Feedback::None);
    assert_eq!(log[1].feedback, Feedback::Good);
    assert!(store.set_feedback(s.id, 2, Feedback::Bad).await.unwrap());
    assert_eq!(
        store.load_messages(s.id).await.unwrap()[1].feedback,
        Feedback::Bad
    );

    assert!(!store.set_feedback(s.id, 3, Feedback::Good).await.unwrap());
    assert!(!store
        .set_feedback(Uuid::new_v4(), 1, Feedback::Good)
        .await
        .unwrap());
}

pub(crate) async fn suite_attachments(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let s = session(t, a, "u1", 0);
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let big = AttachmentMeta {
        id: Uuid::new_v4(),
        filename: "photo ü.jpg".into(),
        content_type: "image/jpeg".into(),
        size: binary.len() as u64,
    };
    let empty = AttachmentMeta {
        id: Uuid::new_v4(),
        filename: "empty".into(),
        content_type: "text/plain".into(),
        size: 0,
    };
    commit(
        store,
        &[
            w_session(&s),
            Write::Attachment {
                session_id: s.id,
                meta: big.clone(),
                bytes: Bytes::from(binary.clone()),
            },
            Write::Attachment {
                session_id: s.id,
                meta: empty.clone(),
                bytes: Bytes::new(),
            },
        ],
    )
    .await
    .unwrap();

    let (sid, meta, bytes) = store.get_attachment(big.id).await.unwrap().unwrap();
    assert_eq!((sid, meta), (s.id, big.clone()));
    assert_eq!(&bytes[..], &binary[..]);
    let (_, meta, bytes) = store.get_attachment(empty.id).await.unwrap().unwrap();
    assert_eq!(meta, empty);
    assert!(bytes.is_empty());
    assert_eq!(store.get_attachment(Uuid::new_v4()).await.unwrap(), None);

    // Stored bytes are never replaced.
    assert!(is_conflict(
        commit(
            store,
            &[Write::Attachment {
                session_id: s.id,
                meta: big.clone(),
                bytes: Bytes::from_static(b"other"),
            }]
        )
        .await
    ));
    let (_, _, bytes) = store.get_attachment(big.id).await.unwrap().unwrap();
    assert_eq!(bytes.len(), binary.len());
}

pub(crate) async fn suite_due_sessions(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    // Deadlines: created_at + min(timeout, user_timeout from last_activity).
    let mk = |created: i64, timeout: u64, user_timeout: Option<u64>| {
        let mut s = session(t, a, "u", created);
        s.timeout = timeout;
        s.user_timeout = user_timeout;
        s
    };
    let early = mk(0, 100, None); // due at 100
    let inactive = mk(0, 1000, Some(50)); // due at 50
    let late = mk(0, 500, None); // due at 500
    let mut closed = mk(0, 10, None); // would be due at 10, but closed
    closed.state = SessionState::Closed(CloseStatus::Completed);
    closed.closed_at = Some(at(5));
    commit(
        store,
        &[
            w_session(&early),
            w_session(&inactive),
            w_session(&late),
            w_session(&closed),
        ],
    )
    .await
    .unwrap();

    let ids = |v: Vec<(SessionId, AgentId)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    assert!(store.due_sessions(at(49), 10).await.unwrap().is_empty());
    // Deadlines may be reported up to a millisecond late, never early.
    let just_after = at(50) + Duration::milliseconds(1);
    assert_eq!(
        ids(store.due_sessions(just_after, 10).await.unwrap()),
        vec![inactive.id]
    );
    let due = store.due_sessions(at(200), 10).await.unwrap();
    assert_eq!(due, vec![(inactive.id, a), (early.id, a)]);
    assert_eq!(
        ids(store.due_sessions(at(1000), 2).await.unwrap()),
        vec![inactive.id, early.id]
    );
    assert_eq!(
        ids(store.due_sessions(at(1000), 10).await.unwrap()),
        vec![inactive.id, early.id, late.id]
    );

    assert!(store
        .due_sessions(at(50) - Duration::nanoseconds(1), 10)
        .await
        .unwrap()
        .is_empty());

    // Activity moves the deadline; closing removes the session.
    let mut touched = inactive.clone();
    touched.last_activity = at(300);
    let mut ended = early.clone();
    ended.state = SessionState::Closed(CloseStatus::Timeout);
    ended.closed_at = Some(at(100));
    commit(store, &[w_session(&touched), w_session(&ended)])
        .await
        .unwrap();
    assert!(store.due_sessions(at(200), 10).await.unwrap().is_empty());
    assert_eq!(
        ids(store.due_sessions(at(1000), 10).await.unwrap()),
        vec![touched.id, late.id]
    );
}

pub(crate) async fn suite_sessions_for_user(store: &dyn Store) {
    let (t, other_t) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let old = session(t, a, "cust", 0);
    let mid = session(t, b, "cust", 10);
    let mut new = session(t, a, "cust", 20);
    new.state = SessionState::Closed(CloseStatus::Completed);
    let other_user = session(t, a, "someone", 30);
    let mut other_type = session(t, a, "cust", 40);
    other_type.ext_type = "slack".into();
    let other_tenant = session(other_t, a, "cust", 50);
    let batch: Vec<_> = [&mid, &other_user, &new, &other_type, &old, &other_tenant]
        .into_iter()
        .map(w_session)
        .collect();
    commit(store, &batch).await.unwrap();

    assert_eq!(
        store
            .sessions_for_user(t, None, "cust", "telegram")
            .await
            .unwrap(),
        vec![new.clone(), mid.clone(), old.clone()]
    );
    assert_eq!(
        store
            .sessions_for_user(t, Some(a), "cust", "telegram")
            .await
            .unwrap(),
        vec![new, old]
    );
    assert_eq!(
        store
            .sessions_for_user(t, Some(b), "cust", "telegram")
            .await
            .unwrap(),
        vec![mid]
    );
    assert_eq!(
        store
            .sessions_for_user(t, None, "cust", "slack")
            .await
            .unwrap(),
        vec![other_type]
    );
    assert_eq!(
        store
            .sessions_for_user(other_t, None, "cust", "telegram")
            .await
            .unwrap(),
        vec![other_tenant]
    );
    assert!(store
        .sessions_for_user(t, None, "nobody", "telegram")
        .await
        .unwrap()
        .is_empty());
}

/// An inbox query with the filters given and room for every session of a test.
fn inbox(
    mode: Option<Mode>,
    active: Option<bool>,
    assignee: Option<Assignee>,
) -> ConversationQuery {
    ConversationQuery {
        mode,
        active,
        assignee,
        offset: 0,
        limit: 100,
    }
}

/// The ids of the conversations `query` lists, and its total.
async fn conversation_ids(
    store: &dyn Store,
    tenant: TenantId,
    query: ConversationQuery,
) -> (Vec<SessionId>, u64) {
    let (page, total) = store.list_conversations(tenant, &query).await.unwrap();
    (page.iter().map(|s| s.id).collect(), total)
}

/// The operators' inbox: each filter and their combinations, newest write first, paging,
/// tenants apart, and rows that follow their sessions' rewrites.
pub(crate) async fn suite_list_conversations(store: &dyn Store) {
    let (t, other_t, a) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let mk = |tenant, mode, closed, assignee| {
        let mut s = session(tenant, a, "cust", 0);
        s.mode = mode;
        s.assignee = assignee;
        if closed {
            s.state = SessionState::Closed(CloseStatus::ResolvedByOperator);
            s.closed_at = Some(at(50));
        }
        s
    };
    let op_x = mk(t, Mode::Operator, false, Some(x));
    let regular = mk(t, Mode::Regular, false, None);
    let op_closed = mk(t, Mode::Operator, true, None);
    let foreign = mk(other_t, Mode::Operator, false, None);
    let copilot_x = mk(t, Mode::Copilot, false, Some(x));
    let mut op_open = mk(t, Mode::Operator, false, None);
    let op_closed_y = mk(t, Mode::Operator, true, Some(y));
    // One commit each: a row's updated_at is its commit's time, so this is their order.
    for s in [
        &op_x,
        &regular,
        &op_closed,
        &foreign,
        &copilot_x,
        &op_open,
        &op_closed_y,
    ] {
        commit(store, &[w_session(s)]).await.unwrap();
    }
    let ids = |sessions: &[&Session]| {
        let ids: Vec<SessionId> = sessions.iter().map(|s| s.id).collect();
        let total = ids.len() as u64;
        (ids, total)
    };
    let list = |tenant, query| conversation_ids(store, tenant, query);
    let (operator, copilot) = (Some(Mode::Operator), Some(Mode::Copilot));
    let (nobody, user) = (Some(Assignee::Nobody), |u| Some(Assignee::User(u)));

    assert_eq!(
        list(t, inbox(operator, None, None)).await,
        ids(&[&op_closed_y, &op_open, &op_closed, &op_x])
    );
    assert_eq!(
        list(t, inbox(operator, Some(true), None)).await,
        ids(&[&op_open, &op_x])
    );
    assert_eq!(
        list(t, inbox(operator, None, nobody)).await,
        ids(&[&op_open, &op_closed])
    );
    assert_eq!(
        list(t, inbox(operator, Some(true), user(x))).await,
        ids(&[&op_x])
    );
    assert_eq!(
        list(t, inbox(Some(Mode::Regular), None, None)).await,
        ids(&[&regular])
    );
    assert_eq!(
        list(t, inbox(copilot, None, None)).await,
        ids(&[&copilot_x])
    );
    assert_eq!(
        list(t, inbox(None, Some(false), None)).await,
        ids(&[&op_closed_y, &op_closed])
    );
    assert_eq!(
        list(t, inbox(None, None, nobody)).await,
        ids(&[&op_open, &op_closed, &regular])
    );
    assert_eq!(
        list(t, inbox(None, None, user(x))).await,
        ids(&[&copilot_x, &op_x])
    );
    assert_eq!(
        list(t, inbox(None, None, user(y))).await,
        ids(&[&op_closed_y])
    );

    // Without filters: all of the tenant's sessions, each as load_session has it (brought
    // up to date by turns appended without rewriting its row).
    commit(
        store,
        &[w_message(&message(
            regular.id,
            1,
            Role::Human,
            "a human, please",
        ))],
    )
    .await
    .unwrap();
    let all = [
        &op_closed_y,
        &op_open,
        &copilot_x,
        &op_closed,
        &regular,
        &op_x,
    ];
    let mut loaded = Vec::new();
    for s in all {
        loaded.push(store.load_session(s.id).await.unwrap().unwrap());
    }
    assert_eq!(loaded[4].message_count, 1);
    assert_eq!(
        store
            .list_conversations(t, &inbox(None, None, None))
            .await
            .unwrap(),
        (loaded, 6)
    );

    // Pages of the OPERATOR list, each with the total.
    let page = |offset, limit| ConversationQuery {
        offset,
        limit,
        ..inbox(operator, None, None)
    };
    assert_eq!(
        list(t, page(1, 2)).await,
        (vec![op_open.id, op_closed.id], 4)
    );
    assert_eq!(list(t, page(3, 10)).await, (vec![op_x.id], 4));
    assert_eq!(list(t, page(4, 10)).await, (vec![], 4));
    assert_eq!(list(t, page(0, 0)).await, (vec![], 4));

    // Another tenant's sessions are never listed.
    assert_eq!(
        list(other_t, inbox(None, None, None)).await,
        ids(&[&foreign])
    );
    assert_eq!(
        list(other_t, inbox(operator, None, nobody)).await,
        ids(&[&foreign])
    );
    assert_eq!(list(other_t, inbox(None, None, user(x))).await, (vec![], 0));
    assert_eq!(
        list(Uuid::new_v4(), inbox(None, None, None)).await,
        (vec![], 0)
    );

    // Rewrites move the columns along: an operator takes a session, and another one goes
    // back to the bot (still assigned).
    op_open.assignee = Some(y);
    commit(store, &[w_session(&op_open)]).await.unwrap();
    let mut back = op_x.clone();
    back.mode = Mode::Regular;
    commit(store, &[w_session(&back)]).await.unwrap();
    assert_eq!(
        list(t, inbox(operator, None, None)).await,
        ids(&[&op_open, &op_closed_y, &op_closed])
    );
    assert_eq!(
        list(t, inbox(operator, None, nobody)).await,
        ids(&[&op_closed])
    );
    assert_eq!(
        list(t, inbox(None, None, user(y))).await,
        ids(&[&op_open, &op_closed_y])
    );
    assert_eq!(
        list(t, inbox(Some(Mode::Regular), None, None)).await,
        ids(&[&back, &regular])
    );
    assert_eq!(
        list(t, inbox(None, None, user(x))).await,
        ids(&[&back, &copilot_x])
    );

    // Sessions written by one commit share its time: the larger id comes first.
    let (c1, c2) = (
        mk(t, Mode::Copilot, false, None),
        mk(t, Mode::Copilot, false, None),
    );
    commit(store, &[w_session(&c1), w_session(&c2)])
        .await
        .unwrap();
    let (first, second) = if c1.id > c2.id {
        (&c1, &c2)
    } else {
        (&c2, &c1)
    };
    assert_eq!(
        list(t, inbox(copilot, Some(true), None)).await,
        ids(&[first, second, &copilot_x])
    );
}

/// One batch of thousands of writes, sized so the statements split into uneven chunks.
pub(crate) async fn suite_large_batch(store: &dyn Store) {
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let turns = 1_337;
    let mut sessions: Vec<Session> = (0..turns / 3)
        .map(|i| session(t, a, &format!("user-{i}"), i as i64))
        .collect();
    let mut batch = Vec::new();
    for turn in 0..turns {
        let s = &mut sessions[turn % (turns / 3)];
        let n = s.message_count;
        let human = message(s.id, n + 1, Role::Human, &format!("question {turn}"));
        let mut ai = message(s.id, n + 2, Role::Ai, &format!("answer {turn}"));
        ai.idempotency_key = Some(format!("turn-{turn}"));
        s.message_count = n + 2;
        s.last_activity = at(turn as i64);
        batch.push(w_session(s));
        batch.push(w_message(&human));
        batch.push(w_message(&ai));
    }
    commit(store, &batch).await.unwrap();

    for s in [&sessions[0], &sessions[200], &sessions[sessions.len() - 1]] {
        assert_eq!(store.load_session(s.id).await.unwrap().as_ref(), Some(s));
        let log = store.load_messages(s.id).await.unwrap();
        assert_eq!(log.len() as i64, s.message_count);
        assert!(log.iter().zip(1..).all(|(m, id)| m.id == id));
    }
    let ai = store
        .find_reply(sessions[5].id, "turn-5")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ai.text, "answer 5");
    let total: usize = {
        let mut n = 0;
        for s in &sessions {
            n += store.load_messages(s.id).await.unwrap().len();
        }
        n
    };
    assert_eq!(total, turns * 2);
}

/// A claim raises the epoch; writes under an older epoch are left out of the batch (and
/// named), while the rest of the batch commits.
pub(crate) async fn suite_fencing(store: &dyn Store) {
    let t = tenant("acme", "k");
    let a = agent(t.id, "bot");
    store.create_tenant(&t).await.unwrap();
    store.create_agent(&a, "def").await.unwrap();
    let mut s = session(t.id, a.id, "u1", 0);
    let other = session(t.id, a.id, "u2", 0);
    commit(store, &[w_session(&s), w_session(&other)])
        .await
        .unwrap();

    assert_eq!(store.claim_session(Uuid::new_v4()).await.unwrap(), None);
    let e2 = store.claim_session(s.id).await.unwrap().unwrap();
    assert_eq!(e2, FIRST_EPOCH + 1);
    let e3 = store.claim_session(s.id).await.unwrap().unwrap();
    assert_eq!(e3, e2 + 1);

    // The old owner (epoch 2) and an unrelated session share a batch.
    let late = message(s.id, 1, Role::Human, "late write");
    let fine = message(other.id, 1, Role::Human, "fine");
    s.workflow_state = "Stale".into();
    let batch = vec![
        SessionWrites {
            session: s.id,
            epoch: e2,
            writes: vec![w_message(&late), w_session(&s)],
        },
        SessionWrites {
            session: other.id,
            epoch: FIRST_EPOCH,
            writes: vec![w_message(&fine)],
        },
    ];
    assert_eq!(store.commit(&batch).await.unwrap(), vec![s.id]);
    assert!(store.load_messages(s.id).await.unwrap().is_empty());
    let kept = store.load_session(s.id).await.unwrap().unwrap();
    assert_ne!(kept.workflow_state, "Stale");
    assert_eq!(store.load_messages(other.id).await.unwrap(), vec![fine]);

    // The current owner writes, and its session row keeps the claimed epoch.
    let current = message(s.id, 1, Role::Human, "current owner");
    let batch = vec![SessionWrites {
        session: s.id,
        epoch: e3,
        writes: vec![w_message(&current), w_session(&s)],
    }];
    assert!(store.commit(&batch).await.unwrap().is_empty());
    assert_eq!(store.load_messages(s.id).await.unwrap(), vec![current]);
    assert_eq!(store.claim_session(s.id).await.unwrap(), Some(e3 + 1));
}

/// Claims race group commits made under the old epoch by several writers at once, each
/// rewriting the session row too: once claim_session has answered, no write of the old
/// epoch lands, and each racing commit either landed before the claim or was fenced whole.
pub(crate) async fn suite_concurrent_fencing(store: &dyn Store) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const WRITERS: i64 = 4;
    // Bounds a writer that is never fenced (the claim never happened).
    const MAX_ATTEMPTS: i64 = 10_000;
    let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
    let s = session(t, a, "u1", 0);
    commit(store, &[w_session(&s)]).await.unwrap();
    let claimed = AtomicBool::new(false);
    let landed_so_far = AtomicUsize::new(0);
    let state = |id: i64| format!("written with message {id}");

    let writer = |w: i64| {
        let (s, claimed, landed_so_far) = (&s, &claimed, &landed_so_far);
        async move {
            let mut landed = Vec::new();
            // Each writer goes on until it is fenced, so every one of them races the claim.
            for k in 1..=MAX_ATTEMPTS {
                let id = w * MAX_ATTEMPTS + k;
                let mut row = s.clone();
                row.workflow_state = state(id);
                let batch = [SessionWrites {
                    session: s.id,
                    epoch: FIRST_EPOCH,
                    writes: vec![
                        w_message(&message(s.id, id, Role::Human, "hi")),
                        w_session(&row),
                    ],
                }];
                let after_claim = claimed.load(Ordering::SeqCst);
                let fenced = store.commit(&batch).await.unwrap();
                if !fenced.is_empty() {
                    assert_eq!(fenced, vec![s.id]);
                    return landed;
                }
                assert!(
                    !after_claim,
                    "message {id} of the old epoch landed after the claim answered"
                );
                landed.push(id);
                landed_so_far.fetch_add(1, Ordering::SeqCst);
            }
            panic!("writer {w} was never fenced");
        }
    };
    let claimer = async {
        // Let the writers get going first.
        while landed_so_far.load(Ordering::SeqCst) < 8 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let epoch = store.claim_session(s.id).await.unwrap();
        claimed.store(true, Ordering::SeqCst);
        epoch
    };
    let (epoch, landed) = futures::join!(
        claimer,
        futures::future::join_all((1..=WRITERS).map(writer))
    );
    assert_eq!(epoch, Some(FIRST_EPOCH + 1));

    // Exactly the commits that answered "landed" are in the log and the row.
    let mut landed: Vec<i64> = landed.into_iter().flatten().collect();
    landed.sort_unstable();
    let log: Vec<i64> = store
        .load_messages(s.id)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(log, landed);
    let row = store.load_session(s.id).await.unwrap().unwrap();
    assert!(landed.iter().any(|&id| row.workflow_state == state(id)));

    // The new owner writes.
    let next = message(s.id, 1, Role::Ai, "new owner");
    let batch = [SessionWrites {
        session: s.id,
        epoch: FIRST_EPOCH + 1,
        writes: vec![w_message(&next)],
    }];
    assert!(store.commit(&batch).await.unwrap().is_empty());
}

/// A session of `tenant` and `agent` started at `start`; `end`: when and how it closed
/// (None: open).
fn usage_session(
    tenant: TenantId,
    agent: AgentId,
    start: DateTime<Utc>,
    end: Option<(DateTime<Utc>, CloseStatus)>,
) -> Session {
    let mut s = session(tenant, agent, "u", 0);
    s.created_at = start;
    s.last_activity = start;
    if let Some((closed, status)) = end {
        s.state = SessionState::Closed(status);
        s.closed_at = Some(closed);
    }
    s
}

/// Sessions count by their start in the period, refused ones apart; billable windows
/// start every 24 hours of a session's life (from its start to its close, or to now while
/// it is open) and count where they start in the period.
pub(crate) async fn suite_session_usage(store: &dyn Store) {
    let h = Duration::hours;
    let (t, other_t, a) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let from = at(0) + Duration::days(30);
    let to = from + h(96);
    let now = from + h(60);
    let lookback = Duration::days(2);
    let done = CloseStatus::Completed;
    let refused = CloseStatus::DailyLimitExceeded;
    let mk = |tenant, start, end| usage_session(tenant, a, start, end);

    // 36 hours: two windows. Written open first, so its close must reach the row.
    let long_open = mk(t, from + h(1), None);
    let mut long = long_open.clone();
    long.state = SessionState::Closed(done);
    long.closed_at = Some(from + h(37));
    // Started before the period (not counted), its second window starts inside it.
    let early = mk(t, from - h(12), Some((from + h(20), done)));
    // From the period's first instant, exactly 24 hours: one window.
    let day = mk(t, from, Some((from + h(24), done)));
    // Closed as it started: still one window.
    let instant = mk(t, from + h(4), Some((from + h(4), done)));
    // Open: windows up to now (+30h, +54h; +78h is later than now).
    let open = mk(t, from + h(30), None);
    // Closed without closed_at: it ended by its last write (the commit, long after `to`),
    // so windows at +40h, +64h and +88h.
    let mut unstamped = mk(t, from + h(40), None);
    unstamped.state = SessionState::Closed(done);
    // Refused starts count apart, in the period only, and are never billed.
    let refused_in = mk(t, from + h(5), Some((from + h(5), refused)));
    let refused_before = mk(t, from - h(1), Some((from - h(1), refused)));
    // Not counted: another tenant's, one that starts at `to`, and one that started before
    // the lookback (open, its windows would reach into the period).
    let foreign = mk(other_t, from + h(1), None);
    let after = mk(t, to, None);
    let ancient = mk(t, from - lookback - h(1), None);

    commit(store, &[w_session(&long_open)]).await.unwrap();
    let all = [
        &long,
        &early,
        &day,
        &instant,
        &open,
        &unstamped,
        &refused_in,
        &refused_before,
        &foreign,
        &after,
        &ancient,
    ];
    let writes: Vec<Write> = all.into_iter().map(w_session).collect();
    commit(store, &writes).await.unwrap();

    let usage = |tenant, lookback| store.session_usage(tenant, from, to, now, lookback);
    assert_eq!(
        usage(t, lookback).await.unwrap(),
        SessionUsage {
            sessions: 5,
            billable: 2 + 1 + 1 + 1 + 2 + 3,
            refused: 1,
        }
    );
    // Without lookback the early session is not looked at; with a long one the ancient
    // session's windows at +23h and +47h count too.
    assert_eq!(
        usage(t, Duration::zero()).await.unwrap(),
        SessionUsage {
            sessions: 5,
            billable: 9,
            refused: 1,
        }
    );
    assert_eq!(usage(t, Duration::days(10)).await.unwrap().billable, 12);
    // The other tenant's open session: windows at +1h, +25h, +49h.
    assert_eq!(
        usage(other_t, lookback).await.unwrap(),
        SessionUsage {
            sessions: 1,
            billable: 3,
            refused: 0,
        }
    );
    assert_eq!(
        usage(Uuid::new_v4(), lookback).await.unwrap(),
        SessionUsage::default()
    );
}

/// Counters start from the sessions stored in their period (refused ones apart) and count
/// up to their limit; each scope and period counts on its own.
pub(crate) async fn suite_reserve_session(store: &dyn Store) {
    let (t, other_t) = (Uuid::new_v4(), Uuid::new_v4());
    let (a1, a2, a3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (day, h) = (Duration::days(1), Duration::hours);
    let (prev, from) = (at(0), at(0) + day);
    let to = from + day;
    let refused = CloseStatus::DailyLimitExceeded;
    let stored = [
        usage_session(t, a1, from + h(1), None),
        usage_session(t, a1, from + h(2), Some((from + h(2), refused))),
        usage_session(
            t,
            a2,
            prev + h(1),
            Some((prev + h(2), CloseStatus::Completed)),
        ),
        usage_session(t, a1, to, None),
        usage_session(other_t, a3, from + h(1), None),
    ];
    let writes: Vec<Write> = stored.iter().map(w_session).collect();
    commit(store, &writes).await.unwrap();

    let reserve = |scope, from, to, limit| async move {
        store.reserve_session(scope, from, to, limit).await.unwrap()
    };
    let tenant = UsageScope::Tenant(t);
    // One session stored: two more fit under three.
    assert!(reserve(tenant, from, to, 3).await);
    assert!(reserve(tenant, from, to, 3).await);
    assert!(!reserve(tenant, from, to, 3).await);
    assert!(!reserve(tenant, from, to, 3).await);
    // Sessions stored after the counter started are not counted again: their
    // reservations counted them.
    commit(
        store,
        &[w_session(&usage_session(t, a1, from + h(3), None))],
    )
    .await
    .unwrap();
    assert!(reserve(tenant, from, to, 4).await);
    assert!(!reserve(tenant, from, to, 4).await);

    // Other periods count on their own: the previous day holds a2's session, two days
    // from `from` the three of a1 stored by now.
    assert!(reserve(tenant, prev, from, 2).await);
    assert!(!reserve(tenant, prev, from, 2).await);
    assert!(reserve(tenant, from, to + day, 4).await);
    assert!(!reserve(tenant, from, to + day, 4).await);

    // An agent counts its own sessions only; a1's reservations leave a2's count alone.
    assert!(reserve(UsageScope::Agent(a1), from, to, 3).await);
    assert!(!reserve(UsageScope::Agent(a1), from, to, 3).await);
    assert!(reserve(UsageScope::Agent(a2), from, to, 1).await);
    assert!(!reserve(UsageScope::Agent(a2), from, to, 1).await);
    // Another tenant's counter is its own.
    assert!(reserve(UsageScope::Tenant(other_t), from, to, 2).await);
    assert!(!reserve(UsageScope::Tenant(other_t), from, to, 2).await);
    // Nothing fits under a limit of zero.
    assert!(!reserve(UsageScope::Tenant(Uuid::new_v4()), from, to, 0).await);

    // A released reservation makes room again, once; releasing an empty or unknown
    // counter changes nothing.
    let a1_day = UsageScope::Agent(a1);
    store.release_session(a1_day, from, to).await.unwrap();
    assert!(reserve(a1_day, from, to, 3).await);
    assert!(!reserve(a1_day, from, to, 3).await);
    let fresh = UsageScope::Agent(Uuid::new_v4());
    store.release_session(fresh, from, to).await.unwrap();
    assert!(reserve(fresh, from, to, 1).await);
    assert!(!reserve(fresh, from, to, 1).await);
}

/// Of concurrent reservations at the limit exactly as many pass as fit, also when they are
/// the period's first and start its counter together.
pub(crate) async fn suite_concurrent_reservations(store: &dyn Store) {
    const CALLERS: usize = 10;
    const LIMIT: u64 = 4;
    for round in 0..20 {
        let (t, a) = (Uuid::new_v4(), Uuid::new_v4());
        let from = at(0) + Duration::days(round);
        let to = from + Duration::days(1);
        // Odd rounds start with a session stored in the period.
        let stored = round % 2;
        if stored == 1 {
            let s = usage_session(t, a, from, None);
            commit(store, &[w_session(&s)]).await.unwrap();
        }
        let calls =
            (0..CALLERS).map(|_| store.reserve_session(UsageScope::Tenant(t), from, to, LIMIT));
        let passed = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().unwrap())
            .count();
        assert_eq!(passed as u64, LIMIT - stored as u64, "round {round}");
    }
}

/// Connections round-trip whole (sealed secrets included), per tenant, oldest first; a put
/// of an existing id replaces it; deletes answer whether there was one.
pub(crate) async fn suite_connections(store: &dyn Store) {
    use crate::connection::{ConnectionRecord, ConnectionStatus};
    use crate::inbound::Platform;
    let (a, b) = (tenant("acme", "ka"), tenant("globex", "kb"));
    store.create_tenant(&a).await.unwrap();
    store.create_tenant(&b).await.unwrap();
    let make = |t: TenantId, name: &str, secs: i64| ConnectionRecord {
        id: Uuid::new_v4(),
        tenant_id: t,
        name: name.into(),
        platform: Platform::named("telegram"),
        description: Some("support bot".into()),
        enabled: false,
        status: ConnectionStatus::Active,
        status_error: None,
        status_at: at(secs),
        config: json!({"mode": "polling", "streaming": true})
            .as_object()
            .unwrap()
            .clone(),
        secrets_sealed: "v1:c2VhbGVk".into(),
        advanced: json!({"x": 1}),
        rate_limits: json!({"per_chat_per_sec": 1}),
        created_at: at(secs),
        updated_at: at(secs),
    };
    let first = make(a.id, "first", 10);
    let second = make(a.id, "second", 20);
    let other = make(b.id, "theirs", 5);
    for c in [&second, &first, &other] {
        store.put_connection(c).await.unwrap();
    }
    assert_eq!(
        store.get_connection(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.get_connection(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store.list_connections(a.id).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store.list_connections(b.id).await.unwrap(),
        vec![other.clone()]
    );

    let mut changed = first.clone();
    changed.enabled = true;
    changed.status = ConnectionStatus::Error;
    changed.status_error = Some("getMe: 401 Unauthorized".into());
    changed.updated_at = at(30);
    store.put_connection(&changed).await.unwrap();
    assert_eq!(store.get_connection(first.id).await.unwrap(), Some(changed));

    assert!(store.delete_connection(first.id).await.unwrap());
    assert!(!store.delete_connection(first.id).await.unwrap());
    assert_eq!(store.list_connections(a.id).await.unwrap(), vec![second]);
}

/// An agent's channels are replaced whole; a connection takes one inbound agent at most
/// (Conflict, and nothing changes); an agent may share a connection outbound-only.
pub(crate) async fn suite_agent_channels(store: &dyn Store) {
    use super::AgentChannel;
    let t = tenant("acme", "k");
    store.create_tenant(&t).await.unwrap();
    let (a, b) = (agent(t.id, "a"), agent(t.id, "b"));
    store.create_agent(&a, "def").await.unwrap();
    store.create_agent(&b, "def").await.unwrap();
    let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
    let ch = |connection_id, inbound| AgentChannel {
        connection_id,
        inbound,
    };
    assert_eq!(store.agent_channels(a.id).await.unwrap(), vec![]);
    store
        .set_agent_channels(a.id, &[ch(c1, true), ch(c2, false)])
        .await
        .unwrap();
    let mut got = store.agent_channels(a.id).await.unwrap();
    got.sort_by_key(|c| c.connection_id);
    let mut want = vec![ch(c1, true), ch(c2, false)];
    want.sort_by_key(|c| c.connection_id);
    assert_eq!(got, want);
    // b may use c1 outbound, not take its inbound traffic.
    store
        .set_agent_channels(b.id, &[ch(c1, false)])
        .await
        .unwrap();
    assert!(is_conflict(
        store.set_agent_channels(b.id, &[ch(c1, true)]).await
    ));
    assert_eq!(
        store.agent_channels(b.id).await.unwrap(),
        vec![ch(c1, false)],
        "a refused change changes nothing"
    );
    // Once a lets go, b can take it.
    store
        .set_agent_channels(a.id, &[ch(c2, false)])
        .await
        .unwrap();
    store
        .set_agent_channels(b.id, &[ch(c1, true)])
        .await
        .unwrap();
    assert_eq!(
        store.agent_channels(a.id).await.unwrap(),
        vec![ch(c2, false)]
    );
    store.set_agent_channels(b.id, &[]).await.unwrap();
    assert_eq!(store.agent_channels(b.id).await.unwrap(), vec![]);
}

/// A delivery with every optional field set, so a round trip checks them all.
fn inbound(dedup_id: &str, text: &str) -> crate::inbound::InboundMessage {
    crate::inbound::InboundMessage {
        platform: crate::inbound::Platform::named("discord"),
        dedup_id: dedup_id.into(),
        user_id: "user-7".into(),
        user_name: Some("Ada Lovelace".into()),
        chat_id: "chat-42".into(),
        thread_id: Some("1700000000.000100".into()),
        text: text.into(),
        sent_at: at(5),
        reply_context: json!({"token": "tok", "application_id": 9, "nested": {"ß": [1, null]}}),
    }
}

/// Inbound deliveries: a dedup id is recorded once per connection; pending ones come back
/// whole and in order; finished ones still count as duplicates until pruned.
pub(crate) async fn suite_inbox(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (m1, m2, m3) = (
        inbound("d1", "first"),
        inbound("d2", "second"),
        inbound("d3", "third"),
    );
    let mut bare = inbound("d4", "nothing optional");
    bare.user_name = None;
    bare.thread_id = None;
    bare.reply_context = serde_json::Value::Null;
    assert_eq!(store.inbox_pending(c, 10).await.unwrap(), vec![]);

    assert!(store.inbox_insert(c, &m1, at(10)).await.unwrap());
    let mut again = m1.clone();
    again.text = "redelivered".into();
    assert!(!store.inbox_insert(c, &again, at(11)).await.unwrap());
    // The same dedup id on another connection is another delivery.
    assert!(store.inbox_insert(other, &m1, at(10)).await.unwrap());
    assert!(store.inbox_insert(c, &m2, at(20)).await.unwrap());
    assert!(store.inbox_insert(c, &m3, at(30)).await.unwrap());
    assert!(store.inbox_insert(c, &bare, at(40)).await.unwrap());

    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        vec![m1.clone(), m2.clone(), m3.clone(), bare.clone()],
        "pending in insertion order, the first version of a duplicate kept"
    );
    assert_eq!(
        store.inbox_pending(c, 2).await.unwrap(),
        vec![m1.clone(), m2.clone()]
    );
    assert_eq!(
        store.inbox_pending(other, 10).await.unwrap(),
        vec![m1.clone()]
    );

    store.inbox_done(c, "d1").await.unwrap();
    store.inbox_done(c, "d2").await.unwrap();
    // Unknown deliveries are no error.
    store.inbox_done(c, "nope").await.unwrap();
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        vec![m3.clone(), bare.clone()]
    );
    assert!(
        !store.inbox_insert(c, &m1, at(50)).await.unwrap(),
        "a finished delivery is still a duplicate"
    );

    // Only finished deliveries received before the bound go: d1 (at 10), not d2 (at 20),
    // not the pending ones, not the other connection's pending d1.
    assert_eq!(store.inbox_prune(at(15)).await.unwrap(), 1);
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        vec![m3.clone(), bare.clone()]
    );
    assert_eq!(
        store.inbox_pending(other, 10).await.unwrap(),
        vec![m1.clone()]
    );
    assert!(!store.inbox_insert(c, &m2, at(50)).await.unwrap());
    assert!(
        store.inbox_insert(c, &m1, at(60)).await.unwrap(),
        "a pruned delivery is forgotten"
    );
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        vec![m3.clone(), bare.clone(), m1.clone()]
    );
    assert_eq!(store.inbox_prune(at(1000)).await.unwrap(), 1);
    assert_eq!(store.inbox_prune(at(1000)).await.unwrap(), 0);
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        vec![m3, bare, m1.clone()]
    );
    assert_eq!(store.inbox_pending(other, 10).await.unwrap(), vec![m1]);
}

/// A chat's session is absent until set, then replaced whole; chats and connections are
/// separate.
pub(crate) async fn suite_channel_sessions(store: &dyn Store) {
    use super::ChannelSession;
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.channel_session(c, "chat:user").await.unwrap(), None);
    let first = ChannelSession {
        session_id: Uuid::new_v4(),
        started_at: at(10),
    };
    store
        .set_channel_session(c, "chat:user", &first)
        .await
        .unwrap();
    assert_eq!(
        store.channel_session(c, "chat:user").await.unwrap(),
        Some(first)
    );
    assert_eq!(store.channel_session(c, "chat:other").await.unwrap(), None);
    assert_eq!(
        store.channel_session(other, "chat:user").await.unwrap(),
        None
    );

    let second = ChannelSession {
        session_id: Uuid::new_v4(),
        started_at: at(20),
    };
    store
        .set_channel_session(c, "chat:user", &second)
        .await
        .unwrap();
    assert_eq!(
        store.channel_session(c, "chat:user").await.unwrap(),
        Some(second)
    );
}

/// The event log: newest first, paged by id, bounded per connection by `keep`.
pub(crate) async fn suite_connection_events(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.connection_events(c, None, 10).await.unwrap(), vec![]);
    for i in 0..5 {
        store
            .add_connection_event(
                c,
                at(i),
                &format!("kind-{i}"),
                &json!({"n": i, "why": "ünïcode", "list": [1, 2]}),
                100,
            )
            .await
            .unwrap();
    }
    store
        .add_connection_event(other, at(9), "theirs", &json!(null), 100)
        .await
        .unwrap();

    let all = store.connection_events(c, None, 10).await.unwrap();
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["kind-4", "kind-3", "kind-2", "kind-1", "kind-0"]);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(all[0].connection_id, c);
    assert_eq!(all[0].at, at(4));
    assert_eq!(
        all[0].detail,
        json!({"n": 4, "why": "ünïcode", "list": [1, 2]})
    );

    let page = store.connection_events(c, None, 2).await.unwrap();
    assert_eq!(page, all[..2]);
    let next = store
        .connection_events(c, Some(page[1].id), 2)
        .await
        .unwrap();
    assert_eq!(next, all[2..4]);
    let last = store
        .connection_events(c, Some(next[1].id), 2)
        .await
        .unwrap();
    assert_eq!(last, all[4..]);
    assert_eq!(
        store
            .connection_events(c, Some(all[4].id), 2)
            .await
            .unwrap(),
        vec![]
    );

    // Keeping 3 drops the oldest three of the (now) six.
    store
        .add_connection_event(c, at(5), "kind-5", &json!({}), 3)
        .await
        .unwrap();
    let kept = store.connection_events(c, None, 10).await.unwrap();
    let kinds: Vec<&str> = kept.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["kind-5", "kind-4", "kind-3"]);
    assert!(kept[0].id > all[0].id);
    let theirs = store.connection_events(other, None, 10).await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].kind, "theirs");
    assert_eq!(theirs[0].detail, json!(null));
}

/// Repeated events count into one line per window, in place, so they cannot push other
/// lines out; a line older than the window is left alone and a new one starts.
pub(crate) async fn suite_repeated_connection_events(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    let rejected = |from: i64, to: i64, count: u64, why: &str| RepeatedConnectionEvent {
        connection_id: c,
        kind: "rejected".into(),
        first_at: at(from),
        last_at: at(to),
        count,
        sample: json!({"error": why}),
    };
    store
        .add_connection_event(c, at(0), "delivered", &json!({"n": 1}), 5)
        .await
        .unwrap();
    store
        .add_repeated_connection_event(&rejected(1, 2, 3, "bad signature"), at(0), 5)
        .await
        .unwrap();
    store
        .add_connection_event(c, at(3), "delivered", &json!({"n": 2}), 5)
        .await
        .unwrap();
    // 10 more batches, more than `keep` lines' worth: all join the line of second 1.
    for i in 0..10 {
        store
            .add_repeated_connection_event(&rejected(4 + i, 5 + i, 100, "stale"), at(1), 5)
            .await
            .unwrap();
    }
    let log = store.connection_events(c, None, 10).await.unwrap();
    let kinds: Vec<&str> = log.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["delivered", "rejected", "delivered"]);
    assert_eq!(log[1].at, at(1));
    assert_eq!(
        log[1].detail,
        json!({"error": "stale", "count": 1003, "first_at": at(1).to_rfc3339(),
               "last_at": at(14).to_rfc3339()})
    );

    // The line started before the window: a new one.
    store
        .add_repeated_connection_event(&rejected(20, 21, 2, "late"), at(2), 5)
        .await
        .unwrap();
    let log = store.connection_events(c, None, 10).await.unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0].kind, "rejected");
    assert_eq!(log[0].at, at(20));
    assert_eq!(log[0].detail["count"], 2);
    assert_eq!(log[2].detail["count"], 1003);
    assert_eq!(
        store.connection_events(other, None, 10).await.unwrap(),
        vec![]
    );

    // New lines still keep the newest `keep`.
    store
        .add_repeated_connection_event(&rejected(30, 30, 1, "x"), at(30), 2)
        .await
        .unwrap();
    assert_eq!(store.connection_events(c, None, 10).await.unwrap().len(), 2);
}

/// A connector's cursor: absent until set, then replaced; per connection.
/// Deliveries that need no handling later (statuses) are recorded as seen: once each,
/// never pending, pruned like handled ones.
pub(crate) async fn suite_inbox_seen(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store
        .inbox_mark_seen(c, "status:w1:read", at(10))
        .await
        .unwrap());
    assert!(!store
        .inbox_mark_seen(c, "status:w1:read", at(11))
        .await
        .unwrap());
    assert!(store
        .inbox_mark_seen(c, "status:w1:delivered", at(10))
        .await
        .unwrap());
    assert!(store
        .inbox_mark_seen(other, "status:w1:read", at(10))
        .await
        .unwrap());
    assert_eq!(store.inbox_pending(c, 10).await.unwrap(), vec![]);
    // A message with an id already seen as a status is not taken for a duplicate of it.
    assert!(store
        .inbox_insert(c, &inbound("w1", "hello"), at(12))
        .await
        .unwrap());
    assert_eq!(store.inbox_pending(c, 10).await.unwrap().len(), 1);
    assert_eq!(store.inbox_prune(at(11)).await.unwrap(), 3);
    assert!(store
        .inbox_mark_seen(c, "status:w1:read", at(20))
        .await
        .unwrap());
}

pub(crate) async fn suite_connector_cursor(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.connector_cursor(c).await.unwrap(), None);
    store.set_connector_cursor(c, "100").await.unwrap();
    assert_eq!(
        store.connector_cursor(c).await.unwrap().as_deref(),
        Some("100")
    );
    store.set_connector_cursor(c, "205").await.unwrap();
    assert_eq!(
        store.connector_cursor(c).await.unwrap().as_deref(),
        Some("205")
    );
    assert_eq!(store.connector_cursor(other).await.unwrap(), None);
}

fn outbox_event(n: u32) -> super::NewOutboxEvent {
    super::NewOutboxEvent {
        msg_id: format!("msg_{n}"),
        event_type: "message.created".into(),
        body: format!(r#"{{"n":{n},"text":"ünïcode"}}"#),
    }
}

/// The webhook outbox delivers each connection's events in order: a claim answers the
/// oldest due events only while the oldest is due, and leases what it answers.
pub(crate) async fn suite_outbox(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.outbox_len(c).await.unwrap(), 0);
    assert_eq!(
        store.outbox_claim(c, at(0), at(60), 10).await.unwrap(),
        vec![]
    );
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(
            store
                .outbox_push(c, &outbox_event(n), at(10 + i64::from(n)))
                .await
                .unwrap(),
        );
    }
    let theirs = store
        .outbox_push(other, &outbox_event(9), at(10))
        .await
        .unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(theirs > ids[2]);
    assert_eq!(store.outbox_len(c).await.unwrap(), 3);
    assert_eq!(store.outbox_len(other).await.unwrap(), 1);

    // Not due before it was pushed.
    assert_eq!(
        store.outbox_claim(c, at(10), at(60), 10).await.unwrap(),
        vec![]
    );
    let claimed = store.outbox_claim(c, at(20), at(60), 2).await.unwrap();
    let entry = |i: usize, attempts, next_attempt_at, last_error: Option<&str>| {
        let n = i as u32 + 1;
        let e = outbox_event(n);
        super::OutboxEntry {
            id: ids[i],
            connection_id: c,
            msg_id: e.msg_id,
            event_type: e.event_type,
            body: e.body,
            attempts,
            next_attempt_at,
            last_error: last_error.map(String::from),
            created_at: at(10 + i64::from(n)),
        }
    };
    assert_eq!(
        claimed,
        vec![entry(0, 0, at(60), None), entry(1, 0, at(60), None)]
    );
    // Leased: the head is not due again before the lease ends, so nothing is.
    assert_eq!(
        store.outbox_claim(c, at(30), at(90), 10).await.unwrap(),
        vec![]
    );

    // A failed attempt blocks the events behind it until it is due again.
    store
        .outbox_retry(ids[0], 1, at(100), "HTTP 503")
        .await
        .unwrap();
    assert_eq!(
        store.outbox_claim(c, at(99), at(150), 10).await.unwrap(),
        vec![],
        "the later events are due, the head is not"
    );
    assert_eq!(
        store.outbox_claim(c, at(100), at(150), 10).await.unwrap(),
        vec![
            entry(0, 1, at(150), Some("HTTP 503")),
            entry(1, 0, at(150), None),
            entry(2, 0, at(150), None),
        ]
    );

    // A claim stops at the first event that is not due.
    store.outbox_done(ids[0]).await.unwrap();
    store
        .outbox_retry(ids[2], 2, at(300), "timeout")
        .await
        .unwrap();
    store
        .outbox_retry(ids[1], 1, at(200), "HTTP 500")
        .await
        .unwrap();
    assert_eq!(
        store.outbox_claim(c, at(250), at(280), 10).await.unwrap(),
        vec![entry(1, 1, at(280), Some("HTTP 500"))]
    );
    assert_eq!(store.outbox_len(c).await.unwrap(), 2);
    store.outbox_done(ids[1]).await.unwrap();
    store.outbox_done(ids[1]).await.unwrap();
    // Unknown events are no error.
    store.outbox_retry(-1, 1, at(0), "gone").await.unwrap();
    assert_eq!(store.outbox_len(c).await.unwrap(), 1);
    assert_eq!(
        store.outbox_claim(c, at(300), at(400), 10).await.unwrap(),
        vec![entry(2, 2, at(400), Some("timeout"))]
    );
    store.outbox_done(ids[2]).await.unwrap();
    assert_eq!(store.outbox_len(c).await.unwrap(), 0);

    // The other connection's queue was never blocked.
    let got = store.outbox_claim(other, at(10), at(60), 10).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].id, got[0].connection_id), (theirs, other));
}

/// The agent answering a connection's customers is its inbound agent, if any.
pub(crate) async fn suite_inbound_agent(store: &dyn Store) {
    use super::AgentChannel;
    let t = tenant("acme", "k");
    store.create_tenant(&t).await.unwrap();
    let (a, b) = (agent(t.id, "a"), agent(t.id, "b"));
    store.create_agent(&a, "def").await.unwrap();
    store.create_agent(&b, "def").await.unwrap();
    let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(store.inbound_agent(c1).await.unwrap(), None);
    store
        .set_agent_channels(
            a.id,
            &[
                AgentChannel {
                    connection_id: c1,
                    inbound: true,
                },
                AgentChannel {
                    connection_id: c2,
                    inbound: false,
                },
            ],
        )
        .await
        .unwrap();
    store
        .set_agent_channels(
            b.id,
            &[AgentChannel {
                connection_id: c1,
                inbound: false,
            }],
        )
        .await
        .unwrap();
    assert_eq!(store.inbound_agent(c1).await.unwrap(), Some(a.id));
    assert_eq!(store.inbound_agent(c2).await.unwrap(), None);
    assert!(store.delete_agent(a.id).await.unwrap());
    assert_eq!(store.inbound_agent(c1).await.unwrap(), None);
}

/// Deleting a connection deletes its connector state, and only its own.
pub(crate) async fn suite_delete_connection_state(store: &dyn Store) {
    use super::ChannelSession;
    use crate::connection::{ConnectionRecord, ConnectionStatus};
    use crate::inbound::Platform;
    let t = tenant("acme", "k");
    store.create_tenant(&t).await.unwrap();
    let make = |name: &str| ConnectionRecord {
        id: Uuid::new_v4(),
        tenant_id: t.id,
        name: name.into(),
        platform: Platform::named("webhook"),
        description: None,
        enabled: true,
        status: ConnectionStatus::Connected,
        status_error: None,
        status_at: at(0),
        config: serde_json::Map::new(),
        secrets_sealed: "v1:c2VhbGVk".into(),
        advanced: json!({}),
        rate_limits: json!({}),
        created_at: at(0),
        updated_at: at(0),
    };
    let (gone, kept) = (make("gone"), make("kept"));
    let session = ChannelSession {
        session_id: Uuid::new_v4(),
        started_at: at(1),
    };
    let m = inbound("d1", "hello");
    for c in [&gone, &kept] {
        store.put_connection(c).await.unwrap();
        assert!(store.inbox_insert(c.id, &m, at(2)).await.unwrap());
        store
            .set_channel_session(c.id, "chat:user", &session)
            .await
            .unwrap();
        store
            .add_connection_event(c.id, at(3), "delivered", &json!({}), 10)
            .await
            .unwrap();
        store.set_connector_cursor(c.id, "7").await.unwrap();
        store
            .outbox_push(c.id, &outbox_event(1), at(4))
            .await
            .unwrap();
    }

    assert!(store.delete_connection(gone.id).await.unwrap());
    let c = gone.id;
    assert_eq!(store.inbox_pending(c, 10).await.unwrap(), vec![]);
    assert!(
        store.inbox_insert(c, &m, at(5)).await.unwrap(),
        "its dedup ids are forgotten"
    );
    assert_eq!(store.channel_session(c, "chat:user").await.unwrap(), None);
    assert_eq!(store.connection_events(c, None, 10).await.unwrap(), vec![]);
    assert_eq!(store.connector_cursor(c).await.unwrap(), None);
    assert_eq!(store.outbox_len(c).await.unwrap(), 0);

    let c = kept.id;
    assert_eq!(store.inbox_pending(c, 10).await.unwrap(), vec![m]);
    assert_eq!(
        store.channel_session(c, "chat:user").await.unwrap(),
        Some(session)
    );
    assert_eq!(store.connection_events(c, None, 10).await.unwrap().len(), 1);
    assert_eq!(
        store.connector_cursor(c).await.unwrap().as_deref(),
        Some("7")
    );
    assert_eq!(store.outbox_len(c).await.unwrap(), 1);
}

/// Claims racing for one connection's queue: exactly one of them gets the events.
pub(crate) async fn suite_concurrent_outbox_claim(store: &dyn Store) {
    const CLAIMS: usize = 8;
    let c = Uuid::new_v4();
    // Open the pool's connections first, so the claims really overlap.
    let warm = (0..CLAIMS).map(|_| store.outbox_len(c));
    for n in futures::future::join_all(warm).await {
        assert_eq!(n.unwrap(), 0);
    }
    for round in 0..20 {
        for n in 1..=3 {
            store
                .outbox_push(c, &outbox_event(n), at(round))
                .await
                .unwrap();
        }
        let claims = (0..CLAIMS).map(|_| store.outbox_claim(c, at(round), at(60), 10));
        let got: Vec<Vec<super::OutboxEntry>> = futures::future::join_all(claims)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let winners: Vec<&Vec<super::OutboxEntry>> = got.iter().filter(|g| !g.is_empty()).collect();
        assert_eq!(winners.len(), 1, "round {round}");
        assert_eq!(winners[0].len(), 3);
        for e in winners[0] {
            store.outbox_done(e.id).await.unwrap();
        }
    }
}

fn campaign_record(tenant: TenantId, name: &str, created: i64) -> CampaignRecord {
    let mut campaign = Campaign::new(tenant, name, at(created));
    campaign.description = "Payment reminders".into();
    campaign.timezone = "Europe/Berlin".into();
    campaign.updated_at = at(created + 1);
    CampaignRecord {
        campaign,
        fields: vec![DataField {
            title: "Due date".into(),
            name: "due_date".into(),
            description: "When the payment is due".into(),
            field_type: FieldType::Date,
            level: FieldLevel::Participant,
            import: true,
            required: true,
        }],
    }
}

fn flow(campaign: CampaignId, name: &str) -> FlowRecord {
    FlowRecord {
        campaign_id: campaign,
        name: name.into(),
        format: "yaml".into(),
        definition: format!("name: {name}\nnodes: []\n"),
        active: false,
        updated_at: at(3),
    }
}

fn upload(campaign: CampaignId, created: i64) -> UploadRecord {
    UploadRecord {
        id: Uuid::new_v4(),
        campaign_id: campaign,
        status: UploadStatus::Running,
        error: None,
        total: 0,
        created: 0,
        updated: 0,
        failed: 0,
        errors: Vec::new(),
        created_at: at(created),
        finished_at: None,
    }
}

/// A checked participant: `customer` must carry an identity (it makes the key), as
/// `ParticipantInput::check` guarantees.
fn checked(customer: serde_json::Value, participant: serde_json::Value) -> CheckedParticipant {
    let customer = customer.as_object().unwrap().clone();
    CheckedParticipant {
        key: CustomerKey::from_attributes(&customer).unwrap(),
        customer,
        participant: participant.as_object().unwrap().clone(),
        timezone: None,
        object_id: None,
    }
}

fn with_object(mut p: CheckedParticipant, object_id: &str) -> CheckedParticipant {
    p.object_id = Some(object_id.into());
    p
}

fn attrs(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

/// A tenant's campaign, stored.
async fn stored_campaign(store: &dyn Store, tenant: TenantId, name: &str) -> CampaignId {
    let c = campaign_record(tenant, name, 1);
    store.put_campaign(&c).await.unwrap();
    c.campaign.id
}

/// Campaigns round-trip whole, list oldest first per tenant, are replaced whole, and take
/// their flows, participants and uploads with them when deleted; customers stay.
pub(crate) async fn suite_campaigns(store: &dyn Store) {
    let (t, other_t) = (Uuid::new_v4(), Uuid::new_v4());
    let newer = campaign_record(t, "newer", 20);
    let older = campaign_record(t, "older", 10);
    let elsewhere = campaign_record(other_t, "elsewhere", 5);
    for c in [&newer, &older, &elsewhere] {
        store.put_campaign(c).await.unwrap();
    }
    assert_eq!(
        store.get_campaign(newer.campaign.id).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(store.get_campaign(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store.list_campaigns(t).await.unwrap(),
        vec![older.clone(), newer.clone()]
    );
    assert_eq!(
        store.list_campaigns(other_t).await.unwrap(),
        vec![elsewhere.clone()]
    );
    assert_eq!(store.list_campaigns(Uuid::new_v4()).await.unwrap(), vec![]);

    let mut changed = newer.clone();
    changed.campaign.status = CampaignStatus::Running;
    changed.campaign.name = "renamed".into();
    changed.fields.clear();
    store.put_campaign(&changed).await.unwrap();
    assert_eq!(
        store.get_campaign(newer.campaign.id).await.unwrap(),
        Some(changed.clone())
    );

    // Everything that hangs off both campaigns of t.
    let (gone, kept) = (changed.campaign.id, older.campaign.id);
    let mut customer_ids = Vec::new();
    for c in [gone, kept] {
        store.put_flow(&flow(c, "main")).await.unwrap();
        let u = upload(c, 30);
        store.put_upload(&u).await.unwrap();
        let done = store
            .upsert_participants(
                t,
                c,
                Some(u.id),
                &[checked(json!({"external_id": "shared"}), json!({"n": 1}))],
                at(40),
            )
            .await
            .unwrap();
        customer_ids.push(done[0].customer_id);
    }
    assert_eq!(
        customer_ids[0], customer_ids[1],
        "one customer, two campaigns"
    );

    assert!(store.delete_campaign(gone).await.unwrap());
    assert!(!store.delete_campaign(gone).await.unwrap());
    assert_eq!(store.get_campaign(gone).await.unwrap(), None);
    assert_eq!(store.list_flows(gone).await.unwrap(), vec![]);
    assert_eq!(store.list_uploads(gone).await.unwrap(), vec![]);
    let all = ParticipantQuery {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list_participants(gone, &all).await.unwrap().1, 0);
    assert!(store.get_customer(customer_ids[0]).await.unwrap().is_some());
    assert_eq!(store.list_customers(t, 0, 10).await.unwrap().1, 1);

    assert_eq!(store.list_campaigns(t).await.unwrap(), vec![older]);
    assert_eq!(store.list_flows(kept).await.unwrap().len(), 1);
    assert_eq!(store.list_uploads(kept).await.unwrap().len(), 1);
    assert_eq!(store.list_participants(kept, &all).await.unwrap().1, 1);
}

/// Flows: one per name and campaign, replaced whole, listed by name.
pub(crate) async fn suite_flows(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (b, a, z) = (flow(c, "b-flow"), flow(c, "a-flow"), flow(c, "Z-flow"));
    for f in [&b, &a, &z] {
        store.put_flow(f).await.unwrap();
    }
    store.put_flow(&flow(other, "a-flow")).await.unwrap();
    assert_eq!(store.get_flow(c, "a-flow").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_flow(c, "nope").await.unwrap(), None);
    assert_eq!(
        store.list_flows(c).await.unwrap(),
        vec![z.clone(), a.clone(), b.clone()],
        "by name, in byte order"
    );

    let mut changed = a.clone();
    changed.format = "json".into();
    changed.definition = "{\"name\": \"a-flow\"}".into();
    changed.active = true;
    changed.updated_at = at(9);
    store.put_flow(&changed).await.unwrap();
    assert_eq!(store.get_flow(c, "a-flow").await.unwrap(), Some(changed));
    assert_eq!(store.list_flows(c).await.unwrap().len(), 3);

    assert!(store.delete_flow(c, "a-flow").await.unwrap());
    assert!(!store.delete_flow(c, "a-flow").await.unwrap());
    assert_eq!(store.list_flows(c).await.unwrap(), vec![z, b]);
    assert_eq!(store.list_flows(other).await.unwrap().len(), 1);
}

/// The upsert rules: customers found by their key's column (or created), attributes
/// merged, identity columns following the attributes, one participant per customer and
/// object, `created` exact, the upload recorded.
pub(crate) async fn suite_upsert_participants(store: &dyn Store) {
    let t = Uuid::new_v4();
    let (c1, c2) = (
        stored_campaign(store, t, "one").await,
        stored_campaign(store, t, "two").await,
    );
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());

    // New customer, new participant, every kind of value.
    let mut first = checked(
        json!({"external_id": "e1", "email": "a@x.io", "name": "Alex"}),
        json!({"due_date": "2026-06-30", "amount": 5, "ratio": 2.5, "paid": false}),
    );
    first.timezone = Some(chrono_tz::Tz::Europe__London);
    let r = store
        .upsert_participants(t, c1, Some(u1), &[first.clone()], at(100))
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].created);
    let (customer_id, participant_id) = (r[0].customer_id, r[0].participant_id);
    assert_eq!(
        store.get_customer(customer_id).await.unwrap(),
        Some(CustomerRecord {
            id: customer_id,
            tenant_id: t,
            external_id: Some("e1".into()),
            email: Some("a@x.io".into()),
            phone: None,
            attributes: first.customer.clone(),
            created_at: at(100),
            updated_at: at(100),
        })
    );
    assert_eq!(
        store.get_participant(participant_id).await.unwrap(),
        Some(ParticipantRecord {
            id: participant_id,
            campaign_id: c1,
            customer_id,
            object_id: None,
            attributes: first.participant.clone(),
            timezone: Some("Europe/London".into()),
            upload_id: Some(u1),
            pending: Some(PendingTrigger::Created),
            result: serde_json::Map::new(),
            result_at: None,
            created_at: at(100),
            updated_at: at(100),
        })
    );
    assert_eq!(store.get_participant(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(store.get_customer(Uuid::new_v4()).await.unwrap(), None);

    // The same key again: found by external_id although the e-mail changed; given values
    // replace, absent ones stay; no zone given keeps the stored one.
    let again = checked(
        json!({"external_id": "e1", "email": "b@x.io", "city": "Paris"}),
        json!({"amount": 7}),
    );
    let r = store
        .upsert_participants(t, c1, Some(u2), &[again], at(200))
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![Upserted {
            participant_id,
            customer_id,
            created: false
        }]
    );
    let customer = store.get_customer(customer_id).await.unwrap().unwrap();
    assert_eq!(
        customer.attributes,
        attrs(json!({"external_id": "e1", "email": "b@x.io", "name": "Alex", "city": "Paris"}))
    );
    assert_eq!(customer.email.as_deref(), Some("b@x.io"), "columns follow");
    assert_eq!(
        (customer.created_at, customer.updated_at),
        (at(100), at(200))
    );
    let p = store
        .get_participant(participant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        p.attributes,
        attrs(json!({"due_date": "2026-06-30", "amount": 7, "ratio": 2.5, "paid": false}))
    );
    assert_eq!(p.timezone.as_deref(), Some("Europe/London"));
    assert_eq!(p.upload_id, Some(u2), "the last upload that touched it");
    assert_eq!((p.created_at, p.updated_at), (at(100), at(200)));

    // By e-mail when there is no external id (the new address finds it, and the phone it
    // brings becomes the phone column); then by that phone.
    let by_email = checked(json!({"email": "b@x.io", "phone": "+15550001"}), json!({}));
    let r = store
        .upsert_participants(t, c1, None, &[by_email], at(300))
        .await
        .unwrap();
    assert_eq!((r[0].customer_id, r[0].created), (customer_id, false));
    let mut by_phone = checked(json!({"phone": "+15550001", "name": "Al"}), json!({}));
    by_phone.timezone = Some(chrono_tz::Tz::America__New_York);
    let r = store
        .upsert_participants(t, c1, Some(u1), &[by_phone], at(400))
        .await
        .unwrap();
    assert_eq!((r[0].customer_id, r[0].created), (customer_id, false));
    let customer = store.get_customer(customer_id).await.unwrap().unwrap();
    assert_eq!(customer.phone.as_deref(), Some("+15550001"));
    assert_eq!(customer.attributes["name"], json!("Al"));
    let p = store
        .get_participant(participant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.timezone.as_deref(), Some("America/New_York"));
    assert_eq!(p.upload_id, Some(u1));

    // The old address finds nobody any more: a new customer.
    let old_email = checked(json!({"email": "a@x.io"}), json!({}));
    let r = store
        .upsert_participants(t, c1, Some(u1), &[old_email], at(500))
        .await
        .unwrap();
    assert!(r[0].created);
    assert_ne!(r[0].customer_id, customer_id);

    // One participant per object: two loans, then the first again.
    let loan =
        |id: &str, n: i64| with_object(checked(json!({"external_id": "e1"}), json!({"n": n})), id);
    let r = store
        .upsert_participants(
            t,
            c1,
            None,
            &[loan("loan-1", 1), loan("loan-2", 2)],
            at(600),
        )
        .await
        .unwrap();
    assert!(r.iter().all(|u| u.created && u.customer_id == customer_id));
    assert_ne!(r[0].participant_id, r[1].participant_id);
    assert_ne!(r[0].participant_id, participant_id);
    let loan_1 = r[0].participant_id;
    let r = store
        .upsert_participants(t, c1, None, &[loan("loan-1", 3)], at(700))
        .await
        .unwrap();
    assert_eq!((r[0].participant_id, r[0].created), (loan_1, false));
    let p = store.get_participant(loan_1).await.unwrap().unwrap();
    assert_eq!(p.object_id.as_deref(), Some("loan-1"));
    assert_eq!(p.attributes, attrs(json!({"n": 3})));

    // The same customer in another campaign: a participant of its own, no new customer.
    let customers_before = store.list_customers(t, 0, 100).await.unwrap().1;
    let r = store
        .upsert_participants(
            t,
            c2,
            None,
            &[checked(json!({"external_id": "e1"}), json!({}))],
            at(800),
        )
        .await
        .unwrap();
    assert!(r[0].created);
    assert_eq!(r[0].customer_id, customer_id);
    assert_eq!(
        store.list_customers(t, 0, 100).await.unwrap().1,
        customers_before
    );
    // Another tenant with the same external id has a customer of its own.
    let other_t = Uuid::new_v4();
    let c3 = stored_campaign(store, other_t, "three").await;
    let r = store
        .upsert_participants(
            other_t,
            c3,
            None,
            &[checked(json!({"external_id": "e1"}), json!({}))],
            at(800),
        )
        .await
        .unwrap();
    assert_ne!(r[0].customer_id, customer_id);

    // An unknown campaign, or one of another tenant, is a Conflict.
    let stray = [checked(json!({"external_id": "e1"}), json!({}))];
    assert!(is_conflict(
        store
            .upsert_participants(t, Uuid::new_v4(), None, &stray, at(900))
            .await
    ));
    assert!(is_conflict(
        store
            .upsert_participants(other_t, c1, None, &stray, at(900))
            .await
    ));
    assert_eq!(
        store
            .upsert_participants(t, Uuid::new_v4(), None, &[], at(900))
            .await
            .unwrap(),
        vec![]
    );
}

/// Inputs of one batch see the ones before them, exactly as if upserted one by one.
pub(crate) async fn suite_upsert_within_a_batch(store: &dyn Store) {
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "batch").await;

    // A key repeated: created, then updated twice, the later values winning. The second
    // input finds the customer the first one created, by the e-mail it brought.
    let r = store
        .upsert_participants(
            t,
            c,
            None,
            &[
                checked(
                    json!({"external_id": "e9", "email": "z@x.io"}),
                    json!({"v": 1}),
                ),
                checked(json!({"email": "z@x.io", "name": "Zoe"}), json!({"w": 2})),
                checked(json!({"external_id": "e9"}), json!({"v": 3})),
            ],
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(r.len(), 3);
    assert!(r[0].created && !r[1].created && !r[2].created);
    assert!(r.iter().all(|u| u.participant_id == r[0].participant_id));
    assert!(r.iter().all(|u| u.customer_id == r[0].customer_id));
    let p = store
        .get_participant(r[0].participant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.attributes, attrs(json!({"v": 3, "w": 2})));
    let customer = store.get_customer(r[0].customer_id).await.unwrap().unwrap();
    assert_eq!(
        customer.attributes,
        attrs(json!({"external_id": "e9", "email": "z@x.io", "name": "Zoe"}))
    );

    // An existing customer changing its e-mail, then found by the new one; a later new
    // customer with that e-mail is another profile.
    let r = store
        .upsert_participants(
            t,
            c,
            None,
            &[
                checked(json!({"external_id": "e9", "email": "new@x.io"}), json!({})),
                checked(json!({"email": "new@x.io"}), json!({"via": "email"})),
                checked(
                    json!({"external_id": "e10", "email": "new@x.io"}),
                    json!({}),
                ),
                checked(json!({"email": "z@x.io"}), json!({})),
            ],
            at(20),
        )
        .await
        .unwrap();
    let e9 = customer.id;
    assert_eq!(
        r.iter()
            .map(|u| (u.customer_id == e9, u.created))
            .collect::<Vec<_>>(),
        vec![(true, false), (true, false), (false, true), (false, true)]
    );
    assert_ne!(r[2].customer_id, r[3].customer_id);
    let p = store
        .get_participant(r[1].participant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.attributes["via"], json!("email"));

    // Many objects of one customer, and a batch of them repeated.
    let objects: Vec<CheckedParticipant> = (0..5)
        .map(|i| {
            with_object(
                checked(json!({"phone": "+15550100"}), json!({"i": i})),
                &format!("o{}", i % 3),
            )
        })
        .collect();
    let r = store
        .upsert_participants(t, c, None, &objects, at(30))
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|u| u.created).collect::<Vec<_>>(),
        vec![true, true, true, false, false]
    );
    assert_eq!(r[0].participant_id, r[3].participant_id);
    assert_eq!(r[1].participant_id, r[4].participant_id);
    let p = store
        .get_participant(r[0].participant_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.attributes, attrs(json!({"i": 3})));
    let r = store
        .upsert_participants(t, c, None, &objects, at(40))
        .await
        .unwrap();
    assert!(r.iter().all(|u| !u.created));
}

/// Listing: oldest first, the filters combined with AND, paging with the total of all
/// matches.
pub(crate) async fn suite_list_participants(store: &dyn Store) {
    let t = Uuid::new_v4();
    let (c, other) = (
        stored_campaign(store, t, "listed").await,
        stored_campaign(store, t, "other").await,
    );
    let (u1, u2) = (Uuid::new_v4(), Uuid::new_v4());
    let person = |i: u32| {
        checked(
            json!({"external_id": format!("e{i}"), "email": format!("p{i}@x.io"),
                   "phone": format!("+1555000{i:04}")}),
            json!({"i": i}),
        )
    };
    let first = store
        .upsert_participants(t, c, Some(u1), &[person(1), person(2), person(3)], at(10))
        .await
        .unwrap();
    let second = store
        .upsert_participants(t, c, Some(u2), &[person(4), person(5)], at(20))
        .await
        .unwrap();
    // Person 2 updated by the second upload; still created at 10.
    let r = store
        .upsert_participants(t, c, Some(u2), &[person(2)], at(30))
        .await
        .unwrap();
    assert!(!r[0].created);
    // The same people in another campaign do not show.
    store
        .upsert_participants(t, other, Some(u1), &[person(1), person(4)], at(10))
        .await
        .unwrap();

    let ids = |page: &[ParticipantRecord]| page.iter().map(|p| p.id).collect::<Vec<_>>();
    let list = |q: ParticipantQuery| async move {
        let (page, total) = store.list_participants(c, &q).await.unwrap();
        (ids(&page), total)
    };
    let q = |limit| ParticipantQuery {
        limit,
        ..Default::default()
    };
    let all: Vec<ParticipantId> = first
        .iter()
        .chain(&second)
        .map(|u| u.participant_id)
        .collect();
    assert_eq!(list(q(100)).await, (all.clone(), 5));
    assert_eq!(
        list(ParticipantQuery { offset: 1, ..q(2) }).await,
        (all[1..3].to_vec(), 5)
    );
    assert_eq!(
        list(ParticipantQuery { offset: 4, ..q(10) }).await,
        (all[4..].to_vec(), 5)
    );
    assert_eq!(list(q(0)).await, (vec![], 5));
    assert_eq!(
        list(ParticipantQuery {
            offset: 9,
            ..q(u64::MAX)
        })
        .await,
        (vec![], 5)
    );

    assert_eq!(
        list(ParticipantQuery {
            external_id: Some("e3".into()),
            ..q(10)
        })
        .await,
        (vec![all[2]], 1)
    );
    assert_eq!(
        list(ParticipantQuery {
            email: Some("p4@x.io".into()),
            ..q(10)
        })
        .await,
        (vec![all[3]], 1)
    );
    assert_eq!(
        list(ParticipantQuery {
            phone: Some("+15550000005".into()),
            ..q(10)
        })
        .await,
        (vec![all[4]], 1)
    );
    assert_eq!(
        list(ParticipantQuery {
            email: Some("nobody@x.io".into()),
            ..q(10)
        })
        .await,
        (vec![], 0)
    );
    assert_eq!(
        list(ParticipantQuery {
            upload_id: Some(u1),
            ..q(10)
        })
        .await,
        (vec![all[0], all[2]], 2)
    );
    assert_eq!(
        list(ParticipantQuery {
            upload_id: Some(u2),
            ..q(10)
        })
        .await,
        (vec![all[1], all[3], all[4]], 3)
    );
    // The range includes its start and excludes its end.
    assert_eq!(
        list(ParticipantQuery {
            created_from: Some(at(20)),
            ..q(10)
        })
        .await,
        (all[3..].to_vec(), 2)
    );
    assert_eq!(
        list(ParticipantQuery {
            created_to: Some(at(20)),
            ..q(10)
        })
        .await,
        (all[..3].to_vec(), 3)
    );
    assert_eq!(
        list(ParticipantQuery {
            created_from: Some(at(10)),
            created_to: Some(at(11)),
            upload_id: Some(u2),
            ..q(10)
        })
        .await,
        (vec![all[1]], 1)
    );
    assert_eq!(
        list(ParticipantQuery {
            external_id: Some("e1".into()),
            upload_id: Some(u2),
            ..q(10)
        })
        .await,
        (vec![], 0)
    );
    let (page, _) = store.list_participants(c, &q(1)).await.unwrap();
    assert_eq!(page[0].attributes, attrs(json!({"i": 1})));
    assert_eq!(
        store
            .list_participants(Uuid::new_v4(), &q(10))
            .await
            .unwrap(),
        (vec![], 0)
    );
}

/// Deleting a participant keeps its customer; the customer coming back makes a new one.
pub(crate) async fn suite_delete_participant(store: &dyn Store) {
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "c").await;
    let p = checked(json!({"email": "d@x.io", "name": "Dee"}), json!({"n": 1}));
    let r = store
        .upsert_participants(t, c, None, std::slice::from_ref(&p), at(1))
        .await
        .unwrap();
    assert!(store.delete_participant(r[0].participant_id).await.unwrap());
    assert!(!store.delete_participant(r[0].participant_id).await.unwrap());
    assert_eq!(
        store.get_participant(r[0].participant_id).await.unwrap(),
        None
    );
    let customer = store.get_customer(r[0].customer_id).await.unwrap().unwrap();
    assert_eq!(customer.attributes["name"], json!("Dee"));

    let back = store
        .upsert_participants(t, c, None, &[p], at(2))
        .await
        .unwrap();
    assert!(back[0].created);
    assert_eq!(back[0].customer_id, r[0].customer_id);
    assert_ne!(back[0].participant_id, r[0].participant_id);
}

/// Customers page oldest first, per tenant, with their total.
pub(crate) async fn suite_customers(store: &dyn Store) {
    let (t, other_t) = (Uuid::new_v4(), Uuid::new_v4());
    let c = stored_campaign(store, t, "c").await;
    let oc = stored_campaign(store, other_t, "oc").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = store
            .upsert_participants(
                t,
                c,
                None,
                &[checked(json!({"external_id": format!("k{i}")}), json!({}))],
                at(i),
            )
            .await
            .unwrap();
        ids.push(r[0].customer_id);
    }
    store
        .upsert_participants(
            other_t,
            oc,
            None,
            &[checked(json!({"external_id": "k0"}), json!({}))],
            at(0),
        )
        .await
        .unwrap();
    let page = |offset, limit| async move {
        let (page, total) = store.list_customers(t, offset, limit).await.unwrap();
        (page.iter().map(|c| c.id).collect::<Vec<_>>(), total)
    };
    assert_eq!(page(0, 100).await, (ids.clone(), 5));
    assert_eq!(page(1, 2).await, (ids[1..3].to_vec(), 5));
    assert_eq!(page(4, 10).await, (ids[4..].to_vec(), 5));
    assert_eq!(page(10, 10).await, (vec![], 5));
    assert_eq!(page(0, 0).await, (vec![], 5));
    let (first, _) = store.list_customers(t, 0, 1).await.unwrap();
    assert_eq!(first[0].external_id.as_deref(), Some("k0"));
    assert_eq!(first[0].tenant_id, t);
    assert_eq!(store.list_customers(other_t, 0, 10).await.unwrap().1, 1);
    assert_eq!(
        store.list_customers(Uuid::new_v4(), 0, 10).await.unwrap(),
        (vec![], 0)
    );
}

/// Uploads round-trip whole, are replaced as they progress, and list newest first.
pub(crate) async fn suite_uploads(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (u1, u2, u3) = (upload(c, 10), upload(c, 30), upload(c, 20));
    for u in [&u1, &u2, &u3] {
        store.put_upload(u).await.unwrap();
    }
    store.put_upload(&upload(other, 40)).await.unwrap();
    assert_eq!(store.get_upload(u1.id).await.unwrap(), Some(u1.clone()));
    assert_eq!(store.get_upload(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store.list_uploads(c).await.unwrap(),
        vec![u2.clone(), u3.clone(), u1.clone()]
    );

    let mut done = u1.clone();
    done.status = UploadStatus::Failed;
    done.error = Some("header: column \"x\" is unknown".into());
    done.total = 10;
    done.created = 6;
    done.updated = 2;
    done.failed = 2;
    done.errors = vec![
        UploadRowError {
            row: 3,
            reason: "email: \"nope\" is not an e-mail address".into(),
        },
        UploadRowError {
            row: 9,
            reason: "due_date: is required".into(),
        },
    ];
    done.finished_at = Some(at(50));
    store.put_upload(&done).await.unwrap();
    assert_eq!(store.get_upload(u1.id).await.unwrap(), Some(done.clone()));
    assert_eq!(store.list_uploads(c).await.unwrap(), vec![u2, u3, done]);
    assert_eq!(store.list_uploads(other).await.unwrap().len(), 1);
}

/// A large import in batches of 2,000: every row counted once, and a repeat of a batch
/// updates instead of creating.
pub(crate) async fn suite_upsert_many(store: &dyn Store) {
    const ROWS: usize = 20_000;
    const BATCH: usize = 2_000;
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "big").await;
    let u = Uuid::new_v4();
    let row = |i: usize| {
        checked(
            json!({"external_id": format!("cust-{i}"), "email": format!("c{i}@x.io"),
                   "phone": format!("+1555{i:07}")}),
            json!({"amount": i, "due_date": "2026-06-30"}),
        )
    };
    let rows: Vec<CheckedParticipant> = (0..ROWS).map(row).collect();
    let mut created = 0;
    for batch in rows.chunks(BATCH) {
        let r = store
            .upsert_participants(t, c, Some(u), batch, at(1))
            .await
            .unwrap();
        assert_eq!(r.len(), batch.len());
        created += r.iter().filter(|u| u.created).count();
    }
    assert_eq!(created, ROWS);
    let q = ParticipantQuery {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(store.list_participants(c, &q).await.unwrap().1, ROWS as u64);
    let by_upload = ParticipantQuery {
        upload_id: Some(u),
        ..q.clone()
    };
    assert_eq!(
        store.list_participants(c, &by_upload).await.unwrap().1,
        ROWS as u64
    );
    assert_eq!(store.list_customers(t, 0, 1).await.unwrap().1, ROWS as u64);

    let r = store
        .upsert_participants(t, c, None, &rows[..BATCH], at(2))
        .await
        .unwrap();
    assert!(r.iter().all(|u| !u.created));
    assert_eq!(store.list_participants(c, &q).await.unwrap().1, ROWS as u64);
    assert_eq!(
        store.list_participants(c, &by_upload).await.unwrap().1,
        (ROWS - BATCH) as u64
    );
}

/// Upserts racing on the same new customers: each customer and participant is created once,
/// and exactly one of the racers reports each participant as created.
pub(crate) async fn suite_concurrent_upserts(store: &dyn Store) {
    const RACERS: usize = 4;
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "race").await;
    let batch: Vec<CheckedParticipant> = (0..50)
        .map(|i| checked(json!({"external_id": format!("r{i}")}), json!({"i": i})))
        .collect();
    let racers = (0..RACERS).map(|_| store.upsert_participants(t, c, None, &batch, at(1)));
    let results: Vec<Vec<Upserted>> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for i in 0..batch.len() {
        let ids: std::collections::HashSet<_> =
            results.iter().map(|r| r[i].participant_id).collect();
        assert_eq!(ids.len(), 1, "row {i}");
        assert_eq!(
            results.iter().filter(|r| r[i].created).count(),
            1,
            "row {i}"
        );
    }
    assert_eq!(store.list_customers(t, 0, 1).await.unwrap().1, 50);
    let q = ParticipantQuery {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(store.list_participants(c, &q).await.unwrap().1, 50);
}

fn log_line(connection: Uuid, n: i64, kind: &str) -> LogLine {
    LogLine {
        event: NewConnectionEvent {
            connection_id: connection,
            at: at(n),
            kind: kind.into(),
            detail: json!({ "n": n }),
        },
        keep: 100,
    }
}

/// Connections' writes in one transaction with sessions' writes: a delivery's line goes in
/// with a new delivery only, a fenced session's writes are left out while the
/// connections' commit, and a batch's repeated lines count together.
pub(crate) async fn suite_connection_writes_with_turns(store: &dyn Store) {
    let (t, a, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let known = inbound("known", "before");
    store.inbox_insert(c, &known, at(1)).await.unwrap();
    let claimed = session(t, a, "u-claimed", 0);
    commit(store, &[w_session(&claimed)]).await.unwrap();
    store.claim_session(claimed.id).await.unwrap().unwrap();

    let s = session(t, a, "u1", 0);
    let human = message(s.id, 1, Role::Human, "hello");
    let mut sessions = grouped(&[w_session(&s), w_message(&human)]);
    sessions.extend(grouped(&[w_message(&message(
        claimed.id,
        1,
        Role::Human,
        "stale",
    ))]));
    let delivery = |m: &crate::inbound::InboundMessage, n: i64| ConnectionWrite::Inbox {
        connection: c,
        message: Box::new(m.clone()),
        at: at(n),
        line: Some(log_line(c, n, "delivery")),
    };
    let rejected = |n: i64| ConnectionWrite::Repeated {
        event: RepeatedConnectionEvent {
            connection_id: c,
            kind: "rejected".into(),
            first_at: at(n),
            last_at: at(n),
            count: 1,
            sample: json!({ "n": n }),
        },
        since: at(0),
        keep: 100,
    };
    let fresh = inbound("new", "now");
    let connections = [
        delivery(&fresh, 2),
        delivery(&fresh, 3),
        delivery(&known, 4),
        rejected(5),
        ConnectionWrite::Done {
            connection: c,
            dedup_id: "known".into(),
        },
        rejected(6),
        ConnectionWrite::Line(log_line(c, 7, "reply")),
    ];
    let done = store.commit_all(&sessions, &connections).await.unwrap();
    assert_eq!(done.fenced, [claimed.id]);
    assert_eq!(done.applied, [true, false, false, true, true, true, true]);
    assert_eq!(store.load_messages(s.id).await.unwrap(), [human]);
    assert!(store.load_messages(claimed.id).await.unwrap().is_empty());
    assert_eq!(store.inbox_pending(c, 10).await.unwrap(), [fresh]);
    let lines = store.connection_events(c, None, 10).await.unwrap();
    let kinds: Vec<&str> = lines.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["rejected", "reply", "delivery"]);
    assert_eq!(lines[0].detail["count"], 2);
    assert_eq!(lines[0].detail["n"], 6);
    assert_eq!(lines[2].detail["n"], 2);

    // Nothing to write is no transaction at all, and no error.
    assert_eq!(
        store.commit_all(&[], &[]).await.unwrap(),
        super::Committed::default()
    );
}

pub(crate) async fn suite_connector_batches(store: &dyn Store) {
    let (c, other) = (Uuid::new_v4(), Uuid::new_v4());
    let (m1, m2) = (inbound("b1", "first"), inbound("b2", "second"));
    // A batch across connections, with a duplicate inside it.
    let fresh = store
        .inbox_insert_many(
            &[
                (c, m1.clone()),
                (other, m1.clone()),
                (c, m1.clone()),
                (c, m2.clone()),
            ],
            at(10),
        )
        .await
        .unwrap();
    assert_eq!(fresh, [true, true, false, true]);
    assert_eq!(
        store.inbox_pending(c, 10).await.unwrap(),
        vec![m1.clone(), m2.clone()]
    );
    store
        .inbox_done_many(&[(c, "b1".into()), (other, "b1".into())])
        .await
        .unwrap();
    assert_eq!(store.inbox_pending(c, 10).await.unwrap(), vec![m2]);
    assert_eq!(store.inbox_pending(other, 10).await.unwrap(), vec![]);

    // Events of two connections in one batch: in order, each log bounded on its own.
    let event = |conn: Uuid, n: i64| NewConnectionEvent {
        connection_id: conn,
        at: at(n),
        kind: format!("k{n}"),
        detail: serde_json::json!({"n": n}),
    };
    let batch: Vec<_> = (0..5)
        .map(|n| event(c, n))
        .chain([event(other, 100)])
        .collect();
    store.add_connection_events(&batch, 3).await.unwrap();
    let kinds = |events: Vec<ConnectionEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.kind).collect()
    };
    assert_eq!(
        kinds(store.connection_events(c, None, 10).await.unwrap()),
        ["k4", "k3", "k2"]
    );
    assert_eq!(
        kinds(store.connection_events(other, None, 10).await.unwrap()),
        ["k100"]
    );
}

/// A participant the progress suites give communications and steps to.
#[derive(Debug, Clone, Copy)]
struct Enrolled {
    tenant: TenantId,
    campaign: CampaignId,
    participant: ParticipantId,
    customer: CustomerId,
}

impl Enrolled {
    /// Upserts the participant (`customer` must carry an identity) at `at(secs)`.
    async fn new(
        store: &dyn Store,
        tenant: TenantId,
        campaign: CampaignId,
        customer: serde_json::Value,
        participant: serde_json::Value,
        secs: i64,
    ) -> Enrolled {
        let r = store
            .upsert_participants(
                tenant,
                campaign,
                None,
                &[checked(customer, participant)],
                at(secs),
            )
            .await
            .unwrap();
        Enrolled {
            tenant,
            campaign,
            participant: r[0].participant_id,
            customer: r[0].customer_id,
        }
    }

    /// A Planned telegram communication created at `at(created)`, starting at
    /// `at(start)`, never canceled.
    fn communication(&self, name: &str, created: i64, start: i64) -> CommunicationRecord {
        CommunicationRecord {
            id: Uuid::now_v7(),
            tenant_id: self.tenant,
            campaign_id: self.campaign,
            participant_id: self.participant,
            flow: "main".into(),
            node: format!("start_{name}"),
            name: name.into(),
            channel: Channel::Telegram,
            agent_id: Uuid::new_v4(),
            connection_id: Some(Uuid::new_v4()),
            status: CommunicationStatus::Planned,
            reason: None,
            start_at: at(start),
            cancel_at: None,
            session_id: None,
            message_id: None,
            results: serde_json::Map::new(),
            created_at: at(created),
            updated_at: at(created),
        }
    }

    /// A step at `at(secs)` that changes nothing.
    fn step(&self, secs: i64) -> ParticipantStep {
        ParticipantStep {
            tenant_id: self.tenant,
            campaign_id: self.campaign,
            participant_id: self.participant,
            customer_id: self.customer,
            clear_pending: None,
            event_done: None,
            participant_patch: serde_json::Map::new(),
            customer_patch: serde_json::Map::new(),
            cancel_open: false,
            new_communications: Vec::new(),
            visited: Vec::new(),
            at: at(secs),
        }
    }

    /// Stores communications through a step.
    async fn plan(&self, store: &dyn Store, communications: &[CommunicationRecord]) {
        let step = ParticipantStep {
            new_communications: communications.to_vec(),
            ..self.step(1)
        };
        assert!(store.commit_participant_step(&step).await.unwrap().applied);
    }

    async fn record(&self, store: &dyn Store) -> ParticipantRecord {
        store
            .get_participant(self.participant)
            .await
            .unwrap()
            .unwrap()
    }
}

fn change(status: CommunicationStatus, secs: i64) -> CommunicationChange {
    CommunicationChange {
        status,
        reason: None,
        session_id: None,
        message_id: None,
        results: None,
        fire: None,
        at: at(secs),
    }
}

fn visits(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(f, n)| (f.to_string(), n.to_string()))
        .collect()
}

/// Pending triggers: an upload leaves created on a new participant and updated on an
/// existing one (created stays while it has not run); a step clears it only if nothing
/// changed the participant since the flow read it; the pending list pages by id.
pub(crate) async fn suite_pending_participants(store: &dyn Store) {
    let t = Uuid::new_v4();
    let (c, other) = (
        stored_campaign(store, t, "c").await,
        stored_campaign(store, t, "other").await,
    );
    let person = |i: u32| checked(json!({"external_id": format!("p{i}")}), json!({"i": i}));
    let r = store
        .upsert_participants(t, c, None, &[person(1), person(2), person(3)], at(10))
        .await
        .unwrap();
    store
        .upsert_participants(t, other, None, &[person(1)], at(10))
        .await
        .unwrap();
    let ids: Vec<ParticipantId> = r.iter().map(|u| u.participant_id).collect();
    let pending = |id: ParticipantId| async move {
        store.get_participant(id).await.unwrap().unwrap().pending
    };
    for &id in &ids {
        assert_eq!(pending(id).await, Some(PendingTrigger::Created));
    }
    let p1 = store.get_participant(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (p1.result.clone(), p1.result_at),
        (serde_json::Map::new(), None)
    );

    // Uploaded again before its created trigger ran: still created.
    let again = store
        .upsert_participants(t, c, None, &[person(1)], at(20))
        .await
        .unwrap();
    assert!(!again[0].created);
    assert_eq!(pending(ids[0]).await, Some(PendingTrigger::Created));

    let mut sorted = ids.clone();
    sorted.sort();
    let page = |after: Option<ParticipantId>, limit: u32| async move {
        store.pending_participants(c, after, limit).await.unwrap()
    };
    assert_eq!(page(None, 10).await, sorted);
    assert_eq!(page(None, 2).await, sorted[..2].to_vec());
    assert_eq!(page(Some(sorted[1]), 2).await, sorted[2..].to_vec());
    assert_eq!(page(Some(sorted[2]), 2).await, Vec::<Uuid>::new());
    assert_eq!(page(None, 0).await, Vec::<Uuid>::new());
    assert_eq!(
        store
            .pending_participants(other, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // The flow ran on what it read: cleared, although its patch moves updated_at.
    let p = Enrolled {
        tenant: t,
        campaign: c,
        participant: ids[0],
        customer: r[0].customer_id,
    };
    let read = p.record(store).await;
    assert_eq!(read.updated_at, at(20));
    let step = ParticipantStep {
        clear_pending: Some(read.updated_at),
        participant_patch: attrs(json!({"seen": true})),
        ..p.step(30)
    };
    assert!(store.commit_participant_step(&step).await.unwrap().applied);
    let now = p.record(store).await;
    assert_eq!((now.pending, now.updated_at), (None, at(30)));
    let mut rest = ids[1..].to_vec();
    rest.sort();
    assert_eq!(page(None, 10).await, rest);
    assert_eq!(
        store.campaign_stats(c).await.unwrap().participants_pending,
        2
    );

    // Uploaded again once it ran: updated.
    store
        .upsert_participants(t, c, None, &[person(1)], at(40))
        .await
        .unwrap();
    assert_eq!(pending(ids[0]).await, Some(PendingTrigger::Updated));
    // A flow that read it before the next upload cannot clear that upload's trigger.
    let read = p.record(store).await;
    store
        .upsert_participants(t, c, None, &[person(1)], at(50))
        .await
        .unwrap();
    let stale = ParticipantStep {
        clear_pending: Some(read.updated_at),
        ..p.step(60)
    };
    assert!(store.commit_participant_step(&stale).await.unwrap().applied);
    assert_eq!(pending(ids[0]).await, Some(PendingTrigger::Updated));
    let fresh = ParticipantStep {
        clear_pending: Some(at(50)),
        ..p.step(70)
    };
    store.commit_participant_step(&fresh).await.unwrap();
    assert_eq!(pending(ids[0]).await, None);
    // A step without a patch leaves updated_at alone.
    assert_eq!(p.record(store).await.updated_at, at(50));
    let stats = store.campaign_stats(c).await.unwrap();
    assert_eq!((stats.participants, stats.participants_pending), (3, 2));
}

/// A step: attribute patches merge into what is stored now, open communications are
/// canceled before the new ones go in, the consumed event goes, visited nodes count; on a
/// participant that is gone only the event goes.
pub(crate) async fn suite_participant_step(store: &dyn Store) {
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "c").await;
    let p = Enrolled::new(
        store,
        t,
        c,
        json!({"external_id": "s1", "name": "Sam", "city": "Rome"}),
        json!({"a": 1, "b": 2, "c": 3}),
        10,
    )
    .await;
    let planned = p.communication("planned", 11, 100);
    let mut started = p.communication("started", 12, 50);
    started.status = CommunicationStatus::Started;
    started.session_id = Some(Uuid::new_v4());
    let mut completed = p.communication("completed", 13, 40);
    completed.status = CommunicationStatus::Completed;
    let first = ParticipantStep {
        new_communications: vec![planned.clone(), started.clone(), completed.clone()],
        visited: visits(&[("main", "trigger")]),
        ..p.step(15)
    };
    assert_eq!(
        store.commit_participant_step(&first).await.unwrap(),
        StepOutcome {
            applied: true,
            canceled: vec![]
        }
    );
    assert_eq!(
        store.list_communications(p.participant).await.unwrap(),
        vec![planned.clone(), started.clone(), completed.clone()]
    );
    assert_eq!(
        store.get_communication(started.id).await.unwrap(),
        Some(started.clone())
    );
    assert_eq!(store.get_communication(Uuid::new_v4()).await.unwrap(), None);

    let done = store
        .add_participant_event(
            c,
            p.participant,
            TriggerType::CommunicationEnded,
            Some(completed.id),
            at(16),
        )
        .await
        .unwrap();
    let kept = store
        .add_participant_event(c, p.participant, TriggerType::IncomingSession, None, at(17))
        .await
        .unwrap();
    assert!(kept > done);

    // An upload between the flow's read and its commit: its keys stay.
    store
        .upsert_participants(
            t,
            c,
            None,
            &[checked(
                json!({"external_id": "s1", "tier": "gold"}),
                json!({"d": 4}),
            )],
            at(20),
        )
        .await
        .unwrap();

    let mut new_planned = p.communication("next", 31, 500);
    new_planned.cancel_at = Some(at(400));
    let mut skipped = p.communication("skipped", 32, 500);
    skipped.status = CommunicationStatus::Skipped;
    skipped.reason = Some("no telegram_id".into());
    let step = ParticipantStep {
        event_done: Some(done),
        participant_patch: attrs(json!({"a": 10, "b": null, "new": "x", "gone": null})),
        customer_patch: attrs(
            json!({"name": "Samuel", "city": null, "email": "sam@x.io", "nested": {"k": [1]}}),
        ),
        cancel_open: true,
        new_communications: vec![new_planned.clone(), skipped.clone()],
        visited: visits(&[("main", "trigger"), ("main", "check"), ("other", "trigger")]),
        ..p.step(30)
    };
    let canceled = |mut c: CommunicationRecord| {
        c.status = CommunicationStatus::Canceled;
        c.reason = Some("canceled by the flow".into());
        c.updated_at = at(30);
        c
    };
    let (planned_canceled, started_canceled) = (canceled(planned), canceled(started));
    assert_eq!(
        store.commit_participant_step(&step).await.unwrap(),
        StepOutcome {
            applied: true,
            canceled: vec![planned_canceled.clone(), started_canceled.clone()]
        }
    );
    let record = p.record(store).await;
    assert_eq!(
        record.attributes,
        attrs(json!({"a": 10, "c": 3, "d": 4, "new": "x"}))
    );
    assert_eq!(record.updated_at, at(30));
    let customer = store.get_customer(p.customer).await.unwrap().unwrap();
    assert_eq!(
        customer.attributes,
        attrs(
            json!({"external_id": "s1", "name": "Samuel", "tier": "gold",
                     "email": "sam@x.io", "nested": {"k": [1]}})
        )
    );
    assert_eq!(
        customer.email.as_deref(),
        Some("sam@x.io"),
        "columns follow"
    );
    assert_eq!(customer.updated_at, at(30));
    assert_eq!(
        store.list_communications(p.participant).await.unwrap(),
        vec![
            planned_canceled,
            started_canceled,
            completed,
            new_planned.clone(),
            skipped
        ]
    );
    assert_eq!(
        store.next_due_communication(c).await.unwrap(),
        Some(at(400)),
        "the new planned one is due at its cancellation"
    );
    let events = store.participant_events(c, 0, 10).await.unwrap();
    assert_eq!(
        events,
        vec![ParticipantEvent {
            id: kept,
            campaign_id: c,
            participant_id: p.participant,
            trigger: TriggerType::IncomingSession,
            communication_id: None,
            at: at(17),
        }]
    );
    let node = |flow: &str, node: &str, count| NodeCount {
        flow: flow.into(),
        node: node.into(),
        count,
    };
    assert_eq!(
        store.campaign_stats(c).await.unwrap().nodes,
        vec![
            node("main", "check", 1),
            node("main", "trigger", 2),
            node("other", "trigger", 1)
        ]
    );

    // The participant is deleted while its flow runs: only the consumed event goes.
    assert!(store.delete_participant(p.participant).await.unwrap());
    let late = store
        .add_participant_event(
            c,
            p.participant,
            TriggerType::CommunicationUpdated,
            None,
            at(40),
        )
        .await
        .unwrap();
    let orphan = ParticipantStep {
        event_done: Some(late),
        participant_patch: attrs(json!({"a": 11})),
        customer_patch: attrs(json!({"name": "Nobody"})),
        cancel_open: true,
        new_communications: vec![p.communication("orphan", 41, 600)],
        visited: visits(&[("main", "trigger")]),
        ..p.step(41)
    };
    assert_eq!(
        store.commit_participant_step(&orphan).await.unwrap(),
        StepOutcome {
            applied: false,
            canceled: vec![]
        }
    );
    assert_eq!(store.participant_events(c, 0, 10).await.unwrap(), vec![]);
    assert_eq!(
        store.list_communications(p.participant).await.unwrap(),
        vec![]
    );
    assert_eq!(
        store
            .get_customer(p.customer)
            .await
            .unwrap()
            .unwrap()
            .attributes["name"],
        json!("Samuel")
    );
    let stats = store.campaign_stats(c).await.unwrap();
    assert_eq!((stats.communications, stats.nodes), (vec![], vec![]));
}

/// Communication changes apply only from the expected statuses, keep what they leave out,
/// write results to the participant and queue the trigger they fire.
pub(crate) async fn suite_change_communication(store: &dyn Store) {
    use CommunicationStatus::*;
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "c").await;
    let p = Enrolled::new(store, t, c, json!({"email": "w@x.io"}), json!({}), 1).await;
    let planned = p.communication("hello", 2, 10);
    p.plan(store, std::slice::from_ref(&planned)).await;
    let session = Uuid::new_v4();

    let start = CommunicationChange {
        session_id: Some(session),
        reason: Some("first attempt".into()),
        ..change(Started, 20)
    };
    let mut expected = planned.clone();
    expected.status = Started;
    expected.session_id = Some(session);
    expected.reason = Some("first attempt".into());
    expected.updated_at = at(20);
    assert_eq!(
        store
            .change_communication(planned.id, &[Planned], &start)
            .await
            .unwrap(),
        Some(expected.clone())
    );
    // Someone else moved it on already: nothing changes.
    assert_eq!(
        store
            .change_communication(planned.id, &[Planned], &change(Canceled, 21))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_communication(planned.id).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .change_communication(Uuid::new_v4(), &CommunicationStatus::ALL, &start)
            .await
            .unwrap(),
        None
    );

    // Delivered: the session stays, the message id is set, the reason cleared, the
    // trigger queued.
    let delivered = CommunicationChange {
        message_id: Some("wamid.1".into()),
        fire: Some(TriggerType::CommunicationUpdated),
        ..change(Delivered, 30)
    };
    expected.status = Delivered;
    expected.message_id = Some("wamid.1".into());
    expected.reason = None;
    expected.updated_at = at(30);
    assert_eq!(
        store
            .change_communication(planned.id, &[Started, Delivered], &delivered)
            .await
            .unwrap(),
        Some(expected.clone())
    );
    let connection = planned.connection_id.unwrap();
    assert_eq!(
        store
            .communication_by_message(connection, "wamid.1")
            .await
            .unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store
            .communication_by_message(connection, "wamid.2")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .communication_by_message(Uuid::new_v4(), "wamid.1")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.communication_by_session(session).await.unwrap(),
        Some(expected.clone())
    );

    // Ended with results: they become the participant's latest.
    let results = attrs(json!({"outcome": "paid", "amount": 12.5}));
    let ended = CommunicationChange {
        results: Some(results.clone()),
        fire: Some(TriggerType::CommunicationEnded),
        ..change(Completed, 40)
    };
    expected.status = Completed;
    expected.results = results.clone();
    expected.updated_at = at(40);
    assert_eq!(
        store
            .change_communication(planned.id, &CommunicationStatus::LIVE, &ended)
            .await
            .unwrap(),
        Some(expected.clone())
    );
    let record = p.record(store).await;
    assert_eq!((record.result, record.result_at), (results, Some(at(40))));
    assert_eq!(
        record.updated_at,
        at(1),
        "results are not an attribute change"
    );
    let event = |id, trigger, secs| ParticipantEvent {
        id,
        campaign_id: c,
        participant_id: p.participant,
        trigger,
        communication_id: Some(planned.id),
        at: at(secs),
    };
    let events = store.participant_events(c, 0, 10).await.unwrap();
    assert_eq!(
        events,
        vec![
            event(events[0].id, TriggerType::CommunicationUpdated, 30),
            event(events[1].id, TriggerType::CommunicationEnded, 40),
        ]
    );
    assert!(events[1].id > events[0].id);
    assert_eq!(
        store.participant_events(c, events[0].id, 10).await.unwrap(),
        events[1..].to_vec()
    );
    assert_eq!(
        store.participant_events(c, 0, 1).await.unwrap(),
        events[..1].to_vec()
    );
    assert_eq!(
        store
            .participant_events(Uuid::new_v4(), 0, 10)
            .await
            .unwrap(),
        vec![]
    );
}

/// Planned communications fall due at their start, or at their cancellation when that
/// comes first; live ones are those with an open session.
pub(crate) async fn suite_due_communications(store: &dyn Store) {
    use CommunicationStatus::*;
    let t = Uuid::new_v4();
    let (c, other) = (
        stored_campaign(store, t, "c").await,
        stored_campaign(store, t, "other").await,
    );
    let p = Enrolled::new(store, t, c, json!({"email": "d@x.io"}), json!({}), 1).await;
    let q = Enrolled::new(store, t, other, json!({"email": "d@x.io"}), json!({}), 1).await;
    let a = p.communication("a", 2, 100);
    let mut b = p.communication("b", 3, 200);
    b.cancel_at = Some(at(150));
    let mut early = p.communication("early", 4, 50);
    early.cancel_at = Some(at(300));
    let mut live = p.communication("live", 5, 10);
    live.status = Started;
    live.session_id = Some(Uuid::new_v4());
    let mut reading = p.communication("reading", 6, 10);
    reading.status = Read;
    reading.session_id = Some(Uuid::new_v4());
    let mut ended = p.communication("ended", 7, 10);
    ended.status = NoResponse;
    ended.session_id = Some(Uuid::new_v4());
    p.plan(
        store,
        &[
            a.clone(),
            b.clone(),
            early.clone(),
            live.clone(),
            reading.clone(),
            ended.clone(),
        ],
    )
    .await;
    q.plan(store, &[q.communication("elsewhere", 2, 0)]).await;

    let due = |secs: i64, limit: u32| async move {
        store
            .due_communications(c, at(secs), limit)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(due(40, 10).await, Vec::<String>::new());
    assert_eq!(due(100, 10).await, vec!["early", "a"]);
    assert_eq!(due(150, 10).await, vec!["early", "a", "b"]);
    assert_eq!(due(150, 2).await, vec!["early", "a"]);
    assert_eq!(
        store.due_communications(c, at(150), 1).await.unwrap(),
        vec![early.clone()]
    );
    assert_eq!(store.next_due_communication(c).await.unwrap(), Some(at(50)));

    // Once started it is no longer due, and its session is live.
    let session = Uuid::new_v4();
    let start = CommunicationChange {
        session_id: Some(session),
        ..change(Started, 60)
    };
    store
        .change_communication(early.id, &[Planned], &start)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(due(1000, 10).await, vec!["a", "b"]);
    assert_eq!(
        store.next_due_communication(c).await.unwrap(),
        Some(at(100))
    );
    let mut expected = vec![
        (live.id, live.session_id.unwrap()),
        (reading.id, reading.session_id.unwrap()),
        (early.id, session),
    ];
    expected.sort();
    assert_eq!(store.live_communications(c).await.unwrap(), expected);
    assert_eq!(store.live_communications(other).await.unwrap(), vec![]);
    assert_eq!(
        store.next_due_communication(Uuid::new_v4()).await.unwrap(),
        None
    );

    // A session reused by a later communication answers the newest.
    let mut again = p.communication("again", 8, 10);
    again.status = Replied;
    again.session_id = Some(session);
    p.plan(store, std::slice::from_ref(&again)).await;
    assert_eq!(
        store.communication_by_session(session).await.unwrap(),
        Some(again)
    );
    assert_eq!(
        store
            .communication_by_session(Uuid::new_v4())
            .await
            .unwrap(),
        None
    );
}

/// Campaign counts: participants, pending ones, communications by status (in lifecycle
/// order) and channel, nodes by flow and node.
pub(crate) async fn suite_campaign_stats(store: &dyn Store) {
    use CommunicationStatus::*;
    let t = Uuid::new_v4();
    let (c, other) = (
        stored_campaign(store, t, "c").await,
        stored_campaign(store, t, "other").await,
    );
    assert_eq!(
        store.campaign_stats(c).await.unwrap(),
        CampaignStats::default()
    );
    let p = Enrolled::new(store, t, c, json!({"email": "1@x.io"}), json!({}), 1).await;
    let q = Enrolled::new(store, t, c, json!({"email": "2@x.io"}), json!({}), 1).await;
    let o = Enrolled::new(store, t, other, json!({"email": "1@x.io"}), json!({}), 1).await;
    let read = p.record(store).await;
    store
        .commit_participant_step(&ParticipantStep {
            clear_pending: Some(read.updated_at),
            ..p.step(2)
        })
        .await
        .unwrap();
    let made = |e: &Enrolled, status, channel| {
        let mut c = e.communication("x", 3, 10);
        c.status = status;
        c.channel = channel;
        c
    };
    p.plan(
        store,
        &[
            made(&p, Failed, Channel::Chat),
            made(&p, Completed, Channel::Telegram),
            made(&p, Planned, Channel::Whatsapp),
            made(&p, Planned, Channel::Telegram),
        ],
    )
    .await;
    q.plan(
        store,
        &[
            made(&q, Planned, Channel::Telegram),
            made(&q, Planned, Channel::Chat),
            made(&q, Failed, Channel::Chat),
        ],
    )
    .await;
    o.plan(store, &[made(&o, Planned, Channel::Telegram)]).await;
    let count = |status, channel, count| CommunicationCount {
        status,
        channel,
        count,
    };
    assert_eq!(
        store.campaign_stats(c).await.unwrap(),
        CampaignStats {
            participants: 2,
            participants_pending: 1,
            communications: vec![
                count(Planned, Channel::Chat, 1),
                count(Planned, Channel::Telegram, 2),
                count(Planned, Channel::Whatsapp, 1),
                count(Completed, Channel::Telegram, 1),
                count(Failed, Channel::Chat, 2),
            ],
            nodes: vec![],
        }
    );
    assert_eq!(
        store.campaign_stats(other).await.unwrap().communications,
        vec![count(Planned, Channel::Telegram, 1)]
    );
}

/// Customers by channel id (compared as text, within the tenant, oldest first), and a
/// customer's participants in a campaign.
pub(crate) async fn suite_customers_by_channel_id(store: &dyn Store) {
    let (t, other_t) = (Uuid::new_v4(), Uuid::new_v4());
    let (c, c2) = (
        stored_campaign(store, t, "c").await,
        stored_campaign(store, t, "c2").await,
    );
    let oc = stored_campaign(store, other_t, "oc").await;
    // As ParticipantInput::check stores them: text.
    let first = Enrolled::new(
        store,
        t,
        c,
        json!({"external_id": "a", "telegram_id": "12345", "whatsapp_id": "4915550001",
               "web_id": "web-a", "phone": "+4915550001"}),
        json!({}),
        1,
    )
    .await;
    let second = Enrolled::new(
        store,
        t,
        c,
        json!({"external_id": "b", "telegram_id": "12345"}),
        json!({}),
        2,
    )
    .await;
    Enrolled::new(
        store,
        other_t,
        oc,
        json!({"external_id": "a", "telegram_id": "12345", "phone": "+4915550001"}),
        json!({}),
        1,
    )
    .await;
    let find = |name: &'static str, value: &'static str, limit: u32| async move {
        store
            .customers_by_channel_id(t, name, value, limit)
            .await
            .unwrap()
    };
    assert_eq!(
        find("telegram_id", "12345", 10).await,
        vec![first.customer, second.customer]
    );
    assert_eq!(find("telegram_id", "12345", 1).await, vec![first.customer]);
    assert_eq!(find("telegram_id", "1234", 10).await, Vec::<Uuid>::new());
    assert_eq!(
        find("whatsapp_id", "4915550001", 10).await,
        vec![first.customer]
    );
    assert_eq!(find("web_id", "web-a", 10).await, vec![first.customer]);
    assert_eq!(find("web_id", "12345", 10).await, Vec::<Uuid>::new());
    assert_eq!(find("phone", "+4915550001", 10).await, vec![first.customer]);
    // A number written by a flow is found by its text.
    store
        .commit_participant_step(&ParticipantStep {
            customer_patch: attrs(json!({"telegram_id": 777})),
            ..second.step(3)
        })
        .await
        .unwrap();
    assert_eq!(find("telegram_id", "777", 10).await, vec![second.customer]);
    assert_eq!(find("telegram_id", "12345", 10).await, vec![first.customer]);
    assert!(is_conflict(
        store
            .customers_by_channel_id(t, "email", "a@x.io", 10)
            .await
    ));

    // Two objects of the first customer in c, one in c2.
    let objects = store
        .upsert_participants(
            t,
            c,
            None,
            &[
                with_object(checked(json!({"external_id": "a"}), json!({})), "o1"),
                with_object(checked(json!({"external_id": "a"}), json!({})), "o2"),
            ],
            at(5),
        )
        .await
        .unwrap();
    let elsewhere = Enrolled::new(store, t, c2, json!({"external_id": "a"}), json!({}), 6).await;
    assert_eq!(
        store
            .participants_of_customer(c, first.customer)
            .await
            .unwrap(),
        vec![
            first.participant,
            objects[0].participant_id,
            objects[1].participant_id
        ]
    );
    assert_eq!(
        store
            .participants_of_customer(c2, first.customer)
            .await
            .unwrap(),
        vec![elsewhere.participant]
    );
    assert_eq!(
        store
            .participants_of_customer(c2, second.customer)
            .await
            .unwrap(),
        Vec::<Uuid>::new()
    );
}

/// Deleting a participant or a campaign takes its communications, queued events and
/// step counts with it.
pub(crate) async fn suite_delete_progress(store: &dyn Store) {
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "c").await;
    let p = Enrolled::new(store, t, c, json!({"email": "1@x.io"}), json!({}), 1).await;
    let q = Enrolled::new(store, t, c, json!({"email": "2@x.io"}), json!({}), 1).await;
    let mut mine = Vec::new();
    for e in [&p, &q] {
        let comm = e.communication("x", 2, 10);
        mine.push(comm.id);
        store
            .commit_participant_step(&ParticipantStep {
                new_communications: vec![comm.clone()],
                visited: visits(&[("main", "trigger")]),
                ..e.step(2)
            })
            .await
            .unwrap();
        store
            .add_participant_event(
                c,
                e.participant,
                TriggerType::CommunicationEnded,
                Some(comm.id),
                at(3),
            )
            .await
            .unwrap();
    }

    assert!(store.delete_participant(p.participant).await.unwrap());
    assert_eq!(store.get_communication(mine[0]).await.unwrap(), None);
    assert!(store.get_communication(mine[1]).await.unwrap().is_some());
    let events = store.participant_events(c, 0, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.participant_id).collect::<Vec<_>>(),
        vec![q.participant]
    );
    let stats = store.campaign_stats(c).await.unwrap();
    assert_eq!(stats.participants, 1);
    assert_eq!(
        stats.communications,
        vec![CommunicationCount {
            status: CommunicationStatus::Planned,
            channel: Channel::Telegram,
            count: 1
        }]
    );
    assert_eq!(
        stats.nodes,
        vec![NodeCount {
            flow: "main".into(),
            node: "trigger".into(),
            count: 1
        }]
    );

    assert!(store.delete_campaign(c).await.unwrap());
    assert_eq!(
        store.campaign_stats(c).await.unwrap(),
        CampaignStats::default()
    );
    assert_eq!(store.get_communication(mine[1]).await.unwrap(), None);
    assert_eq!(store.participant_events(c, 0, 10).await.unwrap(), vec![]);
    assert_eq!(store.next_due_communication(c).await.unwrap(), None);
}

/// The participants list by name (a customer's or the participant's own, any case, `%`
/// and `_` taken literally) and by status (pending trigger, communication under way,
/// neither).
pub(crate) async fn suite_participant_filters(store: &dyn Store) {
    use CommunicationStatus::*;
    let t = Uuid::new_v4();
    let c = stored_campaign(store, t, "c").await;
    let ann = Enrolled::new(
        store,
        t,
        c,
        json!({"email": "ann@x.io", "name": "Ann Lee"}),
        json!({}),
        1,
    )
    .await;
    let bob = Enrolled::new(
        store,
        t,
        c,
        json!({"email": "bob@x.io"}),
        json!({"name": "Bob 100%"}),
        2,
    )
    .await;
    let cid = Enrolled::new(store, t, c, json!({"email": "cid@x.io"}), json!({}), 3).await;
    let ids =
        |page: (Vec<ParticipantRecord>, u64)| page.0.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let query = |name: Option<&str>, status| ParticipantQuery {
        name: name.map(str::to_string),
        status,
        limit: 10,
        ..ParticipantQuery::default()
    };
    let list =
        |q: ParticipantQuery| async move { ids(store.list_participants(c, &q).await.unwrap()) };
    assert_eq!(list(query(Some("lee"), None)).await, vec![ann.participant]);
    assert_eq!(
        list(query(Some("b 100%"), None)).await,
        vec![bob.participant]
    );
    assert_eq!(list(query(Some("_"), None)).await, Vec::<Uuid>::new());
    assert_eq!(
        list(query(None, Some(ParticipantStatus::Pending))).await,
        vec![ann.participant, bob.participant, cid.participant]
    );
    for e in [&ann, &bob, &cid] {
        let read = e.record(store).await;
        store
            .commit_participant_step(&ParticipantStep {
                clear_pending: Some(read.updated_at),
                ..e.step(5)
            })
            .await
            .unwrap();
    }
    let mut done = ann.communication("x", 6, 10);
    done.status = Completed;
    ann.plan(store, &[done]).await;
    bob.plan(store, &[bob.communication("y", 6, 10)]).await;
    assert_eq!(
        list(query(None, Some(ParticipantStatus::Active))).await,
        vec![bob.participant]
    );
    assert_eq!(
        list(query(None, Some(ParticipantStatus::Idle))).await,
        vec![ann.participant, cid.participant]
    );
    assert_eq!(
        list(query(Some("ann"), Some(ParticipantStatus::Idle))).await,
        vec![ann.participant]
    );
    assert_eq!(
        store
            .list_participants(c, &query(None, Some(ParticipantStatus::Pending)))
            .await
            .unwrap()
            .1,
        0
    );
}
