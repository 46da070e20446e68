\set u random(1, 200)
BEGIN;
INSERT INTO journal_entries (author_user_id, team_id, prompt_id, title, content, mood, tags, entry_date) SELECT user_id, NULL, NULL, 'bench', repeat('lorem ipsum ', 20), NULL, '{}', NULL FROM bench_users WHERE n = :u RETURNING journal_entry_id, author_user_id, team_id, prompt_id, title, content, mood, tags, entry_date, created_at, updated_at, deleted_at, version, (SELECT timezone FROM users WHERE users.user_id = journal_entries.author_user_id);
INSERT INTO outbox (outbox_id, subject, payload, headers, ordering_key) SELECT o, s, p, h::jsonb, k FROM unnest(ARRAY[uuid7(), uuid7()], ARRAY['events.journal_entry.created','changes.user.x'], ARRAY[decode(repeat('ab',150),'hex'), decode(repeat('cd',450),'hex')], ARRAY['{"Bus-Message":"journal_entry.created"}','{"Bus-Message":"changeset"}'], ARRAY[gen_random_uuid()::text, 'changes.user.' || :u]) WITH ORDINALITY AS m(o, s, p, h, k, n) ORDER BY n;
COMMIT;
