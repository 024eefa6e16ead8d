//! What operators watch: `GET /metrics` (Prometheus text), `GET /readyz`, and the
//! middleware that gives every request an id (on every log line of its handling, turns in
//! session actors included) and counts it by route and status.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use parley_engine::telemetry;
use serde_json::json;
use tracing::Instrument;

use super::AppState;

pub const REQUEST_ID: &str = "x-request-id";

/// Latency buckets in seconds: sub-millisecond turns to slow LLM calls.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// The process-wide Prometheus recorder (installed on first use: one per process, however
/// many servers a test starts).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(telemetry::COMMIT_BATCH.into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        telemetry::describe();
        handle
    })
}

pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    st.node.sample_metrics();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
}

/// Ready when the store and the registry answer; 503 with what is wrong otherwise.
pub async fn readyz(State(st): State<AppState>) -> Response {
    let store = st.node.store_ready().await.err().map(|e| e.to_string());
    let registry = st.node.registry_ready().await.err().map(|e| e.to_string());
    let ready = store.is_none() && registry.is_none();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "store": store.as_deref().unwrap_or("ok"),
        "registry": registry.as_deref().unwrap_or("ok"),
    });
    (status, Json(body)).into_response()
}

/// The `method` label: the standard methods by name, any other (a caller may send any
/// token) as `other`, so callers cannot grow the number of series.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: &[Method] = &[
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    KNOWN
        .iter()
        .find(|m| *m == method)
        .map_or("other", Method::as_str)
}

/// The `status` label: registered status codes only (a forwarded answer could carry any
/// three digits).
fn status_label(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(_) => status.as_str().to_string(),
        None => "other".to_string(),
    }
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_string())
}

/// Gives the request an id (the caller's `x-request-id`, else a new one), handles it in a
/// span carrying that id, answers the id, and counts the request.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let mut response = next.run(req).instrument(span).await;
    let status = status_label(response.status());
    metrics::counter!(telemetry::HTTP_REQUESTS_TOTAL, "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(telemetry::HTTP_SECONDS, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}
