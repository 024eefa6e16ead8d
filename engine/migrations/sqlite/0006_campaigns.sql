-- Campaigns and what hangs off them: flows, participants and uploads, plus the tenant's
-- customer profiles, which every campaign of the tenant shares. Campaigns, flows and
-- uploads are records read and written whole (JSON `data`); customers and participants are
-- written row by row by uploads, so their attributes are JSON merged in place
-- (json_patch). delete_campaign removes a campaign's dependants explicitly; customers stay.

CREATE TABLE campaigns (
    id         TEXT PRIMARY KEY NOT NULL,
    tenant_id  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data       TEXT NOT NULL
);

CREATE INDEX campaigns_tenant ON campaigns (tenant_id, created_at);

CREATE TABLE campaign_flows (
    campaign_id TEXT NOT NULL,
    name        TEXT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (campaign_id, name)
);

-- external_id, email and phone are generated from the attributes, so they can never
-- disagree with them; a customer is found by the one its key names. Neither is unique: two
-- profiles with different external ids may share an e-mail address.
CREATE TABLE customers (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    external_id TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.external_id')) STORED,
    email       TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.email')) STORED,
    phone       TEXT GENERATED ALWAYS AS (json_extract(attributes, '$.phone')) STORED,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- A lookup takes the oldest match, so the identity indexes carry the order too: they then
-- answer it outright, and the planner never prefers walking the tenant's customers in
-- order (customers_tenant, for listing) and filtering them.
CREATE INDEX customers_tenant ON customers (tenant_id, created_at, id);
CREATE INDEX customers_external_id ON customers (tenant_id, external_id, created_at, id)
    WHERE external_id IS NOT NULL;
CREATE INDEX customers_email ON customers (tenant_id, email, created_at, id)
    WHERE email IS NOT NULL;
CREATE INDEX customers_phone ON customers (tenant_id, phone, created_at, id)
    WHERE phone IS NOT NULL;

-- object_id is '' for none, so the unique index finds "no object" like any other value
-- (NULLs would all be distinct).
CREATE TABLE participants (
    id          TEXT PRIMARY KEY NOT NULL,
    campaign_id TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    object_id   TEXT NOT NULL DEFAULT '',
    attributes  TEXT NOT NULL,
    timezone    TEXT,
    upload_id   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE UNIQUE INDEX participants_key ON participants (campaign_id, customer_id, object_id);
CREATE INDEX participants_campaign ON participants (campaign_id, created_at, id);
CREATE INDEX participants_upload ON participants (upload_id, created_at, id)
    WHERE upload_id IS NOT NULL;

CREATE TABLE campaign_uploads (
    id          TEXT PRIMARY KEY NOT NULL,
    campaign_id TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    data        TEXT NOT NULL
);

CREATE INDEX campaign_uploads_campaign ON campaign_uploads (campaign_id, created_at);
