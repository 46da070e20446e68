-- 200 users and a UUIDv7-like id function for the probe (PostgreSQL 15 has no uuidv7()).
CREATE FUNCTION uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
 SELECT (lpad(to_hex((extract(epoch from clock_timestamp())*1000)::bigint),12,'0') || '7' || substr(md5(random()::text),1,19))::uuid $$;
CREATE TABLE bench_users (n int PRIMARY KEY, user_id uuid NOT NULL);
INSERT INTO users (user_id, email, name) SELECT gen_random_uuid(), 'u'||n||'@x', 'u' FROM generate_series(1,200) n;
INSERT INTO bench_users SELECT row_number() over (), user_id FROM users;
