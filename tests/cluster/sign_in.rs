//! Sign-in throttling across nodes.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

/// Wrong passwords for one account sent to two nodes count in one window: the sixth is
/// refused whichever node it reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_the_sign_in_throttle() {
    let Some(svc) = Services::get().await else {
        return;
    };
    let o = svc.nodes(2000);
    let nodes = start_nodes(&["n1", "n2"], &o);
    let http = client();
    let (status, body) = json_of(
        http.post(format!("{}/api/v1/users", nodes[0].url))
            .bearer_auth(ADMIN_KEY)
            .json(
                &json!({"name": "Ann", "email": "ann@example.com", "role": "user",
                          "password": "temporary-pass-1"}),
            )
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut answers = Vec::new();
    for i in 0..6 {
        let (status, _) = json_of(
            http.post(format!("{}/api/v1/auth/login", nodes[i % 2].url))
                .json(&json!({"email": "ann@example.com", "password": "wrong-password"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        answers.push(status);
    }
    assert_eq!(answers[..5], [StatusCode::UNAUTHORIZED; 5], "{answers:?}");
    assert_eq!(answers[5], StatusCode::TOO_MANY_REQUESTS, "{answers:?}");
    drop(nodes);
    svc.db.drop_now().await;
}
