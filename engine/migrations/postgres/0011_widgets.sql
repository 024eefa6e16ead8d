-- An agent's web chat widget: its settings (JSON), its sealed secrets (JSON) and the
-- public id pages name it by.
CREATE TABLE widgets (
    agent_id   TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    widget_id  TEXT NOT NULL UNIQUE,
    settings   TEXT NOT NULL,
    secrets    TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
