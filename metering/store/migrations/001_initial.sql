-- 001: the ledger, its rollup, keys and rate versions.
-- Times are UTC (TIMESTAMP without zone); money is integer pico-dollars (1e-12 USD).

CREATE TABLE rate_versions (
    id                   INTEGER PRIMARY KEY,
    model                VARCHAR NOT NULL,
    effective_from       TIMESTAMP NOT NULL,
    input_current        DECIMAL(18, 6) NOT NULL,
    input_list           DECIMAL(18, 6) NOT NULL,
    cached_input_current DECIMAL(18, 6) NOT NULL,
    cached_input_list    DECIMAL(18, 6) NOT NULL,
    output_current       DECIMAL(18, 6) NOT NULL,
    output_list          DECIMAL(18, 6) NOT NULL,
    cache_write_current  DECIMAL(18, 6),
    cache_write_list     DECIMAL(18, 6),
    thinking_current     DECIMAL(18, 6),
    thinking_list        DECIMAL(18, 6),
    web_search_current   DECIMAL(18, 9),
    web_search_list      DECIMAL(18, 9),
    created_at           TIMESTAMP NOT NULL,
    source               VARCHAR NOT NULL,
    UNIQUE (model, effective_from)
);

CREATE TABLE api_keys (
    api_key_id    VARCHAR PRIMARY KEY,
    account_id    VARCHAR NOT NULL,
    name          VARCHAR,
    secret_sha256 VARCHAR NOT NULL UNIQUE,
    created_at    TIMESTAMP NOT NULL
);

-- One row per accepted request. Append-only: usage facts are never updated or deleted.
CREATE TABLE ledger (
    request_id          VARCHAR PRIMARY KEY,
    occurred_at         TIMESTAMP NOT NULL,
    received_at         TIMESTAMP NOT NULL,
    api_key_id          VARCHAR NOT NULL,
    model               VARCHAR NOT NULL,
    endpoint            VARCHAR,
    input_tokens        INTEGER NOT NULL,
    cached_tokens       INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    thinking_tokens     INTEGER,
    web_search_requests INTEGER NOT NULL,
    tags                MAP(VARCHAR, VARCHAR),
    rate_version_id     INTEGER,
    cost_pico           BIGINT,
    list_cost_pico      BIGINT,
    fingerprint         UBIGINT NOT NULL
);

-- The ledger summed per 15 minutes (every real UTC offset is a multiple of 15 minutes, so
-- local hours, days and months in any zone are unions of these buckets), key, model and
-- endpoint. Maintained in the same transaction as the ledger rows it sums.
CREATE TABLE usage_rollup (
    bucket_start        TIMESTAMP NOT NULL,
    api_key_id          VARCHAR NOT NULL,
    model               VARCHAR NOT NULL,
    endpoint            VARCHAR NOT NULL,  -- '' when the record named none
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    thinking_tokens     BIGINT NOT NULL,
    web_search_requests BIGINT NOT NULL,
    cost_pico           HUGEINT NOT NULL,
    list_cost_pico      HUGEINT NOT NULL,
    unpriced_requests   BIGINT NOT NULL,
    PRIMARY KEY (bucket_start, api_key_id, model, endpoint)
);
