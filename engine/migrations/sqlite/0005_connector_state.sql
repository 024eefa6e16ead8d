-- What connectors keep per connection: inbound deliveries (for deduplication and to finish
-- them after a crash), the session each chat talks in, an event log, where polling resumes,
-- and outgoing webhook events waiting to be sent. delete_connection removes all of it.

-- A delivery stays (done = 1) after its turn, so a redelivery is still known as a duplicate
-- until inbox_prune forgets it. seq orders pending deliveries; it is compared only among
-- rows that exist, so a reused rowid does no harm.
CREATE TABLE connector_inbox (
    seq           INTEGER PRIMARY KEY,
    connection_id TEXT NOT NULL,
    dedup_id      TEXT NOT NULL,
    received_at   TEXT NOT NULL,
    message       TEXT NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    UNIQUE (connection_id, dedup_id)
);

CREATE INDEX connector_inbox_pending ON connector_inbox (connection_id, seq) WHERE done = 0;
CREATE INDEX connector_inbox_done ON connector_inbox (received_at) WHERE done = 1;

CREATE TABLE channel_sessions (
    connection_id TEXT NOT NULL,
    chat_key      TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    PRIMARY KEY (connection_id, chat_key)
);

-- AUTOINCREMENT: event and outbox ids are handed out, so they must never be reused.
CREATE TABLE connection_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL,
    at            TEXT NOT NULL,
    kind          TEXT NOT NULL,
    detail        TEXT NOT NULL
);

CREATE INDEX connection_events_connection ON connection_events (connection_id, id);

CREATE TABLE connector_cursors (
    connection_id TEXT PRIMARY KEY NOT NULL,
    cursor        TEXT NOT NULL
);

-- An event is due once next_attempt_at has passed; a claim leases it by moving
-- next_attempt_at forward. Each connection's events go out in id order.
CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id   TEXT NOT NULL,
    msg_id          TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    created_at      TEXT NOT NULL
);

CREATE INDEX webhook_outbox_connection ON webhook_outbox (connection_id, id);
