//! A recording HTTP server on loopback for the platform fakes: every request is recorded,
//! and answered by a closure that plays the platform as shared/protocol-facts.md describes
//! (errors and 429s included), unless a canned answer was queued.
//!
//! Used as `mod support;` by each platform's tests.
#![allow(
    dead_code,
    reason = "each test crate that includes this module uses only some of it"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::Value;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// The path as sent, percent-encoding included.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived (for rate-limit checks).
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }
}

/// An answer: status, headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Behaviour = dyn Fn(&Recorded) -> Reply + Send + Sync;

pub struct Fake {
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    queued: Arc<Mutex<VecDeque<Reply>>>,
}

impl Fake {
    /// Starts a fake on an ephemeral loopback port answering with `behaviour`.
    pub async fn start(behaviour: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let queued = Arc::new(Mutex::new(VecDeque::<Reply>::new()));
        let (log, queue) = (requests.clone(), queued.clone());
        let app = Router::new().fallback(move |request: Request| {
            let (behaviour, log, queue) = (behaviour.clone(), log.clone(), queue.clone());
            async move {
                let (parts, body) = request.into_parts();
                let recorded = Recorded {
                    at: std::time::Instant::now(),
                    method: parts.method,
                    path: parts.uri.path().to_owned(),
                    headers: parts.headers,
                    body: to_bytes(body, usize::MAX).await.expect("request body"),
                };
                let canned = queue.lock().unwrap().pop_front();
                let reply = canned.unwrap_or_else(|| behaviour(&recorded));
                log.lock().unwrap().push(recorded);
                let mut response = Response::new(Body::from(reply.body));
                *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                for (name, value) in reply.headers {
                    response
                        .headers_mut()
                        .insert(name, value.parse().expect("header value"));
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base,
            requests,
            queued,
        }
    }

    /// Answers the next request with `reply` instead of the fake behaviour.
    pub fn queue(&self, reply: Reply) {
        self.queued.lock().unwrap().push_back(reply);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The recorded requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }

    /// The only request so far.
    pub fn single_request(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one request: {requests:#?}"
        );
        requests.into_iter().next().unwrap()
    }
}

/// A loopback address nothing listens on, for transport errors.
pub async fn dead_base() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A text of `chars` characters mixing one-, two-, three- and four-byte characters (and
/// no whitespace, so splits fall exactly on the limit).
pub fn multibyte_text(chars: usize) -> String {
    ['a', 'é', 'ж', '€', '語', '😀', '𝄞', 'z']
        .iter()
        .cycle()
        .take(chars)
        .collect()
}
