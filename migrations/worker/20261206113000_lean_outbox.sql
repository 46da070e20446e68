-- lean_outbox (worker schema): the relay deletes the rows it publishes; only a relay of the
-- previous release still writes sent_at. Written to match `cargo xtask db g worker lean_outbox`.
SET lock_timeout = '5s';

COMMENT ON COLUMN outbox.sent_at IS 'set only by relays before the lean outbox (they marked rows sent, this one deletes them); such rows are never published again and are pruned after the retention period';
