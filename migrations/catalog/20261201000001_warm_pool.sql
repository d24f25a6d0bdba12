-- Warm pool (#17): databases created, owned by their own role and migrated ahead of any
-- signup, per server; a signup claims one (renamed to the tenant's names) instead of
-- creating one. Neutral names `<namespace>_pool_<hex>`: a slug has no `_`, so they never
-- collide with a tenant's.
CREATE TABLE warm_databases (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    server_id      uuid NOT NULL REFERENCES tenant_servers (id),
    database_name  text NOT NULL,
    role_name      text NOT NULL,
    -- creating: a refill is making or migrating it; ready: claimable; claimed: a
    -- provision took it for `tenant_id` (deleted once the tenant is active); dropping: the
    -- pool shrank or its build failed.
    status         text NOT NULL DEFAULT 'creating'
                   CHECK (status IN ('creating', 'ready', 'claimed', 'dropping')),
    schema_version bigint,
    tenant_id      uuid UNIQUE REFERENCES tenants (id),
    created_at     timestamptz NOT NULL DEFAULT now(),
    ready_at       timestamptz,
    claimed_at     timestamptz,
    UNIQUE (server_id, database_name),
    UNIQUE (server_id, role_name),
    CHECK ((status = 'claimed') = (tenant_id IS NOT NULL))
);
CREATE INDEX warm_databases_ready ON warm_databases (server_id, schema_version DESC, ready_at)
    WHERE status = 'ready';

-- Per-server pool size (NULL: the workers' PGFLEET_WARM_POOL), and since when the server's
-- pool has been short of it (NULL: full) — the refill lag.
ALTER TABLE tenant_servers ADD COLUMN warm_pool integer CHECK (warm_pool >= 0);
ALTER TABLE tenant_servers ADD COLUMN warm_short_since timestamptz;
-- The pool size the refill last worked to (whatever set it), for `server list` and metrics.
ALTER TABLE tenant_servers ADD COLUMN warm_target integer;
-- The last claim on the server: the refill waits for a pause in signups before building.
ALTER TABLE tenant_servers ADD COLUMN warm_claimed_at timestamptz;
