-- 010: each budget's spend per 15-minute slot, advanced in the commit that adds the records (so a
-- budget's status reads a few rows, never the ledger), and budget reservations (holds taken before
-- a call against enforced budgets, settled by the usage record with the same request_id).
CREATE TABLE budget_spend (
    budget_id      VARCHAR NOT NULL,
    slot           TIMESTAMP NOT NULL,     -- 15-minute slot, UTC
    cost_pico      HUGEINT NOT NULL,
    list_cost_pico HUGEINT NOT NULL,
    PRIMARY KEY (budget_id, slot)
);
ALTER TABLE budgets ADD COLUMN tracked_from TIMESTAMP;  -- budget_spend holds every slot from here on

CREATE TABLE reservations (
    request_id      VARCHAR PRIMARY KEY,
    api_key_id      VARCHAR NOT NULL,
    model           VARCHAR NOT NULL,
    max_input_tokens  BIGINT NOT NULL,
    max_output_tokens BIGINT NOT NULL,
    tags            VARCHAR,                -- JSON object, or NULL
    hold_pico       BIGINT NOT NULL,        -- at the current price
    list_hold_pico  BIGINT NOT NULL,        -- at the list price
    rate_version_id INTEGER NOT NULL,
    budget_ids      VARCHAR NOT NULL,       -- JSON list: the enforced budgets it holds against
    status          VARCHAR NOT NULL,       -- held | settled | released | expired
    created_at      TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    closed_at       TIMESTAMP
);
