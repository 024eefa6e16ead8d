//! Tenants, users and roles over real HTTP: temporary passwords, sign-in throttling,
//! the last admin, the seed's role matrix on every route of the router, and tenants
//! that never see each other's data.

use parley::api::{routes, Auth};
use parley_engine::identity::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const SUPER_KEY: &str = "sk_test_super_key_for_hosting";

async fn login(t: &TestServer, email: &str, password: &str) -> (StatusCode, Value) {
    json_of(
        t.http
            .post(t.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_temporary_password_opens_only_its_own_change() {
    let t = TestServer::start().await;
    let (status, u) = t
        .call(
            Method::POST,
            "/api/v1/users",
            Some(
                json!({"name": "Vera", "email": "Vera@Example.com", "role": "viewer",
                        "password": "temporary-pass-1"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{u}");
    assert_eq!(u["email"], "vera@example.com");
    assert_eq!(u["must_change_password"], true);
    assert!(!u.to_string().contains("argon2"), "no hash in answers: {u}");

    let (status, body) = login(&t, "vera@example.com", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_credentials");
    let (status, body) = login(&t, "nobody@example.com", "temporary-pass-1").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );

    let (status, s) = login(&t, "VERA@example.com", "temporary-pass-1").await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["password_change_required"], true);
    let temp = s["token"].as_str().unwrap().to_string();
    let (status, me) = t.call_as(Method::GET, "/api/v1/me", &temp, None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["password_change_required"], true);
    let (status, body) = t.call_as(Method::GET, "/api/v1/agents", &temp, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "password_change_required");

    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/auth/password",
            &temp,
            Some(change("nope-nope-nope", "a-better-password")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/auth/password",
            &temp,
            Some(change("temporary-pass-1", "short")),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, s) = t
        .call_as(
            Method::POST,
            "/api/v1/auth/password",
            &temp,
            Some(change("temporary-pass-1", "a-better-password")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["password_change_required"], false);
    let token = s["token"].as_str().unwrap().to_string();
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/me", &temp, None).await.0,
        StatusCode::UNAUTHORIZED,
        "the temporary sign-in ended"
    );

    // A viewer reads agents but changes nothing.
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/agents", &token, None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = t
        .call_as(Method::POST, "/api/v1/agents", &token, Some(json!({})))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    // The old password no longer signs in; the new one does.
    assert_eq!(
        login(&t, "vera@example.com", "temporary-pass-1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&t, "vera@example.com", "a-better-password").await.0,
        StatusCode::OK
    );

    let (status, me) = t
        .call_as(
            Method::PATCH,
            "/api/v1/me",
            &token,
            Some(json!({"name": "Vera V."})),
        )
        .await;
    assert_eq!(
        (status, me["name"].as_str()),
        (StatusCode::OK, Some("Vera V."))
    );
    assert_eq!(
        t.call_as(Method::POST, "/api/v1/auth/logout", &token, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/me", &token, None).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_account_and_per_address() {
    let t = TestServer::start().await;
    t.staff("user", "ann@example.com", Value::Null).await;
    t.staff("user", "bob@example.com", Value::Null).await;
    for _ in 0..5 {
        assert_eq!(
            login(&t, "ann@example.com", "wrong-password").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let resp = t
        .http
        .post(t.url("/api/v1/auth/login"))
        .json(&json!({"email": "ann@example.com", "password": "a-better-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let (_, body) = json_of(resp).await;
    assert_eq!(error_code(&body), "too_many_attempts");
    // Bob is another account: fine, until this address has failed too often.
    assert_eq!(
        login(&t, "bob@example.com", "a-better-password").await.0,
        StatusCode::OK
    );
    for i in 0..15 {
        assert_eq!(
            login(&t, &format!("guess{i}@example.com"), "wrong-password")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, body) = login(&t, "bob@example.com", "a-better-password").await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
}

#[tokio::test]
async fn admins_manage_users_and_the_tenant_keeps_an_admin() {
    let t = TestServer::start().await;
    let (ada, ada_token) = t.staff("admin", "ada@example.com", Value::Null).await;
    let (bob, bob_token) = t
        .staff_with(&ada_token, "user", "bob@example.com", Value::Null)
        .await;
    let (status, list) = t
        .call_as(Method::GET, "/api/v1/users", &ada_token, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let emails: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["ada@example.com", "bob@example.com"]);
    // Ada is the only admin user: she can neither step down nor go.
    let (status, body) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/users/{ada}"),
            &ada_token,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("last admin"),
        "{body}"
    );
    assert_eq!(
        t.call_as(
            Method::DELETE,
            &format!("/api/v1/users/{ada}"),
            &ada_token,
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    // A user has the playground only; made a viewer, the agent's configuration opens at once.
    let agent = t.agent(&basic_agent("")).await;
    let path = format!("/api/v1/agents/{}", agent.id);
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/agents", &bob_token, None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        t.call_as(Method::GET, &path, &bob_token, None).await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/users/{bob}"),
            &ada_token,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.call_as(Method::GET, &path, &bob_token, None).await.0,
        StatusCode::OK
    );
    // With a second admin, Ada may step down.
    let (status, _) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/users/{bob}"),
            &ada_token,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, u) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/users/{ada}"),
            &bob_token,
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_eq!(
        (status, u["role"].as_str()),
        (StatusCode::OK, Some("viewer"))
    );
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/users", &ada_token, None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // Operators have schedules; others do not; bad ones are refused.
    let (status, op) = t.call_as( Method::POST, "/api/v1/users", &bob_token, Some(json!({
        "name": "Olga", "email": "olga@example.com", "role": "operator", "password": "temporary-pass-1",
        "schedule": {"days": ["mon", "tue"], "from": "09:00", "to": "17:00"}}))).await;
    assert_eq!(status, StatusCode::CREATED, "{op}");
    assert_eq!(
        op["schedule"],
        json!({"days": ["mon", "tue"], "from": "09:00", "to": "17:00"})
    );
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/users",
            &bob_token,
            Some(json!({
        "name": "Vic", "email": "vic@example.com", "role": "viewer", "password": "temporary-pass-1",
        "schedule": {"days": ["mon"], "from": "09:00", "to": "17:00"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = t.call_as( Method::POST, "/api/v1/users", &bob_token, Some(json!({
        "name": "Vic", "email": "vic@example.com", "role": "operator", "password": "temporary-pass-1",
        "schedule": {"days": ["someday"], "from": "09:00", "to": "17:00"}}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = t.call_as( Method::POST, "/api/v1/users", &bob_token, Some(json!({
        "name": "Dup", "email": "OLGA@example.com", "role": "user", "password": "temporary-pass-1"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // A reset password is temporary again and ends the user's sign-ins.
    let (status, _) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/users/{ada}"),
            &bob_token,
            Some(json!({"password": "another-temp-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/me", &ada_token, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (_, s) = login(&t, "ada@example.com", "another-temp-1").await;
    assert_eq!(s["password_change_required"], true);
    assert_eq!(
        t.call_as(
            Method::DELETE,
            &format!("/api/v1/users/{ada}"),
            &bob_token,
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        login(&t, "ada@example.com", "another-temp-1").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A concrete path for a route template: the tenant's agent where the route's check
/// reads it (chat routes), random ids elsewhere (so nothing real is changed).
fn concrete(path: &str, agent: Option<&str>) -> String {
    path.split('/')
        .map(|seg| match (seg, agent) {
            ("{agent_id}", Some(agent)) => agent.to_string(),
            (s, _) if s.starts_with('{') => uuid::Uuid::now_v7().to_string(),
            (s, _) => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_lets_exactly_the_roles_of_the_matrix_through() {
    let t = TestServer::start_with(|c| c.super_key = Some(SUPER_KEY.into())).await;
    let agent = t.agent(&basic_agent("")).await;
    let mut tokens = vec![(Role::Admin, ADMIN_KEY.to_string())];
    for role in Role::ALL {
        let (_, token) = t
            .staff(
                role.as_str(),
                &format!("{}@example.com", role.as_str()),
                Value::Null,
            )
            .await;
        tokens.push((role, token));
    }
    let mut checked = 0;
    // A new admin key ends the old one: that route goes last, the key last of all.
    let mut all = routes();
    all.sort_by_key(|(doc, _)| doc.path == "/api/v1/tenant/key");
    for (doc, _) in all {
        let allowed: Vec<Role> = match doc.auth {
            Auth::Roles(roles) => roles.to_vec(),
            Auth::Profile => Role::ALL.to_vec(),
            Auth::Agent => parley::api::PLAYGROUND_ROLES.to_vec(),
            Auth::Public => parley::api::LOG_READER_ROLES.to_vec(),
            // The super key's route takes no sign-in at all (checked below).
            Auth::Super => Vec::new(),
            // Tenant admins reach their own actors (the super key the node's, in actors.rs).
            Auth::NodeAdmin => vec![Role::Admin],
            // Sign-ins are no visitors (widget.rs walks the widget's routes).
            Auth::None | Auth::Widget | Auth::Visitor => continue,
        };
        // WebSocket routes need an upgrade before their credentials are read.
        if doc.path.contains("/ws/") {
            continue;
        }
        let method = Method::from_bytes(doc.method.to_uppercase().as_bytes()).unwrap();
        let mut order = tokens.clone();
        order.rotate_left(1);
        for (role, token) in &order {
            let chat = matches!(doc.auth, Auth::Agent | Auth::Public);
            let path = concrete(doc.path, chat.then_some(agent.id.as_str()));
            // Logging out would end the sign-in the rest of the walk needs; the admin
            // user's key rotation already ended the admin key.
            if doc.path == "/api/v1/auth/logout"
                || (doc.path == "/api/v1/tenant/key" && token == ADMIN_KEY)
            {
                continue;
            }
            // Public routes read their credentials in the handler, after the body.
            let body = if doc.path.contains("/logs/") {
                json!({"feedback": "GOOD", "ext_id": "someone"})
            } else {
                json!({})
            };
            let (status, body) = t.call_as(method.clone(), &path, token, Some(body)).await;
            let what = format!("{} {} as {}", doc.method, doc.path, role.as_str());
            if allowed.contains(role) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what}: let through by the matrix, got {status} {body}"
                );
            } else if doc.auth == Auth::Super {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
                assert_eq!(error_code(&body), "forbidden", "{what}");
            }
            checked += 1;
        }
    }
    assert!(checked > 300, "walked {checked} route × role pairs");
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/tenants",
            SUPER_KEY,
            Some(json!({"name": "Hosted"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn tenants_never_see_each_others_data() {
    let t = TestServer::start_with(|c| c.super_key = Some(SUPER_KEY.into())).await;
    // Tenant A (the default) has an agent, a connection, a campaign with a participant,
    // a customer, a session and a user.
    let agent = t.agent(&basic_agent("")).await;
    let session = t.session(&agent, json!({"user_id": "cust-1"})).await;
    t.say(&agent, &session, "hello").await;
    let (_, conn) = t
        .call(
            Method::POST,
            "/api/v1/connections",
            Some(json!({"name": "Hook", "platform": "webhook", "enabled": true, "config": {}})),
        )
        .await;
    let conn = conn["id"].as_str().unwrap().to_string();
    let (_, campaign) = t
        .call(
            Method::POST,
            "/api/v1/campaigns",
            Some(json!({"name": "A's"})),
        )
        .await;
    let campaign = campaign["id"].as_str().unwrap().to_string();
    let (_, added) = t
        .call(
            Method::POST,
            &format!("/api/v1/campaigns/{campaign}/participants"),
            Some(json!([{"attributes": {"external_id": "x1"}}])),
        )
        .await;
    let participant = added["results"][0]["participant_id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = added["results"][0]["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (a_user, _) = t.staff("viewer", "vera@a.example", Value::Null).await;

    // Tenant B, made with the super key.
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/tenants",
            "sk_wrong",
            Some(json!({"name": "B"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, b) = t
        .call_as(
            Method::POST,
            "/api/v1/tenants",
            SUPER_KEY,
            Some(json!({"name": "B", "website": "https://b.example", "timezone": "Europe/Paris"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    let b_key = b["admin_key"].as_str().unwrap().to_string();
    assert_eq!(b["settings"]["timezone"], "Europe/Paris");
    let (_, b_admin) = t
        .staff_with(&b_key, "admin", "boss@b.example", Value::Null)
        .await;

    for key in [&b_key, &b_admin] {
        for (method, path) in [
            (Method::GET, format!("/api/v1/agents/{}", agent.id)),
            (Method::PUT, format!("/api/v1/agents/{}", agent.id)),
            (Method::DELETE, format!("/api/v1/agents/{}", agent.id)),
            (Method::POST, format!("/api/v1/agents/{}/stop", agent.id)),
            (Method::POST, format!("/api/v1/agents/{}/token", agent.id)),
            (Method::GET, format!("/api/v1/agents/{}/channels", agent.id)),
            (Method::GET, format!("/api/v1/connections/{conn}")),
            (Method::PATCH, format!("/api/v1/connections/{conn}")),
            (Method::DELETE, format!("/api/v1/connections/{conn}")),
            (Method::POST, format!("/api/v1/connections/{conn}/start")),
            (Method::GET, format!("/api/v1/connections/{conn}/events")),
            (Method::GET, format!("/api/v1/campaigns/{campaign}")),
            (Method::PATCH, format!("/api/v1/campaigns/{campaign}")),
            (Method::DELETE, format!("/api/v1/campaigns/{campaign}")),
            (
                Method::GET,
                format!("/api/v1/campaigns/{campaign}/participants"),
            ),
            (
                Method::POST,
                format!("/api/v1/campaigns/{campaign}/participants"),
            ),
            (
                Method::DELETE,
                format!("/api/v1/campaigns/{campaign}/participants/{participant}"),
            ),
            (
                Method::GET,
                format!("/api/v1/campaigns/{campaign}/participants/{participant}/communications"),
            ),
            (Method::GET, format!("/api/v1/campaigns/{campaign}/stats")),
            (Method::GET, format!("/api/v1/customers/{customer}")),
            (Method::GET, format!("/api/v1/users/{a_user}")),
            (Method::PATCH, format!("/api/v1/users/{a_user}")),
            (Method::DELETE, format!("/api/v1/users/{a_user}")),
            (
                Method::GET,
                format!("/chatbot/{}/session/{session}", agent.id),
            ),
            (
                Method::GET,
                format!("/chatbot/{}/session/{session}/messages", agent.id),
            ),
            (Method::POST, format!("/chatbot/{}/session", agent.id)),
        ] {
            let body = match method {
                // Bodies that parse, so the answer is about the id.
                _ if path.ends_with("/participants") && method == Method::POST => {
                    Some(json!([{"attributes": {"external_id": "z"}}]))
                }
                Method::PUT => Some(json!({"name": "x"})),
                Method::PATCH | Method::POST => Some(json!({})),
                _ => None,
            };
            let (status, answer) = t.call_as(method.clone(), &path, key, body).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {path} from tenant B: {answer}"
            );
        }
        // Lists show nothing of A's.
        for path in [
            "/api/v1/agents",
            "/api/v1/connections",
            "/api/v1/campaigns",
            "/api/v1/customers",
            "/api/v1/users",
        ] {
            let (status, body) = t.call_as(Method::GET, path, key, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            for id in [&agent.id, &conn, &campaign, &customer, &a_user] {
                assert!(
                    !body.to_string().contains(id.as_str()),
                    "{path} leaks {id}: {body}"
                );
            }
        }
        let (status, body) = t
            .call_as(
                Method::GET,
                "/api/v1/public/conversations?ext_id=cust-1",
                key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.to_string().contains(&session), "{body}");
    }
    // Each tenant's settings are its own; a rotated key replaces the old one.
    let (status, mine) = t
        .call_as(Method::GET, "/api/v1/tenant", &b_admin, None)
        .await;
    assert_eq!((status, mine["name"].as_str()), (StatusCode::OK, Some("B")));
    let (status, body) = t
        .call_as(
            Method::PATCH,
            "/api/v1/tenant",
            &b_admin,
            Some(json!({"billing_email": "not-an-email"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = t
        .call_as(
            Method::PATCH,
            "/api/v1/tenant",
            &b_admin,
            Some(json!({"phone": "+33 1 23", "country": "FR"})),
        )
        .await;
    assert_eq!(
        (status, body["settings"]["country"].as_str()),
        (StatusCode::OK, Some("FR"))
    );
    let (_, a) = t.call(Method::GET, "/api/v1/tenant", None).await;
    assert_eq!(a["settings"]["country"], Value::Null);
    let (status, rotated) = t
        .call_as(Method::POST, "/api/v1/tenant/key", &b_key, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_key = rotated["admin_key"].as_str().unwrap();
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/tenant", &b_key, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        t.call_as(Method::GET, "/api/v1/tenant", new_key, None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_a_super_key_no_tenant_can_be_created() {
    let t = TestServer::start().await;
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/tenants",
            "sk_anything",
            Some(json!({"name": "B"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = t
        .call_as(
            Method::POST,
            "/api/v1/tenants",
            ADMIN_KEY,
            Some(json!({"name": "B"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn users_test_agents_in_the_playground_without_the_agents_token() {
    let t = TestServer::start().await;
    let agent = t.agent(&basic_agent("")).await;
    let (_, user_token) = t.staff("user", "pat@example.com", Value::Null).await;
    let (_, operator_token) = t.staff("operator", "op@example.com", Value::Null).await;
    let (status, s) = t
        .call_as(
            Method::POST,
            &format!("/chatbot/{}/session", agent.id),
            &user_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let session = s["session_id"].as_str().unwrap();
    let (status, answer) = t
        .call_as(
            Method::POST,
            &format!("/chatbot/{}/session/{session}/run_v2", agent.id),
            &user_token,
            Some(json!({"message": "What are your opening hours?"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.to_string().contains("9 to 17"), "{answer}");
    // Operators work conversations, not the playground.
    let (status, body) = t
        .call_as(
            Method::POST,
            &format!("/chatbot/{}/session", agent.id),
            &operator_token,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    // …but read session logs.
    let (status, body) = t
        .call_as(
            Method::GET,
            "/api/v1/public/conversations?ext_id=x",
            &operator_token,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t
        .call_as(
            Method::GET,
            "/api/v1/public/conversations?ext_id=x",
            &user_token,
            None,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
}

async fn set_limit(t: &TestServer, limit: Value) {
    let (_, me) = t.call(Method::GET, "/api/v1/tenant", None).await;
    let id = me["id"].as_str().unwrap();
    let (status, body) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/tenants/{id}"),
            SUPER_KEY,
            Some(json!({"monthly_session_limit": limit})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn start_session(t: &TestServer, agent: &Agent) -> (StatusCode, Value) {
    json_of(
        t.http
            .post(t.url(&format!("/chatbot/{}/session", agent.id)))
            .bearer_auth(&agent.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_monthly_limit_lets_the_nth_session_through_and_refuses_the_next() {
    let t = TestServer::start_with(|c| c.super_key = Some(SUPER_KEY.into())).await;
    let agent = t.agent(&basic_agent("")).await;
    let (status, body) = t
        .call(
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({"monthly_session_limit": 1})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a tenant cannot set its own limit: {body}"
    );
    start_session(&t, &agent).await;
    set_limit(&t, json!(3)).await;
    // One came before the limit: two more fit.
    for _ in 0..2 {
        let (status, body) = start_session(&t, &agent).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = start_session(&t, &agent).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "session_limit_reached");
    // Raised: exactly as many as fit pass, even all at once.
    set_limit(&t, json!(8)).await;
    let attempts = (0..10).map(|_| start_session(&t, &agent));
    let results = futures::future::join_all(attempts).await;
    let passed = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let refused = results
        .iter()
        .filter(|(s, b)| {
            *s == StatusCode::TOO_MANY_REQUESTS && error_code(b) == "session_limit_reached"
        })
        .count();
    assert_eq!((passed, refused), (5, 5), "{results:?}");
    let (status, usage) = t.call(Method::GET, "/api/v1/billing/usage", None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["sessions"], 8);
    assert_eq!(usage["billable_sessions"], 8);
    assert_eq!(usage["monthly_session_limit"], 8);
    assert_eq!(usage["remaining"], 0);
    set_limit(&t, Value::Null).await;
    assert_eq!(start_session(&t, &agent).await.0, StatusCode::CREATED);
    let (status, body) = t
        .call_as(
            Method::PATCH,
            "/api/v1/tenants/not-an-id",
            SUPER_KEY,
            Some(json!({"monthly_session_limit": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, me) = t.call(Method::GET, "/api/v1/tenant", None).await;
    let (status, body) = t
        .call_as(
            Method::PATCH,
            &format!("/api/v1/tenants/{}", me["id"].as_str().unwrap()),
            SUPER_KEY,
            Some(json!({"monthly_session_limit": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn past_its_daily_limit_an_agent_records_the_start_and_never_runs_it() {
    let t = TestServer::start().await;
    let agent = t.agent(&basic_agent("session:\n  daily_limit: 2")).await;
    for _ in 0..2 {
        assert_eq!(start_session(&t, &agent).await.0, StatusCode::CREATED);
    }
    let (status, body) = start_session(&t, &agent).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(error_code(&body), "daily_limit_exceeded");
    let refused = body["error"]["details"]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = t.get_session(&agent, &refused).await;
    assert_eq!(s["status"], "daily_limit_exceeded", "{s}");
    let resp = t.run(&agent, &refused, "hello?").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT, "never active");
    let (_, usage) = t.call(Method::GET, "/api/v1/billing/usage", None).await;
    assert_eq!(usage["sessions"], 2, "{usage}");
    assert_eq!(usage["billable_sessions"], 2, "{usage}");
    assert_eq!(usage["refused_sessions"], 1, "{usage}");
    // A daily limit of 0 is refused when the agent is defined.
    let (status, body) = json_of(
        t.admin(Method::POST, "/api/v1/agents")
            .header("content-type", "application/yaml")
            .body(basic_agent("session:\n  daily_limit: 0"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("session.daily_limit"), "{body}");
}

#[tokio::test]
async fn a_start_the_monthly_limit_refuses_keeps_no_place_in_the_agents_day() {
    let t = TestServer::start_with(|c| c.super_key = Some(SUPER_KEY.into())).await;
    let agent = t.agent(&basic_agent("session:\n  daily_limit: 2")).await;
    set_limit(&t, json!(1)).await;
    assert_eq!(start_session(&t, &agent).await.0, StatusCode::CREATED);
    let (status, body) = start_session(&t, &agent).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "session_limit_reached")
    );
    // Raised: the agent's second place of the day is still free.
    set_limit(&t, json!(5)).await;
    assert_eq!(start_session(&t, &agent).await.0, StatusCode::CREATED);
    let (status, body) = start_session(&t, &agent).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "daily_limit_exceeded")
    );
}

/// Each attempt is counted before its password is checked: of 40 parallel wrong
/// passwords for one account, only the account's limit (5) are checked (401); the
/// others are refused at once (429 with Retry-After) without hashing.
#[tokio::test]
async fn parallel_sign_ins_cannot_all_pass_the_throttle() {
    let t = TestServer::start().await;
    t.staff("user", "ann@example.com", Value::Null).await;
    let answers = futures::future::join_all((0..40).map(|_| async {
        let resp = t
            .http
            .post(t.url("/api/v1/auth/login"))
            .json(&json!({"email": "ann@example.com", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
        let retry = resp.headers().get("retry-after").cloned();
        (resp.status(), retry)
    }))
    .await;
    let checked = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = answers
        .iter()
        .filter(|(s, r)| *s == StatusCode::TOO_MANY_REQUESTS && r.is_some())
        .count();
    assert_eq!((checked, throttled), (5, 35), "{answers:?}");
}

/// An e-mail address or password too long to be real is refused before it is kept or
/// hashed.
#[tokio::test]
async fn oversized_sign_in_fields_are_refused() {
    let t = TestServer::start().await;
    let long_email = format!("{}@example.com", "a".repeat(10_000));
    let (status, body) = login(&t, &long_email, "wrong-password").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("email"));
    let (status, body) = login(&t, "ann@example.com", &"p".repeat(100_000)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!body.to_string().contains("ppppp"), "{body}");
}

async fn login_via(t: &TestServer, forwarded_for: &str, email: &str, password: &str) -> StatusCode {
    t.http
        .post(t.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

/// Behind a load balancer every sign-in comes from its address: with `--trusted-proxy`
/// the client named in X-Forwarded-For is throttled instead; without it the header is
/// the caller's to write and is ignored.
#[tokio::test]
async fn a_trusted_proxys_forwarded_for_is_the_throttled_address_and_only_then() {
    for trusted in [false, true] {
        let t = TestServer::start_with(|c| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            }
        })
        .await;
        t.staff("user", "bob@example.com", Value::Null).await;
        for i in 0..20 {
            let email = format!("guess{i}@example.com");
            assert_eq!(
                login_via(&t, "203.0.113.9", &email, "wrong-password").await,
                StatusCode::UNAUTHORIZED
            );
        }
        // Another client behind the proxy (the left entry is the client's to forge).
        let other = login_via(
            &t,
            "203.0.113.9, 198.51.100.7",
            "bob@example.com",
            "a-better-password",
        )
        .await;
        let again = login_via(
            &t,
            "198.51.100.7, 203.0.113.9",
            "bob@example.com",
            "a-better-password",
        )
        .await;
        if trusted {
            assert_eq!(other, StatusCode::OK);
            assert_eq!(again, StatusCode::TOO_MANY_REQUESTS);
        } else {
            assert_eq!(other, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(again, StatusCode::TOO_MANY_REQUESTS);
        }
    }
}
