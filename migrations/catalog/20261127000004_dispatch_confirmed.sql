-- A job recorded as dispatched whose publisher died before the broker confirmed the message
-- (a worker SIGKILLed mid-sweep, a CLI killed after recording) has no message anywhere.
-- Publishers record `dispatch_confirmed = false` first and set it once the broker confirms;
-- the sweep re-publishes an unconfirmed dispatch after the confirm deadline instead of
-- waiting out the (doubling) re-publish interval meant for messages known to be queued.
ALTER TABLE jobs ADD COLUMN dispatch_confirmed boolean NOT NULL DEFAULT true;
