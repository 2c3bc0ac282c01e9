-- 004: budgets, the alert outbox and its delivery attempts.
CREATE TABLE budgets (
    id                  VARCHAR PRIMARY KEY,
    scope_kind          VARCHAR NOT NULL,     -- api_key | account | tag | all
    scope_value         VARCHAR,
    scope_tag           VARCHAR,
    period              VARCHAR NOT NULL,     -- day | week | month
    tz                  VARCHAR NOT NULL,
    amount_pico         BIGINT NOT NULL,
    basis               VARCHAR NOT NULL,     -- cost | list_cost
    thresholds          VARCHAR NOT NULL,     -- JSON list of decimal strings
    forecast            BOOLEAN NOT NULL,
    webhook_url         VARCHAR,
    webhook_secret      VARCHAR,
    webhook_disabled_at TIMESTAMP,            -- set when the endpoint answered 410 Gone
    created_at          TIMESTAMP NOT NULL,
    deleted_at          TIMESTAMP
);

-- One row per alert. `dedupe_key` makes each alert fire once (per budget, period and threshold;
-- per budget and period for forecasts; per key and day for anomalies), across restarts too.
CREATE TABLE alerts (
    id              VARCHAR PRIMARY KEY,      -- also the webhook-id of every delivery attempt
    seq             BIGINT NOT NULL,          -- creation order: deliveries to one URL keep it
    dedupe_key      VARCHAR NOT NULL UNIQUE,
    type            VARCHAR NOT NULL,
    budget_id       VARCHAR,
    api_key_id      VARCHAR,
    period_start    TIMESTAMP,
    payload         VARCHAR NOT NULL,         -- the JSON body delivered
    webhook_url     VARCHAR,
    status          VARCHAR NOT NULL,         -- pending | delivered | failed | disabled | no_endpoint
    attempts        INTEGER NOT NULL,
    next_attempt_at TIMESTAMP,
    created_at      TIMESTAMP NOT NULL,
    delivered_at    TIMESTAMP
);

CREATE TABLE alert_attempts (
    alert_id    VARCHAR NOT NULL,
    attempt     INTEGER NOT NULL,
    attempted_at TIMESTAMP NOT NULL,
    status_code INTEGER,
    error       VARCHAR,
    duration_ms INTEGER NOT NULL
);
