-- 002: the audit trail of applied re-ratings.
CREATE TABLE reprice_runs (
    id                  INTEGER PRIMARY KEY,
    applied_at          TIMESTAMP NOT NULL,
    range_start         TIMESTAMP NOT NULL,
    range_end           TIMESTAMP NOT NULL,
    records_in_range    BIGINT NOT NULL,
    records_changed     BIGINT NOT NULL,
    versions            VARCHAR NOT NULL,   -- JSON: the rate version ids in effect after the run
    cost_before_pico    HUGEINT NOT NULL,
    cost_after_pico     HUGEINT NOT NULL,
    list_before_pico    HUGEINT NOT NULL,
    list_after_pico     HUGEINT NOT NULL,
    unpriced_before     BIGINT NOT NULL,
    unpriced_after      BIGINT NOT NULL
);
