-- 008: rollup_state.generation counts every change to usage_rollup (a flush, a re-rating). Read in
-- the same snapshot as the data, (watermark, generation) names one state of the rollup, so a cache
-- of sums over it (budget status) is exact until either moves.
ALTER TABLE rollup_state ADD COLUMN generation BIGINT DEFAULT 0;
UPDATE rollup_state SET generation = 0;
-- The ledger's not-yet-rolled tail alone, in the rollup's columns (the second half of usage_rollup_at).
CREATE MACRO usage_rollup_tail(wm) AS TABLE
SELECT time_bucket(INTERVAL 15 MINUTE, occurred_at) AS bucket_start, api_key_id, model,
       coalesce(endpoint, '') AS endpoint, count(*) AS requests, sum(input_tokens) AS input_tokens,
       sum(cached_tokens) AS cached_tokens, sum(cache_write_tokens) AS cache_write_tokens,
       sum(output_tokens) AS output_tokens, coalesce(sum(thinking_tokens), 0) AS thinking_tokens,
       sum(web_search_requests) AS web_search_requests, coalesce(sum(cost_pico), 0) AS cost_pico,
       coalesce(sum(list_cost_pico), 0) AS list_cost_pico,
       count(*) FILTER (WHERE rate_version_id IS NULL) AS unpriced_requests
FROM ledger
WHERE seq > wm
GROUP BY ALL;
