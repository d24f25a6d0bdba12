-- The routing key a dead letter was published with, so an operator can replay it
-- (`pgfleet dead-letters replay`) as it was sent.
ALTER TABLE dead_letters ADD COLUMN routing_key text;
