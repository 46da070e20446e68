-- A demo user with a few journal entries. Fixed ids and ON CONFLICT keep it idempotent.
-- Sign in as this user with the dev login: {"email": "demo@example.com", "name": "Demo"}.
-- (Seeds write rows directly, so no events are emitted for them.)

INSERT INTO api.users (user_id, email, name)
VALUES ('00000000-0000-4000-8000-000000000001', 'demo@example.com', 'Demo')
ON CONFLICT DO NOTHING;

INSERT INTO api.journal_entries (journal_entry_id, author_user_id, title, content, mood, tags, entry_date)
VALUES
    ('00000000-0000-4000-8000-000000000101', '00000000-0000-4000-8000-000000000001',
     'A slow Sunday', 'Coffee, a long walk by the river, and an early night.', 4, '{weekend,walk}', '2026-11-22'),
    ('00000000-0000-4000-8000-000000000102', '00000000-0000-4000-8000-000000000001',
     'Busy Monday', 'Three meetings, one good idea. Wrote it down before it escaped.', 3, '{work}', '2026-11-23'),
    ('00000000-0000-4000-8000-000000000103', '00000000-0000-4000-8000-000000000001',
     'Gratitude', 'Grateful for friends who call back, and for soup.', 5, '{gratitude}', '2026-11-24')
ON CONFLICT DO NOTHING;
