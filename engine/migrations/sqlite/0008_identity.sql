-- Who works in a tenant: its settings, its users and their sign-in tokens. Users and tokens
-- are records read and written whole (JSON `data`); their columns repeat what queries look
-- them up by and are rewritten with it. delete_user removes a user's tokens explicitly.

ALTER TABLE tenants ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';

-- email is lower-case and unique across the deployment: sign-in is by e-mail alone.
CREATE TABLE users (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    email      TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data       TEXT NOT NULL
);

CREATE INDEX users_tenant ON users (tenant_id, created_at);

-- token_hash: the SHA-256 of the token as issued.
CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL,
    tenant_id  TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    data       TEXT NOT NULL
);

CREATE INDEX auth_tokens_user ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);
