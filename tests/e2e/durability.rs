//! Restarting the server keeps every acknowledged turn, agents and tokens.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_restart_keeps_history_agents_and_tokens() {
    let t = TestServer::start().await;
    let a = t.agent(&basic_agent("")).await;
    let sid = t.session(&a, json!({"user_id": "u-restart"})).await;
    let mut answers = Vec::new();
    for i in 0..20 {
        answers.push(
            t.say(&a, &sid, &format!("question {i}: opening hours?"))
                .await["response"]
                .clone(),
        );
    }
    t.say(&a, &sid, "I need a human").await;
    let before = t.log(&a, &sid).await;
    assert_eq!(before.len(), 43);

    let (dir, guard) = t.stop().await;
    let t = TestServer::start_in(dir, |_| {}).await;
    // The agent was running, so it runs again; its token still works.
    let after = t.log(&a, &sid).await;
    assert_eq!(after, before);
    let s = t.get_session(&a, &sid).await;
    assert_eq!(s["workflow_state"], "Human");
    assert_eq!(s["message_count"], 43);
    let r = t.say(&a, &sid, "and now?").await;
    assert_eq!(r["metadata"]["human_message_id"], 44);
    drop(guard);
}
