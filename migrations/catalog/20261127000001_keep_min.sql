-- The newest good backup of a live tenant is never pruned: keep_min is at least 1.
UPDATE tenants SET keep_min = 1 WHERE keep_min < 1;
ALTER TABLE tenants DROP CONSTRAINT IF EXISTS tenants_keep_min_check,
                    ADD CONSTRAINT tenants_keep_min_check CHECK (keep_min >= 1);
