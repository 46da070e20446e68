-- A demo team (the demo user owns it, a second user is a member), a team entry and prompts,
-- one of them scheduled. Fixed ids and ON CONFLICT keep it idempotent. Sign in with the dev
-- login as demo@example.com (owner) or sam@example.com (member).

INSERT INTO api.users (user_id, email, name, timezone)
VALUES ('00000000-0000-4000-8000-000000000002', 'sam@example.com', 'Sam', 'Europe/Berlin')
ON CONFLICT DO NOTHING;

INSERT INTO api.teams (team_id, name, created_by_user_id)
VALUES ('00000000-0000-4000-8000-000000000201', 'Morning Pages Club', '00000000-0000-4000-8000-000000000001')
ON CONFLICT DO NOTHING;

INSERT INTO api.team_members (team_id, user_id, role)
VALUES
    ('00000000-0000-4000-8000-000000000201', '00000000-0000-4000-8000-000000000001', 'owner'),
    ('00000000-0000-4000-8000-000000000201', '00000000-0000-4000-8000-000000000002', 'member')
ON CONFLICT DO NOTHING;

INSERT INTO api.prompts (prompt_id, owner_user_id, team_id, author_user_id, text,
                         schedule_time, schedule_timezone, schedule_weekdays)
VALUES
    ('00000000-0000-4000-8000-000000000301', '00000000-0000-4000-8000-000000000001', NULL,
     '00000000-0000-4000-8000-000000000001', 'What are you grateful for today?',
     '08:00', 'UTC', '{1,2,3,4,5}'),
    ('00000000-0000-4000-8000-000000000302', NULL, '00000000-0000-4000-8000-000000000201',
     '00000000-0000-4000-8000-000000000001', 'Three pages, no editing: what is on your mind?',
     NULL, NULL, NULL)
ON CONFLICT DO NOTHING;

INSERT INTO api.journal_entries (journal_entry_id, author_user_id, team_id, prompt_id, title, content, tags, entry_date)
VALUES
    ('00000000-0000-4000-8000-000000000104', '00000000-0000-4000-8000-000000000002',
     '00000000-0000-4000-8000-000000000201', '00000000-0000-4000-8000-000000000302',
     'Pages, day one', 'Harder than it looks. Kept going anyway.', '{pages}', '2026-11-24')
ON CONFLICT DO NOTHING;
