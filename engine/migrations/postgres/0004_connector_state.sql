-- What connectors keep per connection: inbound deliveries (for deduplication and to finish
-- them after a crash), the session each chat talks in, an event log, where polling resumes,
-- and outgoing webhook events waiting to be sent. delete_connection removes all of it.
-- Connection ids are text, as in connections; timestamps are bigint unix nanoseconds.

-- A delivery stays (done) after its turn, so a redelivery is still known as a duplicate
-- until inbox_prune forgets it. seq orders pending deliveries.
CREATE TABLE connector_inbox (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id text NOT NULL,
    dedup_id      text NOT NULL,
    received_at   bigint NOT NULL,
    message       text NOT NULL,
    done          boolean NOT NULL DEFAULT false,
    UNIQUE (connection_id, dedup_id)
);

CREATE INDEX connector_inbox_pending ON connector_inbox (connection_id, seq) WHERE NOT done;
CREATE INDEX connector_inbox_done ON connector_inbox (received_at) WHERE done;

CREATE TABLE channel_sessions (
    connection_id text NOT NULL,
    chat_key      text NOT NULL,
    session_id    uuid NOT NULL,
    started_at    bigint NOT NULL,
    PRIMARY KEY (connection_id, chat_key)
);

CREATE TABLE connection_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id text NOT NULL,
    at            bigint NOT NULL,
    kind          text NOT NULL,
    detail        text NOT NULL
);

CREATE INDEX connection_events_connection ON connection_events (connection_id, id);

CREATE TABLE connector_cursors (
    connection_id text PRIMARY KEY,
    cursor        text NOT NULL
);

-- An event is due once next_attempt_at has passed; a claim leases it by moving
-- next_attempt_at forward. Each connection's events go out in id order.
CREATE TABLE webhook_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id   text NOT NULL,
    msg_id          text NOT NULL,
    event_type      text NOT NULL,
    body            text NOT NULL,
    attempts        bigint NOT NULL,
    next_attempt_at bigint NOT NULL,
    last_error      text,
    created_at      bigint NOT NULL
);

CREATE INDEX webhook_outbox_connection ON webhook_outbox (connection_id, id);
