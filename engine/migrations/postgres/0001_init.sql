-- parley's Postgres schema: the SQLite schema's tables and indexes in native types where
-- they pay (uuid ids, bytea attachment bytes). Timestamps of record are BIGINT unix
-- nanoseconds: timestamptz keeps only microseconds, and the store must hand back exactly
-- the instants it was given. sessions.next_deadline is BIGINT unix milliseconds, as in
-- SQLite, because the timer scan compares it as a number. JSON stays TEXT: the store only
-- ever reads it back whole, so jsonb's parsing on every write would buy nothing.

CREATE TABLE tenants (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    api_key_hash text NOT NULL UNIQUE,
    created_at   bigint NOT NULL
);

CREATE TABLE agents (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    name            text NOT NULL,
    status          text NOT NULL,
    status_reason   text,
    current_version bigint NOT NULL,
    token_hash      text NOT NULL,
    created_at      bigint NOT NULL,
    updated_at      bigint NOT NULL
);

CREATE INDEX agents_tenant ON agents (tenant_id, created_at);

CREATE TABLE agent_versions (
    agent_id   uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version    bigint NOT NULL,
    definition text NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (agent_id, version)
);

-- No foreign keys on the session tables: they are written by group commits, and one stale
-- write (say, for an agent deleted a moment ago) must not fail every other turn in its batch.
-- delete_agent removes the dependants explicitly instead.
--
-- epoch is the session's ownership epoch (see store::Epoch): set when the row is created,
-- raised by every claim, checked by every group commit.
CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    agent_id      uuid NOT NULL,
    user_id       text NOT NULL,
    ext_type      text NOT NULL,
    state         text NOT NULL,
    next_deadline bigint,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    data          text NOT NULL,
    epoch         bigint NOT NULL DEFAULT 1
);

CREATE INDEX sessions_user ON sessions (tenant_id, user_id, ext_type, created_at);
CREATE INDEX sessions_agent ON sessions (agent_id);
CREATE INDEX sessions_due ON sessions (next_deadline) WHERE next_deadline IS NOT NULL;

CREATE TABLE messages (
    session_id      uuid NOT NULL,
    id              bigint NOT NULL,
    role            text NOT NULL,
    text            text NOT NULL,
    ts              bigint NOT NULL,
    attachments     text,
    metadata        text,
    feedback        text NOT NULL,
    idempotency_key text,
    PRIMARY KEY (session_id, id)
);

CREATE UNIQUE INDEX messages_idempotency ON messages (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE attachments (
    id           uuid PRIMARY KEY,
    session_id   uuid NOT NULL,
    filename     text NOT NULL,
    content_type text NOT NULL,
    size         bigint NOT NULL,
    bytes        bytea NOT NULL
);

-- Out of line and uncompressed: attachments are mostly images and PDFs, compressed already,
-- so trying to compress them again only costs CPU.
ALTER TABLE attachments ALTER COLUMN bytes SET STORAGE EXTERNAL;

CREATE INDEX attachments_session ON attachments (session_id);
