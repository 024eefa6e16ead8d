//! `/api/openapi.json` lists exactly the routes the router serves.

use std::collections::BTreeSet;

use crate::support::*;

#[tokio::test]
async fn the_spec_matches_the_router() {
    let t = TestServer::start().await;
    let (status, spec) =
        json_of(t.http.get(t.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(spec["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = parley::api::routes()
        .iter()
        .map(|(doc, _)| (doc.method.to_uppercase(), doc.path.to_string()))
        .collect();
    assert_eq!(documented, routed);
    assert!(documented.len() >= 20);
    let run = &spec["paths"]["/chatbot/{agent_id}/session/{session_id}/run_v2"]["post"];
    assert_eq!(run["requestBody"]["required"], true);
    assert!(run["requestBody"]["content"]["multipart/form-data"].is_object());
    // Every schema a route refers to exists.
    for r in spec.to_string().split("#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            spec["components"]["schemas"][name].is_object(),
            "missing schema {name}"
        );
    }

    // Every documented operation is served (never the unknown-route fallback).
    for (method, path) in &documented {
        let concrete = path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    seg.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = t.http.request(m, t.url(&concrete)).send().await.unwrap();
        let (status, body) = json_of(resp).await;
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(
            code != "route_not_found" && code != "method_not_allowed",
            "{method} {path}: {status} {body}"
        );
    }
}
