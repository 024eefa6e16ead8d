//! `/api/openapi.json`, generated from the route table.

use axum::Json;
use serde_json::{json, Map, Value};

use super::{routes, Auth};

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (doc, _) in routes() {
        let params: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match doc.auth {
            Auth::None => json!([]),
            Auth::Admin => json!([{"adminKey": []}]),
            Auth::Agent => json!([{"agentToken": []}]),
            Auth::Public => json!([{"agentToken": []}, {"adminKey": []}]),
        };
        let op = json!({
            "summary": doc.summary,
            "tags": [doc.tag],
            "parameters": params,
            "security": security,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        paths
            .entry(doc.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path items are objects")
            .insert(doc.method.to_string(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "parley", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminKey": {"type": "http", "scheme": "bearer", "description": "The tenant's admin API key"},
                "agentToken": {"type": "http", "scheme": "bearer", "description": "The agent's chat API token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}, "details": {}
                    }}},
                },
            },
        },
    })
}

pub async fn spec() -> Json<Value> {
    Json(document())
}
