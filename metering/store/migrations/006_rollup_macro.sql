-- 006: usage_rollup_at(watermark): the rollup plus the ledger's not-yet-rolled tail, exact at every
-- moment. Queries pass the watermark as a constant read in the same transaction, so the tail scan
-- prunes by seq (zone maps); usage_rollup_live does the same with a subquery, for ad-hoc use.
CREATE MACRO usage_rollup_at(wm) AS TABLE
SELECT bucket_start, api_key_id, model, endpoint, requests, input_tokens, cached_tokens, cache_write_tokens,
       output_tokens, thinking_tokens, web_search_requests, cost_pico, list_cost_pico, unpriced_requests
FROM usage_rollup
UNION ALL
SELECT time_bucket(INTERVAL 15 MINUTE, occurred_at), api_key_id, model, coalesce(endpoint, ''),
       count(*), sum(input_tokens), sum(cached_tokens), sum(cache_write_tokens), sum(output_tokens),
       coalesce(sum(thinking_tokens), 0), sum(web_search_requests), coalesce(sum(cost_pico), 0),
       coalesce(sum(list_cost_pico), 0), count(*) FILTER (WHERE rate_version_id IS NULL)
FROM ledger
WHERE seq > wm
GROUP BY ALL;
CREATE VIEW usage_rollup_live AS SELECT * FROM usage_rollup_at((SELECT watermark FROM rollup_state));
