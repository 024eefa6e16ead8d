-- parley's SQLite schema. Ids are TEXT uuids; timestamps of record are RFC 3339 TEXT with
-- nanoseconds and `Z` (exact round trip, and they sort as text); sessions.next_deadline is
-- INTEGER unix milliseconds because the timer scan compares it as a number.

CREATE TABLE tenants (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL
);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    status_reason   TEXT,
    current_version INTEGER NOT NULL,
    token_hash      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE INDEX agents_tenant ON agents (tenant_id, created_at);

CREATE TABLE agent_versions (
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version    INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (agent_id, version)
);

-- No foreign keys on the session tables: they are written by group commits, and one stale
-- write (say, for an agent deleted a moment ago) must not fail every other turn in its batch.
-- delete_agent removes the dependants explicitly instead.
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    ext_type      TEXT NOT NULL,
    state         TEXT NOT NULL,
    next_deadline INTEGER,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    data          TEXT NOT NULL
);

CREATE INDEX sessions_user ON sessions (tenant_id, user_id, ext_type, created_at);
CREATE INDEX sessions_agent ON sessions (agent_id);
CREATE INDEX sessions_due ON sessions (next_deadline) WHERE next_deadline IS NOT NULL;

CREATE TABLE messages (
    session_id      TEXT NOT NULL,
    id              INTEGER NOT NULL,
    role            TEXT NOT NULL,
    text            TEXT NOT NULL,
    ts              TEXT NOT NULL,
    attachments     TEXT,
    metadata        TEXT,
    feedback        TEXT NOT NULL,
    idempotency_key TEXT,
    PRIMARY KEY (session_id, id)
);

CREATE UNIQUE INDEX messages_idempotency ON messages (session_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE attachments (
    id           TEXT PRIMARY KEY NOT NULL,
    session_id   TEXT NOT NULL,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL,
    bytes        BLOB NOT NULL
);

CREATE INDEX attachments_session ON attachments (session_id);
