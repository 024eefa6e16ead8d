-- Campaigns at work: the trigger an upload leaves on a participant, its latest conversation
-- results, the communications flows plan, the triggers queued for participants, and the
-- nodes their flow runs pass. Communications are records read and written whole (JSON
-- `data` as text); their columns repeat what queries look them up by and are rewritten
-- with it. Ids are uuid, timestamps bigint unix nanoseconds. delete_participant and
-- delete_campaign remove these rows explicitly.

-- pending: 'created' or 'updated', NULL when no trigger waits. Every participant uploaded
-- before this migration never had its participant_created trigger run, so it is pending.
ALTER TABLE participants
    ADD COLUMN pending   text,
    ADD COLUMN result    jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN result_at bigint;
UPDATE participants SET pending = 'created';

CREATE INDEX participants_pending ON participants (campaign_id, id) WHERE pending IS NOT NULL;

-- due_at: when a Planned communication must be looked at (its start, or its cancellation
-- if that comes first); meaningless in other statuses, which the partial index leaves out.
CREATE TABLE communications (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    campaign_id    uuid NOT NULL,
    participant_id uuid NOT NULL,
    status         text NOT NULL,
    channel        text NOT NULL,
    due_at         bigint NOT NULL,
    session_id     uuid,
    connection_id  uuid,
    message_id     text,
    created_at     bigint NOT NULL,
    data           text NOT NULL
);

CREATE INDEX communications_due ON communications (campaign_id, due_at, id)
    WHERE status = 'Planned';
CREATE INDEX communications_participant ON communications (participant_id, created_at, id);
CREATE INDEX communications_session ON communications (session_id, created_at, id)
    WHERE session_id IS NOT NULL;
CREATE INDEX communications_message ON communications (connection_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX communications_stats ON communications (campaign_id, status, channel);

-- trigger_type is TriggerType::as_str (named like SQLite's, where `trigger` is a keyword).
CREATE TABLE participant_events (
    id               bigserial PRIMARY KEY,
    campaign_id      uuid NOT NULL,
    participant_id   uuid NOT NULL,
    trigger_type     text NOT NULL,
    communication_id uuid,
    at               bigint NOT NULL
);

CREATE INDEX participant_events_campaign ON participant_events (campaign_id, id);

-- One row per node a flow run passed; campaign_stats counts them.
CREATE TABLE flow_steps (
    campaign_id    uuid NOT NULL,
    participant_id uuid NOT NULL,
    flow           text NOT NULL,
    node           text NOT NULL,
    at             bigint NOT NULL
);

CREATE INDEX flow_steps_node ON flow_steps (campaign_id, flow, node);
CREATE INDEX flow_steps_participant ON flow_steps (participant_id);

-- Customers by their channel ids (phone has its column and index already), compared as
-- `->>` reads them: text as is, numbers as their JSON text.
CREATE INDEX customers_telegram_id
    ON customers (tenant_id, (attributes ->> 'telegram_id'), created_at, id)
    WHERE attributes ? 'telegram_id';
CREATE INDEX customers_whatsapp_id
    ON customers (tenant_id, (attributes ->> 'whatsapp_id'), created_at, id)
    WHERE attributes ? 'whatsapp_id';
CREATE INDEX customers_web_id
    ON customers (tenant_id, (attributes ->> 'web_id'), created_at, id)
    WHERE attributes ? 'web_id';
