-- Per rollout: how long a tenant's migration waits for a lock (a tenant session holding one
-- costs that tenant a retry, not a server slot forever) and runs at most. NULL: no limit.
ALTER TABLE rollouts ADD COLUMN lock_timeout_ms integer CHECK (lock_timeout_ms > 0),
                     ADD COLUMN statement_timeout_ms integer CHECK (statement_timeout_ms > 0);
