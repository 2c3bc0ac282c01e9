-- 005: the rollup is brought up to date in the background (at most ~1 s or 50,000 records behind)
-- instead of in every ingest transaction. `seq` numbers ledger rows in commit order; rows with
-- seq <= rollup_state.watermark (or no seq: rows from before this migration) are in usage_rollup.
-- Readers use usage_rollup_live: the rollup plus the ledger's not-yet-rolled tail, always exact.
ALTER TABLE ledger ADD COLUMN seq BIGINT;
CREATE TABLE rollup_state (watermark BIGINT NOT NULL);
INSERT INTO rollup_state VALUES (0);
CREATE VIEW usage_rollup_live AS
SELECT bucket_start, api_key_id, model, endpoint, requests, input_tokens, cached_tokens, cache_write_tokens,
       output_tokens, thinking_tokens, web_search_requests, cost_pico, list_cost_pico, unpriced_requests
FROM usage_rollup
UNION ALL
SELECT time_bucket(INTERVAL 15 MINUTE, occurred_at), api_key_id, model, coalesce(endpoint, ''),
       count(*), sum(input_tokens), sum(cached_tokens), sum(cache_write_tokens), sum(output_tokens),
       coalesce(sum(thinking_tokens), 0), sum(web_search_requests), coalesce(sum(cost_pico), 0),
       coalesce(sum(list_cost_pico), 0), count(*) FILTER (WHERE rate_version_id IS NULL)
FROM ledger
WHERE seq > (SELECT watermark FROM rollup_state)
GROUP BY ALL;
