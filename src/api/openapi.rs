//! `/api/openapi.json`, generated from the route table.

use axum::Json;
use serde_json::{json, Map, Value};

use parley_actors::node::EXT_TYPES;
use parley_engine::model::CloseStatus;

use parley_engine::identity::Role;

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
            Auth::Roles(_) | Auth::Profile => json!([{"adminKey": []}, {"userToken": []}]),
            Auth::Agent => json!([{"agentToken": []}, {"userToken": []}]),
            Auth::Public => json!([{"agentToken": []}, {"adminKey": []}, {"userToken": []}]),
            Auth::Super => json!([{"superKey": []}]),
            Auth::NodeAdmin => json!([{"adminKey": []}, {"userToken": []}, {"superKey": []}]),
            Auth::Widget => json!([]),
            Auth::Visitor => json!([{"visitorToken": []}]),
        };
        let roles: Vec<&str> = match doc.auth {
            Auth::Roles(roles) => roles.iter().map(|r| r.as_str()).collect(),
            Auth::Profile => Role::ALL.iter().map(|r| r.as_str()).collect(),
            Auth::Agent => super::PLAYGROUND_ROLES.iter().map(|r| r.as_str()).collect(),
            Auth::Public => super::LOG_READER_ROLES.iter().map(|r| r.as_str()).collect(),
            Auth::NodeAdmin => vec![Role::Admin.as_str()],
            Auth::None | Auth::Super | Auth::Widget | Auth::Visitor => Vec::new(),
        };
        let mut op = json!({
            "summary": doc.summary,
            "tags": [doc.tag],
            "parameters": params,
            "security": security,
            "x-roles": roles,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(body) = request_body(doc.method, doc.path) {
            op["requestBody"] = body;
        }
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
                "userToken": {"type": "http", "scheme": "bearer", "description": "A signed-in user's token (POST /api/v1/auth/login); `x-roles` lists the roles a route allows"},
                "superKey": {"type": "http", "scheme": "bearer", "description": "The deployment's super key (--super-key)"},
                "visitorToken": {"type": "http", "scheme": "bearer", "description": "A widget visitor's token (POST /widget/v1/{widget_id}/visitors): that visitor's own conversations with the widget's agent, nothing else"},
            },
            "schemas": schemas(),
        },
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"schema": {"$ref": format!("#/components/schemas/{name}")}})
}

/// What the routes that take a body accept.
fn request_body(method: &str, path: &str) -> Option<Value> {
    let content = match (method, path) {
        ("post", "/api/v1/agents") | ("put", "/api/v1/agents/{agent_id}") => json!({
            "application/yaml": schema_ref("AgentDefinition"),
            "application/json": schema_ref("AgentDefinition"),
        }),
        ("post", "/chatbot/{agent_id}/session") => {
            json!({"application/json": schema_ref("CreateSession")})
        }
        ("put", "/chatbot/{agent_id}/session/{session_id}") => {
            json!({"application/json": schema_ref("SessionPatch")})
        }
        ("delete", "/chatbot/{agent_id}/session/{session_id}") => {
            json!({"application/json": schema_ref("CloseSession")})
        }
        ("post", "/chatbot/{agent_id}/session/{session_id}/run_v2") => json!({
            "multipart/form-data": {"schema": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "string"},
                "attachments": {"type": "array", "items": {"type": "string", "format": "binary"}},
            }}},
            "application/json": {"schema": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}}},
        }),
        ("patch", "/api/v1/public/sessions/{session_id}/logs/{log_id}") => {
            json!({"application/json": schema_ref("Feedback")})
        }
        _ => return None,
    };
    let optional = method == "delete" || path.ends_with("/session");
    Some(json!({"required": !optional, "content": content}))
}

fn schemas() -> Value {
    let text = json!({"type": "string"});
    let close_statuses: Vec<&str> = CloseStatus::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"}, "details": {}
            }}},
        },
        "AgentDefinition": {
            "type": "object",
            "description": "See the README's agent YAML reference.",
            "required": ["name", "workflow"],
            "properties": {
                "name": text, "identity": text, "speech_style": text, "task": text, "greeting": text,
                "error_message": text,
                "workflow": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                "conversation_results": {"type": "array", "items": {"type": "object", "required": ["field_name"]}},
                "knowledge": {"type": "object"},
                "session": {"type": "object", "properties": {"user_timeout": {"type": "integer"}, "max_duration": {"type": "integer"}}},
                "llm": {"type": "array", "items": {"type": "object", "required": ["kind"]}},
            },
        },
        "CreateSession": {
            "type": "object",
            "properties": {
                "user_id": text, "name": text, "email": text, "phone": text,
                "type": {"type": "string", "enum": EXT_TYPES},
                "args": {"type": "array"}, "kwargs": {"type": "object"}, "user_info": {"type": "object"},
                "channel_id": text, "language": text, "start_phrase": text,
            },
        },
        "SessionPatch": {
            "type": "object",
            "properties": {
                "name": text, "email": text, "phone": text, "language": text, "channel_id": text,
                "start_phrase": text, "mode": {"type": "string", "enum": ["REGULAR", "OPERATOR", "COPILOT"]},
                "kwargs": {"type": "object"}, "user_info": {},
            },
        },
        "CloseSession": {
            "type": "object",
            "properties": {"status": {"type": "string", "enum": close_statuses, "default": "completed"}},
        },
        "Feedback": {
            "type": "object",
            "required": ["feedback", "ext_id"],
            "properties": {"feedback": {"type": "string", "enum": ["GOOD", "BAD", "NONE"]}, "ext_id": text, "agent_id": text},
        },
    })
}

pub async fn spec() -> Json<Value> {
    Json(document())
}
