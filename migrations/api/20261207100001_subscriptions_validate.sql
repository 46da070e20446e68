-- subscriptions (api schema): validate the constraint added NOT VALID by the previous
-- migration, in its own transaction (SHARE UPDATE EXCLUSIVE: reads and writes go on).
SET lock_timeout = '5s';

ALTER TABLE api_teams VALIDATE CONSTRAINT api_teams_api_access_disabled_by_user_id_fkey;
