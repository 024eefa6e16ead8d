-- A user's e-mail address is unique within its tenant, not across the deployment: creating
-- a user must not tell one tenant which addresses another tenant's users have. Sign-in
-- checks the password against each user of the address.
CREATE TABLE users_by_tenant (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    email      TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data       TEXT NOT NULL,
    UNIQUE (tenant_id, email)
);

INSERT INTO users_by_tenant (id, tenant_id, email, role, created_at, updated_at, data)
    SELECT id, tenant_id, email, role, created_at, updated_at, data FROM users;

DROP TABLE users;
ALTER TABLE users_by_tenant RENAME TO users;

CREATE INDEX users_tenant ON users (tenant_id, created_at);
CREATE INDEX users_email ON users (email);
