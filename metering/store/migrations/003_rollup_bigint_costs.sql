-- 003: rollup costs as BIGINT pico-dollars (compressible and faster to sum than HUGEINT).
-- One rollup cell (15 minutes x key x model x endpoint) is limited to 9.2 million USD; an overflow
-- is an error that fails the write, never a wrong sum. Queries sum these into HUGEINT.
CREATE TABLE usage_rollup_v3 (
    bucket_start        TIMESTAMP NOT NULL,
    api_key_id          VARCHAR NOT NULL,
    model               VARCHAR NOT NULL,
    endpoint            VARCHAR NOT NULL,
    requests            BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_tokens       BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    thinking_tokens     BIGINT NOT NULL,
    web_search_requests BIGINT NOT NULL,
    cost_pico           BIGINT NOT NULL,
    list_cost_pico      BIGINT NOT NULL,
    unpriced_requests   BIGINT NOT NULL,
    PRIMARY KEY (bucket_start, api_key_id, model, endpoint)
);
INSERT INTO usage_rollup_v3 SELECT * FROM usage_rollup;
DROP TABLE usage_rollup;
ALTER TABLE usage_rollup_v3 RENAME TO usage_rollup;
