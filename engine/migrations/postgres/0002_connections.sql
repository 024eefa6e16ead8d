-- Platform connections. The record is JSON (`data`): it is read and written whole, and
-- its secrets are sealed inside it.
CREATE TABLE connections (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data       TEXT NOT NULL
);

CREATE INDEX connections_tenant ON connections (tenant_id, created_at);
