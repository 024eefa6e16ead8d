//! The agent the harness talks to: its definition and its creation through the admin API.

use anyhow::Context;
use serde_json::Value;

use crate::cli::MockKind;
use crate::client::Agent;

/// A small FAQ agent; with a mock URL its only backend is the mock, otherwise the builtin
/// backend answers from the FAQ.
pub fn definition(mock: Option<(MockKind, &str)>) -> String {
    let llm = match mock {
        None => String::new(),
        Some((MockKind::Webhook, url)) => format!(
            "llm:\n  - name: mock\n    kind: webhook\n    url: {url}/webhook\n    timeout_secs: 60\n"
        ),
        Some((MockKind::Openai, url)) => format!(
            "llm:\n  - name: mock\n    kind: openai\n    base_url: {url}/v1\n    model: mock\n    timeout_secs: 60\n"
        ),
    };
    format!(
        r#"name: Loadtest Agent
greeting: Hi there!
workflow:
  - name: Main
    kind: StateConfig
    init_state: true
    description: Answer questions.
    available_tools: [SendChatMessage, SetResult, ChangeState, FinishSession]
    transitions:
      - to: Human
        when_keywords: [operator, human]
  - name: Human
    available_tools: [SendChatMessage, ChangeState]
    transitions: [Main]
conversation_results:
  - field_name: HumanEmail
    field_type: email
knowledge:
  faq:
    - question: What are your opening hours?
      answer: We are open from 9 to 17.
    - question: How much does the premium plan cost?
      answer: The premium plan costs 12.90 per month.
    - question: Can I pay by card?
      answer: Yes, we accept all major debit and credit cards.
    - question: Where do I find my invoice?
      answer: Invoices are in your account under Billing.
{llm}"#
    )
}

/// Creates the agent on `target` and starts it.
pub async fn create(
    http: &reqwest::Client,
    target: &str,
    admin_key: &str,
    yaml: String,
) -> anyhow::Result<Agent> {
    let created = admin_call(
        http.post(format!("{target}/api/v1/agents"))
            .header("content-type", "application/yaml")
            .body(yaml),
        admin_key,
        "creating the agent",
    )
    .await?;
    let field = |k: &str| {
        created[k]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the created agent has no {k}: {created}"))
    };
    let agent = Agent {
        id: field("id")?,
        token: field("token")?,
    };
    let started = admin_call(
        http.post(format!("{target}/api/v1/agents/{}/start", agent.id)),
        admin_key,
        "starting the agent",
    )
    .await?;
    anyhow::ensure!(
        started["status"] == "Running",
        "the agent did not start: {started}"
    );
    Ok(agent)
}

async fn admin_call(
    req: reqwest::RequestBuilder,
    admin_key: &str,
    what: &str,
) -> anyhow::Result<Value> {
    let resp = req
        .bearer_auth(admin_key)
        .send()
        .await
        .with_context(|| what.to_string())?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| what.to_string())?;
    anyhow::ensure!(status.is_success(), "{what}: {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("{what}: answer is not JSON: {text}"))
}
