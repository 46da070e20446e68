-- subscriptions (api schema): usage history per closed metering period, and a switch to
-- disable a team's open API access. Hand-written in the form `cargo xtask db g` emits (its
-- versions had to fall in this release's reserved range); `cargo xtask db check` proves it
-- produces the declaration (services/api/schema.sql).
SET lock_timeout = '5s';

CREATE TABLE subscription_usage_periods (
    subscription_id uuid NOT NULL,
    period_start timestamp with time zone NOT NULL,
    period_end timestamp with time zone NOT NULL,
    plan_id text NOT NULL,
    monthly_request_quota bigint NOT NULL,
    usage_count bigint NOT NULL,
    closed_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT subscription_usage_periods_order CHECK ((period_end > period_start)),
    CONSTRAINT subscription_usage_periods_pkey PRIMARY KEY (subscription_id, period_start),
    CONSTRAINT subscription_usage_periods_usage_count_check CHECK ((usage_count >= 0))
);

ALTER TABLE subscription_usage_periods ADD CONSTRAINT subscription_usage_periods_plan_id_fkey FOREIGN KEY (plan_id) REFERENCES plans(plan_id);

ALTER TABLE subscription_usage_periods ADD CONSTRAINT subscription_usage_periods_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES subscriptions(subscription_id);

CREATE INDEX subscription_usage_periods_plan_idx ON subscription_usage_periods USING btree (plan_id);

-- Nullable, no default: no rewrite, no long lock; old code ignores them.
ALTER TABLE api_teams ADD COLUMN api_access_disabled_at timestamp with time zone;

ALTER TABLE api_teams ADD COLUMN api_access_disabled_by_user_id uuid;

ALTER TABLE api_teams ADD CONSTRAINT api_teams_api_access_disabled_by_user_id_fkey FOREIGN KEY (api_access_disabled_by_user_id) REFERENCES users(user_id) NOT VALID;
