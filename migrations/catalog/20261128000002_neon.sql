-- Neon as a second kind of tenant server: a registered Neon "server" is an API key, an API
-- URL and a region (plus the project settings new tenants get); each tenant on it is one
-- Neon project. Credentials are sealed like every other (row-bound AES-256-GCM).

ALTER TABLE tenant_servers
    ADD COLUMN kind text NOT NULL DEFAULT 'postgres' CHECK (kind IN ('postgres', 'neon')),
    -- Neon: {"api_url", "region_id", "pg_version", "org_id"}; NULL for self-hosted servers.
    ADD COLUMN neon jsonb,
    ADD COLUMN api_key_ciphertext bytea,
    ALTER COLUMN admin_url_ciphertext DROP NOT NULL,
    ADD CONSTRAINT tenant_servers_kind_credentials CHECK (
        (kind = 'postgres' AND admin_url_ciphertext IS NOT NULL)
        OR (kind = 'neon' AND neon IS NOT NULL AND api_key_ciphertext IS NOT NULL));

ALTER TABLE tenants
    -- Kept after the tenant is deleted: Neon can recover a deleted project for 7 days.
    ADD COLUMN neon_project_id text,
    ADD COLUMN neon_branch_id text,
    -- Connection URIs Neon gave for the tenant's role and database (sealed): direct for
    -- migrations and pg_dump, pooled for applications.
    ADD COLUMN direct_uri_ciphertext bytea,
    ADD COLUMN pooled_uri_ciphertext bytea;
CREATE UNIQUE INDEX tenants_neon_project ON tenants (server_id, neon_project_id)
    WHERE neon_project_id IS NOT NULL;

-- Dev/test branches of a Neon tenant's project (`pgfleet tenant branch`), and the targets
-- restores load into: a branch of the tenant's project, or a new project (then named
-- `project:NAME` here, with its id in neon_project_id). The URI is sealed; the row exists before the branch does, so a
-- retried create finds its own branch instead of making a second.
CREATE TABLE tenant_branches (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    name             text NOT NULL,
    purpose          text NOT NULL CHECK (purpose IN ('dev', 'restore')),
    schema_only      boolean NOT NULL DEFAULT false,
    -- The restore job loading into it (purpose 'restore'): only that job may adopt it.
    job_id           uuid,
    neon_branch_id   text,
    neon_project_id  text,
    uri_ciphertext   bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
