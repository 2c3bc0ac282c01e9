-- 013: which records each applied re-rating changed (run id, request_id), so the change can be
-- carried elsewhere (the lake appends the restated rows as new segments; metering/lake/).
CREATE TABLE reprice_changes (
    run_id     INTEGER NOT NULL,
    request_id VARCHAR NOT NULL
);
