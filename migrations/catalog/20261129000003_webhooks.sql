-- Failure notifications: webhooks and their outbox. An event's deliveries are written in
-- the transaction that makes the event happen (triggers on jobs and rollouts; the sweep's
-- overdue check), so a worker dying right after a job dies loses no notification; any
-- worker delivers them.

CREATE TABLE webhooks (
    id                 uuid PRIMARY KEY,
    -- The URL may carry a secret (Slack's do): sealed, shown as scheme://host/… only.
    display_url        text NOT NULL,
    url_ciphertext     bytea NOT NULL,
    secret_ciphertext  bytea NOT NULL,
    events             text[] NOT NULL,
    format             text NOT NULL DEFAULT 'json' CHECK (format IN ('json', 'slack')),
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id        uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event             text NOT NULL,
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- A worker posting it holds it until then (a dead worker's is taken over after).
    lease_expires_at  timestamptz,
    last_status       integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at DESC);

-- One delivery per webhook subscribed to `event`.
CREATE FUNCTION pgfleet_webhook_event(event text, payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_deliveries (webhook_id, event, payload)
    SELECT w.id, event, jsonb_build_object('event', event, 'at', now()) || payload
      FROM webhooks w WHERE event = ANY (w.events)
$$;

CREATE FUNCTION jobs_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgfleet_webhook_event('job.' || NEW.status, jsonb_build_object(
        'tenant', NEW.tenant::text,
        'job', jsonb_build_object('id', NEW.id, 'kind', NEW.kind, 'tenant', NEW.tenant::text,
                                  'status', NEW.status, 'attempts', NEW.attempts, 'error', NEW.error)));
    RETURN NULL;
END $$;

-- Jobs a halted rollout skipped are not failures of their own (the halt is the event).
CREATE TRIGGER jobs_webhook AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status IN ('failed', 'dead') AND OLD.status IS DISTINCT FROM NEW.status
          AND coalesce(NEW.error, '') NOT LIKE 'skipped:%')
    EXECUTE FUNCTION jobs_webhook_event();

CREATE FUNCTION rollouts_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgfleet_webhook_event('rollout.halted', jsonb_build_object(
        'rollout', jsonb_build_object('id', NEW.id, 'reason', NEW.halted_reason)));
    RETURN NULL;
END $$;

CREATE TRIGGER rollouts_webhook AFTER UPDATE OF status ON rollouts FOR EACH ROW
    WHEN (NEW.status = 'halted' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION rollouts_webhook_event();

-- backup.overdue: once per overdue episode (a scheduled backup due for longer than the
-- threshold); the sweep notices it.
ALTER TABLE tenants ADD COLUMN backup_overdue_notified_at timestamptz;
CREATE INDEX tenants_backup_due ON tenants (backup_due_since) WHERE backup_due_since IS NOT NULL;
