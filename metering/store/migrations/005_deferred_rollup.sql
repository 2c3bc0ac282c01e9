-- 005: the rollup is brought up to date in the background (at most ~1 s or 50,000 records behind)
-- instead of in every ingest transaction. `seq` numbers ledger rows in commit order; rows with
-- seq <= rollup_state.watermark (or no seq: rows from before this migration) are in usage_rollup.
ALTER TABLE ledger ADD COLUMN seq BIGINT;
CREATE TABLE rollup_state (watermark BIGINT NOT NULL);
INSERT INTO rollup_state VALUES (0);
