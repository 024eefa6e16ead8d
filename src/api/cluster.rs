//! Admin API: the cluster as this node sees it.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::extract::AdminAuth;
use super::AppState;

/// This node, the live nodes, and what the registry did here (claims, takeovers, round
/// trips to Redis, forwarded requests).
pub async fn status(State(st): State<AppState>, _admin: AdminAuth) -> ApiResult<Json<Value>> {
    let registry = st.node.registry();
    let counts = registry.stats().snapshot();
    // The node list needs the registry; the rest is this node's own and always answers.
    let (nodes, registry_error) = match registry.nodes().await {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Json(json!({
        "node": registry.node(),
        "clustered": registry.clustered(),
        "lease_ttl_ms": if registry.clustered() { registry.lease_ttl().as_millis() as u64 } else { 0 },
        "nodes": nodes,
        "registry_error": registry_error,
        "resident_sessions": st.node.resident_sessions(),
        "registry": counts,
    })))
}
