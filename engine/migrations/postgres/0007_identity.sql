-- Who works in a tenant: its settings, its users and their sign-in tokens. Users and tokens
-- are records read and written whole (JSON `data` as text); their columns repeat what
-- queries look them up by and are rewritten with it. Ids are uuid, timestamps bigint unix
-- nanoseconds. delete_user removes a user's tokens explicitly.

ALTER TABLE tenants ADD COLUMN settings text NOT NULL DEFAULT '{}';

-- email is lower-case and unique across the deployment: sign-in is by e-mail alone.
CREATE TABLE users (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    email      text NOT NULL UNIQUE,
    role       text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    data       text NOT NULL
);

CREATE INDEX users_tenant ON users (tenant_id, created_at);

-- token_hash: the SHA-256 of the token as issued.
CREATE TABLE auth_tokens (
    token_hash text PRIMARY KEY,
    user_id    uuid NOT NULL,
    tenant_id  uuid NOT NULL,
    expires_at bigint NOT NULL,
    data       text NOT NULL
);

CREATE INDEX auth_tokens_user ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expiry ON auth_tokens (expires_at);
