-- A user's e-mail address is unique within its tenant, not across the deployment: creating
-- a user must not tell one tenant which addresses another tenant's users have. Sign-in
-- checks the password against each user of the address.
ALTER TABLE users DROP CONSTRAINT users_email_key;
ALTER TABLE users ADD CONSTRAINT users_tenant_email UNIQUE (tenant_id, email);
CREATE INDEX users_email ON users (email);
