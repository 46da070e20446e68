-- plans_seed (api schema): the reference rows of `plans`, written by hand (db g emits DDL
-- only). Idempotent. A plan's limits change through a later migration's UPDATE, never by
-- editing this one; code refers to plans by these ids (`free` is the default of
-- apiTeams.enable).
SET lock_timeout = '5s';

INSERT INTO plans (plan_id, name, monthly_request_quota, requests_per_second) VALUES
    ('free', 'Free', 10000, 2),
    ('pro', 'Pro', 1000000, 50)
ON CONFLICT (plan_id) DO NOTHING;
