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

/// A fixed 2048-bit RSA test key (`openssl genrsa 2048`) for signing Teams (Bot
/// Framework) tokens, used for nothing else.
pub const TEST_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCXBAHpWRDgOigS\n\
ax1LIeBoyLGqt0swLneDf25+5W7Xl9YmAez6FypCqgLMwe2vNLRKPdLF3VrrXwa+\n\
/Gu2msiIg6VLMANlJeIsM5JS5P7I+ui2yynkejFXAHfpp1goy2wH2pXzBp80N/bM\n\
sTS4nUN8u6TclwRNEYyULsoFFdkOZQk4IjFtKid6YOElNQ9G3x5F0UXIkMqJT0Sd\n\
seA2vWDRW3YSvu5G9MlA0w7G/SjgXxiEgLR6I0rt31bw9PLB+3h4YV9VUKJ+LhkR\n\
rqzLG5U1VuTKlR625P+hJU0zf420zUDnSN+c3+M0F/KMOjNtSYmbKKWzE5To3pk7\n\
f0deO6mBAgMBAAECggEAA2eezxRH6LT0S4ADPnr9IdepMSG7Tf2KNRqF0vzDbD8b\n\
NVWp8l8x1SQbS+MGbm1oMDFRzni7EJ9JRLvmW3evaZaFlEWjmfT0nbhW8PatQOTu\n\
o2ppX3eazleaHILo863XGcaQRr+sOLjsn/j8fjoQzV/iARWIOQrvf2AeWWbV8ziu\n\
jPRKckvDbaE1h3G8BKBe5XL/1+75GYcerJ7X24g5pvvy7uBMx5kILxiU36T1gW6o\n\
jmLpg6LNTexbH436YAo27GpU+zVKQd1zFgs4c8IOFAzqA1G1OWRrOb+uP+2ZP6Wa\n\
BBuCAU5n7Z6di9vWCc20su+UgCw4CQF88t0pGyhSbQKBgQDTJg7UNWnYCGXXXoj4\n\
ggxYeiwWXDAH8lUYAjRVs522mGUk2ThjQHUrQY8wTUC+/64zJlBjEsyjGknCAlcK\n\
L+jd+SD9efMviD6gOzKl9p2Up6+v8kLcrSL9Ub58ZNHiprDIqLefHOTMVVvg3Ycm\n\
ALyCcZveA8wz51r6KzprNXjadQKBgQC3GAIdDgSXkSv4S0ECRsyID5vHWfykLuYo\n\
NJos50e2fMY5Z0hRNFt5L9xW6C/ODYkt1sBeXFNF4iry+3L3toNXd8WMHCUEVrw2\n\
EDKf58QC7oiLKIAiZszjqHxfML0WEf36MYLlQVInMes1kLe4JLzCcRl9Pe5yvXpy\n\
WIqDmWd5XQKBgQC0xsq/aRO7wEThRbDjgwRq4/7HDhqZUyMDsS95iJSo9oTyLYAX\n\
ieJHLJQZeKrMXD+az1zX1gqaQjGQB0zaDfbDxT43hqdstKtZqBVO/nwgAAltDG+u\n\
XBWu6MO74N3JvYlx4vGDKsvBHfvR5BiHsu2yiO44AOxeK+A6e7RCgb982QKBgQCW\n\
lTxHwRutvEu5bcsNoETfMlcgYbYTIi9QqdKTU7P7NiuhUnx7rN/+j4pcP6Hxidhk\n\
xtZ3xN8H/rbsGDm52XW0HmFulkcrhlpM7I12Ths7fgr2yFx57qpcIloHwAIDgNCt\n\
UMMi4dI7Qib8awVugWhtUq9v/dt6qrNmD8P779LWUQKBgG+U6oYtB7+FmUTsKmJg\n\
/FvjUskHYCrAy2qmPPU6iQBGYJQnlmCF9QmROq8mOnTr9jbdWn1kpxTB1euAlDYk\n\
4q/Tv1nf1adaZigMOPlxnds/rlOJHPTNF8LDoci3Ti6yhDDBHsDqszc+qcM48Y5+\n\
+LkeZfq1sAnbSy9iySGzDA+Z\n\
-----END PRIVATE KEY-----";
/// Its public half as a JWK (`n` base64url, `e` = 65537).
pub const TEST_KEY_N: &str = "lwQB6VkQ4DooEmsdSyHgaMixqrdLMC53g39ufuVu15fWJgHs-hcqQqoCzMHtrzS0Sj3Sxd1a618GvvxrtprIiIOlSzADZSXiLDOSUuT-yProtssp5HoxVwB36adYKMtsB9qV8wafNDf2zLE0uJ1DfLuk3JcETRGMlC7KBRXZDmUJOCIxbSonemDhJTUPRt8eRdFFyJDKiU9EnbHgNr1g0Vt2Er7uRvTJQNMOxv0o4F8YhIC0eiNK7d9W8PTywft4eGFfVVCifi4ZEa6syxuVNVbkypUetuT_oSVNM3-NtM1A50jfnN_jNBfyjDozbUmJmyilsxOU6N6ZO39HXjupgQ";
pub const TEST_KEY_E: &str = "AQAB";
