-- The relay is woken in process by its own service's outbox writes (bus::relay::wake), no
-- longer by NOTIFY: Postgres signals every listening backend of the database on each NOTIFY,
-- which cost about ten commits per notifying transaction with five services' listeners, and
-- it serializes the commits of notifying transactions on one lock.
--
-- Rolling deploy: a relay of the previous release, still listening, now wakes only on its
-- 1 s poll; its writes are published by whichever relay polls first. The function and
-- outbox_relay_state stay (nothing calls the one; the previous relay writes its busy mark in
-- the other) and are dropped in a later release.
SET lock_timeout = '5s';

DROP TRIGGER IF EXISTS outbox_notify ON outbox;
