//! Every metric parley records, named once (Prometheus conventions: `parley_` prefix,
//! base units, `_total` counters, low-cardinality labels — never a session id), with its
//! description. The server installs the Prometheus recorder and serves `GET /metrics`.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Turns handled by session actors; label `outcome` (`ok`, or the error code).
pub const TURNS_TOTAL: &str = "parley_turns_total";
/// A turn inside its session actor, from its first step to its commit.
pub const TURN_SECONDS: &str = "parley_turn_duration_seconds";
/// HTTP requests; labels `route` (the route template or `unmatched`), `method` (standard
/// methods, else `other`), `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "parley_http_requests_total";
/// HTTP request duration, end to end as the server sees it; labels `route`, `method`.
pub const HTTP_SECONDS: &str = "parley_http_request_duration_seconds";
/// Requests to LLM backends; labels `backend` (its kind) and `outcome` (`ok`, `timeout`,
/// or the error kind).
pub const LLM_REQUESTS_TOTAL: &str = "parley_llm_requests_total";
/// LLM backend request duration; label `backend`.
pub const LLM_SECONDS: &str = "parley_llm_request_duration_seconds";
/// Group commits; label `outcome` (`ok`, `error`, `isolated`: the batch failed and its
/// requests were committed one by one).
pub const COMMITS_TOTAL: &str = "parley_persistence_commits_total";
/// Requests (turns and other session writes) per group commit.
pub const COMMIT_BATCH: &str = "parley_persistence_batch_size";
pub const COMMIT_SECONDS: &str = "parley_persistence_commit_duration_seconds";
/// Folds of the SQLite store's newest messages into its message index.
pub const INDEX_FOLD_SECONDS: &str = "parley_store_index_fold_duration_seconds";
/// Messages entered into the SQLite store's message index by folds.
pub const INDEXED_TOTAL: &str = "parley_store_indexed_messages_total";
/// Session writes refused because a newer owner claimed the session.
pub const FENCED_TOTAL: &str = "parley_persistence_fenced_total";
/// Session writes waiting for the group-commit writer (sampled at scrape).
pub const COMMIT_QUEUE: &str = "parley_persistence_queue_depth";
pub const SESSIONS_CREATED_TOTAL: &str = "parley_sessions_created_total";
/// Sessions closed; label `status`.
pub const SESSIONS_CLOSED_TOTAL: &str = "parley_sessions_closed_total";
/// Session actors resident on this node (sampled at scrape).
pub const SESSIONS_RESIDENT: &str = "parley_sessions_resident";
pub const ACTIVATIONS_TOTAL: &str = "parley_session_activations_total";
pub const PASSIVATIONS_TOTAL: &str = "parley_session_passivations_total";
/// Actors restarted by their supervisor; label `kind`.
pub const RESTARTS_TOTAL: &str = "parley_supervisor_restarts_total";
/// Live actors; label `kind` (sampled at scrape).
pub const ACTORS: &str = "parley_actors";
/// The deepest mailbox among actors of a kind (requests queued or in progress); label
/// `kind` (sampled at scrape).
pub const MAILBOX_DEPTH_MAX: &str = "parley_mailbox_depth_max";
/// Registry operations; label `op` (`claim`, `claim_lost`, `takeover`, `lookup`,
/// `release`, `heartbeat`, `forward`, `error`).
pub const REGISTRY_OPS_TOTAL: &str = "parley_registry_operations_total";
/// Round trips to Redis on behalf of sessions (heartbeats apart).
pub const REGISTRY_ROUND_TRIPS_TOTAL: &str = "parley_registry_round_trips_total";
/// The process's resident memory (sampled at scrape).
pub const RESIDENT_MEMORY: &str = "parley_process_resident_memory_bytes";

/// Inbound platform deliveries; labels `platform` and `outcome` (`accepted`,
/// `duplicate`, `rejected`, `ignored`, `handshake`, `status`, `malformed`, `disabled`).
pub const CONNECTOR_INBOUND_TOTAL: &str = "parley_connector_inbound_total";
/// Platform deliveries whose signature or secret was checked; label `platform`. Once per
/// delivery, on the node that received it (the owner of the chat's session gets it
/// verified).
pub const CONNECTOR_VERIFICATIONS_TOTAL: &str = "parley_connector_verifications_total";
/// Verified customer messages handed between nodes; label `outcome` (`sent`: the owner
/// recorded them, `fallback`: the owner could not be reached and they were recorded
/// here, `received`: recorded for another node, `refused`: an unauthenticated or
/// malformed hand-over).
pub const NODE_HANDOVERS_TOTAL: &str = "parley_node_handovers_total";
/// Outbound platform calls; labels `platform` and `outcome` (`sent`, `rate_limited`,
/// `error`).
pub const CONNECTOR_OUTBOUND_TOTAL: &str = "parley_connector_outbound_total";
/// Outbound calls waiting for a rate limit or a queue slot; label `platform`.
pub const CONNECTOR_QUEUED: &str = "parley_connector_outbound_queued";
/// Outgoing webhook events waiting in the outbox (sampled by the deliverer).
pub const WEBHOOK_OUTBOX: &str = "parley_webhook_outbox_depth";

