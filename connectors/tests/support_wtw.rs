//! A recording HTTP server on loopback for the WhatsApp, Teams and webhook tests: every
//! request is recorded and answered by a closure that plays the platform as
//! shared/protocol-facts.md describes (errors and 429s included, chosen by what was
//! asked).
//!
//! Used as `mod support_wtw;` by those tests; Cargo also builds it as a test target of its
//! own, which has nothing to run.
#![allow(
    dead_code,
    reason = "each test crate that includes this module uses only some of it"
)]

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
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ASCII header"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
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
        Reply {
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

/// A fake platform on an ephemeral loopback port.
pub struct FakeServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeServer {
    pub async fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let respond = Arc::new(respond);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (respond, log) = (respond.clone(), log.clone());
            async move {
                let (parts, body) = request.into_parts();
                let recorded = Recorded {
                    method: parts.method,
                    path: parts.uri.path().to_string(),
                    headers: parts.headers,
                    body: to_bytes(body, usize::MAX).await.expect("request body"),
                };
                let reply = respond(&recorded);
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
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeServer { url, requests }
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
}

/// A loopback URL nothing listens on, for transport errors.
pub async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// `chars` characters cycling through one- to four-byte ones, without whitespace, so a
/// split can only fall on the limit.
pub fn multibyte_text(chars: usize) -> String {
    ['a', 'é', 'ж', '€', '語', '😀', '𝄞', 'z']
        .iter()
        .cycle()
        .take(chars)
        .collect()
}
