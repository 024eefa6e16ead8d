use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::*;

/// A Redis server of this test's own, so it can be stopped and started again without
/// disturbing other tests.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Option<Child> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // Ready when it accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(child);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// None (after a notice) when `redis-server` is not installed, unless services are
    /// required.
    fn start() -> Option<PrivateRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        match Self::start_on(port) {
            Some(child) => Some(PrivateRedis {
                port,
                child: Some(child),
            }),
            None if std::env::var("PARLEY_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
                panic!("cannot start redis-server and PARLEY_REQUIRE_SERVICES=1")
            }
            None => {
                eprintln!("skipping: cannot start redis-server");
                None
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.child = Some(Self::start_on(self.port).expect("redis restarts on its port"));
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Redis goes away during traffic (and comes back empty, as a restart without persistence
/// does): owners keep serving their sessions, new claims answer 503 meanwhile, and
/// everything recovers without a manual step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_during_traffic_recovers_by_itself() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let redis_url = redis.url();
    let o = NodeOptions {
        database_url: svc.db.url(),
        redis_url: &redis_url,
        cluster: &svc.cluster,
        lease_ttl_ms: 2000,
    };
    let a = NodeProc::start("r1", &o);
    let b = NodeProc::start("r2", &o);
    let http = client();
    let agent = create_agent(&http, &a.url, &agent_yaml("")).await;
    let owned = create_session(&http, &a.url, &agent).await;
    let (status, _) = say(&http, &a.url, &agent, &owned, "one", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let fresh = create_session(&http, &b.url, &agent).await;

    redis.stop();
    // Not ready without the registry, and saying why.
    let (status, body) = json_of(http.get(format!("{}/readyz", b.url)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["store"], "ok", "{body}");
    assert_ne!(body["registry"], "ok", "{body}");
    // The owner serves its session without Redis.
    let (status, body) = say(&http, &a.url, &agent, &owned, "two", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // A session nobody owns cannot be claimed: a clear 503, quickly.
    let started = Instant::now();
    let (status, body) = say(&http, &b.url, &agent, &fresh, "unclaimable", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    redis.restart();
    // Back without any data: nodes re-register and re-claim what they hold.
    let (_, _) = say_until_ok(
        &http,
        std::slice::from_ref(&b.url),
        &agent,
        &fresh,
        "claimed",
        "fresh-1",
        15,
    )
    .await;
    let (_, _) = say_until_ok(
        &http,
        std::slice::from_ref(&b.url),
        &agent,
        &owned,
        "three",
        "owned-3",
        15,
    )
    .await;
    assert_eq!(
        human_texts(&http, &a.url, &agent, &owned).await,
        ["one", "two", "three"]
    );
    assert_eq!(
        human_texts(&http, &a.url, &agent, &fresh).await,
        ["claimed"]
    );
    // Both nodes re-register with their next heartbeats.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = cluster_status(&http, &a.url).await;
        if st["nodes"].as_array().is_some_and(|n| n.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "nodes did not re-register: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((a, b));
    svc.db.drop_now().await;
}

/// Postgres goes away during traffic (every connection cut, new ones refused, as in a
/// restart): turns answer 503 with a JSON error instead of hanging, nothing acknowledged is
/// lost, and the nodes recover by themselves when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_during_traffic_recovers_by_itself() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let proxy = Proxy::start("127.0.0.1:5432".into()).await;
    let url = svc
        .db
        .url()
        .replacen(":5432/", &format!(":{}/", proxy.port), 1);
    assert_ne!(url, svc.db.url(), "the test database URL names port 5432");
    let o = NodeOptions {
        database_url: &url,
        redis_url: &svc.redis_url,
        cluster: &svc.cluster,
        lease_ttl_ms: 2000,
    };
    let a = NodeProc::start("p1", &o);
    let b = NodeProc::start("p2", &o);
    let http = client();
    let agent = create_agent(&http, &a.url, &agent_yaml("")).await;
    let sid = create_session(&http, &a.url, &agent).await;
    let (status, _) = say(&http, &a.url, &agent, &sid, "before", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    proxy.cut().await;
    let (status, body) = json_of(http.get(format!("{}/readyz", a.url)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_ne!(body["store"], "ok", "{body}");
    for base in [&a.url, &b.url] {
        let started = Instant::now();
        let (status, body) = say(&http, base, &agent, &sid, "during", None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
    }
    proxy.restore().await;
    let bases = [a.url.clone(), b.url.clone()];
    say_until_ok(&http, &bases, &agent, &sid, "after", "after-1", 30).await;
    assert_eq!(
        human_texts(&http, &b.url, &agent, &sid).await,
        ["before", "after"]
    );
    drop((a, b));
    svc.db.drop_now().await;
}