/// Flow runs of campaign participants; label `trigger`.
pub const CAMPAIGN_RUNS_TOTAL: &str = "parley_campaign_flow_runs_total";
/// Communications entering a status (planned, started, delivered, …); label `status`.
pub const CAMPAIGN_COMMUNICATIONS_TOTAL: &str = "parley_campaign_communications_total";
/// Participant actors alive (participants with work in progress; sampled at scrape).
pub const CAMPAIGN_PARTICIPANTS_RESIDENT: &str = "parley_campaign_participants_resident";

/// Registers the descriptions (call once, after installing a recorder).
pub fn describe() {
    describe_counter!(
        CAMPAIGN_RUNS_TOTAL,
        "Flow runs of campaign participants, by trigger"
    );
    describe_counter!(
        CAMPAIGN_COMMUNICATIONS_TOTAL,
        "Campaign communications entering a status, by status"
    );
    describe_gauge!(
        CAMPAIGN_PARTICIPANTS_RESIDENT,
        "Campaign participant actors alive (participants with work in progress)"
    );
    describe_counter!(TURNS_TOTAL, "Turns handled by session actors, by outcome");
    describe_counter!(
        CONNECTOR_INBOUND_TOTAL,
        "Inbound platform deliveries by platform and outcome"
    );
    describe_counter!(
        CONNECTOR_VERIFICATIONS_TOTAL,
        "Platform deliveries verified (signature or secret checked), by platform"
    );
    describe_counter!(
        NODE_HANDOVERS_TOTAL,
        "Verified customer messages handed to the node that owns their session, by outcome"
    );
    describe_counter!(
        CONNECTOR_OUTBOUND_TOTAL,
        "Outbound platform calls by platform and outcome"
    );
    describe_gauge!(
        CONNECTOR_QUEUED,
        "Outbound platform calls waiting for a rate limit or queue slot"
    );
    describe_gauge!(
        WEBHOOK_OUTBOX,
        "Outgoing webhook events waiting for delivery"
    );
    describe_histogram!(
        TURN_SECONDS,
        Unit::Seconds,
        "Turn duration inside the session actor, commit included"
    );
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        HTTP_SECONDS,
        Unit::Seconds,
        "HTTP request duration by route and method"
    );
    describe_counter!(
        LLM_REQUESTS_TOTAL,
        "LLM backend requests by backend kind and outcome"
    );
    describe_histogram!(
        LLM_SECONDS,
        Unit::Seconds,
        "LLM backend request duration by backend kind"
    );
    describe_counter!(COMMITS_TOTAL, "Group commits by outcome");
    describe_histogram!(COMMIT_BATCH, "Session write requests per group commit");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Group commit duration");
    describe_histogram!(
        INDEX_FOLD_SECONDS,
        Unit::Seconds,
        "Folds of the newest SQLite messages into the message index"
    );
    describe_counter!(
        INDEXED_TOTAL,
        "Messages entered into the SQLite message index by folds"
    );
    describe_counter!(
        FENCED_TOTAL,
        "Session writes refused because a newer owner claimed the session"
    );
    describe_gauge!(
        COMMIT_QUEUE,
        "Session write requests waiting for the group-commit writer"
    );
    describe_counter!(SESSIONS_CREATED_TOTAL, "Sessions created");
    describe_counter!(SESSIONS_CLOSED_TOTAL, "Sessions closed, by close status");
    describe_gauge!(SESSIONS_RESIDENT, "Session actors resident on this node");
    describe_counter!(ACTIVATIONS_TOTAL, "Session actors activated");
    describe_counter!(PASSIVATIONS_TOTAL, "Session actors passivated or evicted");
    describe_counter!(
        RESTARTS_TOTAL,
        "Actors restarted by their supervisor, by kind"
    );
    describe_gauge!(ACTORS, "Live actors by kind");
    describe_gauge!(
        MAILBOX_DEPTH_MAX,
        "Deepest mailbox (requests queued or in progress) by actor kind"
    );
    describe_counter!(REGISTRY_OPS_TOTAL, "Registry operations by kind");
    describe_counter!(
        REGISTRY_ROUND_TRIPS_TOTAL,
        "Round trips to Redis on behalf of sessions"
    );
    describe_gauge!(
        RESIDENT_MEMORY,
        Unit::Bytes,
        "Resident memory of the process"
    );
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`), if known.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
