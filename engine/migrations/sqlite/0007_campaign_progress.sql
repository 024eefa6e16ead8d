-- Campaigns at work: the trigger an upload leaves on a participant, its latest conversation
-- results, the communications flows plan, the triggers queued for participants, and the
-- nodes their flow runs pass. Communications are records read and written whole (JSON
-- `data`); their columns repeat what queries look them up by and are rewritten with it.
-- delete_participant and delete_campaign remove these rows explicitly.

-- pending: 'created' or 'updated', NULL when no trigger waits. Every participant uploaded
-- before this migration never had its participant_created trigger run, so it is pending.
ALTER TABLE participants ADD COLUMN pending TEXT;
ALTER TABLE participants ADD COLUMN result TEXT NOT NULL DEFAULT '{}';
ALTER TABLE participants ADD COLUMN result_at TEXT;
UPDATE participants SET pending = 'created';

CREATE INDEX participants_pending ON participants (campaign_id, id) WHERE pending IS NOT NULL;

-- due_at: when a Planned communication must be looked at (its start, or its cancellation
-- if that comes first); meaningless in other statuses, which the partial index leaves out.
CREATE TABLE communications (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL,
    campaign_id    TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    status         TEXT NOT NULL,
    channel        TEXT NOT NULL,
    due_at         TEXT NOT NULL,
    session_id     TEXT,
    connection_id  TEXT,
    message_id     TEXT,
    created_at     TEXT NOT NULL,
    data           TEXT NOT NULL
);

CREATE INDEX communications_due ON communications (campaign_id, due_at, id)
    WHERE status = 'Planned';
CREATE INDEX communications_participant ON communications (participant_id, created_at, id);
CREATE INDEX communications_session ON communications (session_id, created_at, id)
    WHERE session_id IS NOT NULL;
CREATE INDEX communications_message ON communications (connection_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX communications_stats ON communications (campaign_id, status, channel);

-- AUTOINCREMENT: event ids are handed out and paged by, so they must never be reused.
-- trigger_type is TriggerType::as_str (`trigger` is an SQL keyword).
CREATE TABLE participant_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id      TEXT NOT NULL,
    participant_id   TEXT NOT NULL,
    trigger_type     TEXT NOT NULL,
    communication_id TEXT,
    at               TEXT NOT NULL
);

CREATE INDEX participant_events_campaign ON participant_events (campaign_id, id);

-- One row per node a flow run passed; campaign_stats counts them.
CREATE TABLE flow_steps (
    campaign_id    TEXT NOT NULL,
    participant_id TEXT NOT NULL,
    flow           TEXT NOT NULL,
    node           TEXT NOT NULL,
    at             TEXT NOT NULL
);

CREATE INDEX flow_steps_node ON flow_steps (campaign_id, flow, node);
CREATE INDEX flow_steps_participant ON flow_steps (participant_id);

-- Customers by their channel ids (phone has its column and index already). Compared as
-- text whether the value was stored as a JSON string or a number, like Postgres' `->>`.
CREATE INDEX customers_telegram_id
    ON customers (tenant_id, CAST(json_extract(attributes, '$.telegram_id') AS TEXT),
                  created_at, id)
    WHERE json_extract(attributes, '$.telegram_id') IS NOT NULL;
CREATE INDEX customers_whatsapp_id
    ON customers (tenant_id, CAST(json_extract(attributes, '$.whatsapp_id') AS TEXT),
                  created_at, id)
    WHERE json_extract(attributes, '$.whatsapp_id') IS NOT NULL;
CREATE INDEX customers_web_id
    ON customers (tenant_id, CAST(json_extract(attributes, '$.web_id') AS TEXT),
                  created_at, id)
    WHERE json_extract(attributes, '$.web_id') IS NOT NULL;
