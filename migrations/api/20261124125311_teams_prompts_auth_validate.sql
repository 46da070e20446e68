-- teams_prompts_auth (api schema), generated: validate the constraints added NOT VALID in
-- 20261124125306_teams_prompts_auth.sql, in a transaction of their own (SHARE UPDATE EXCLUSIVE: reads and
-- writes go on while existing rows are checked).
SET lock_timeout = '5s';

ALTER TABLE journal_entries VALIDATE CONSTRAINT journal_entries_prompt_fk;
ALTER TABLE journal_entries VALIDATE CONSTRAINT journal_entries_team_fk;
