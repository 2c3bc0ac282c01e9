-- 011: period close. A closed month's figures are stored here by one transaction and never change:
-- its statements and its FOCUS rows are rendered from these rows, never recomputed from the ledger.
-- Months are billing months ('YYYY-MM') of the billing time zone; times are UTC; money is exact
-- DECIMAL(38, 12) USD.
CREATE TABLE billing_periods (
    month              VARCHAR PRIMARY KEY,   -- YYYY-MM in tz
    tz                 VARCHAR NOT NULL,      -- the billing time zone the month was closed in
    period_start       TIMESTAMP NOT NULL,
    period_end         TIMESTAMP NOT NULL,
    closed_at          TIMESTAMP NOT NULL,
    closed_by          VARCHAR NOT NULL,      -- api | cli | schedule
    ledger_seq         BIGINT NOT NULL,       -- the ledger's last seq the close saw
    rounding           VARCHAR NOT NULL,      -- the rounding rule the statements print
    accounts           INTEGER NOT NULL,
    statement_lines    INTEGER NOT NULL,
    focus_rows         INTEGER NOT NULL,
    requests           BIGINT NOT NULL,
    unpriced_requests  BIGINT NOT NULL,
    amount             DECIMAL(38, 12) NOT NULL,   -- usage and corrections billed in the month
    list_amount        DECIMAL(38, 12) NOT NULL,
    correction_amount  DECIMAL(38, 12) NOT NULL    -- of which corrections for earlier months
);

-- One row per account with anything billed or used in a closed month: the statement's header figures.
CREATE TABLE closed_statements (
    month                VARCHAR NOT NULL,
    account_id           VARCHAR NOT NULL,
    requests             BIGINT NOT NULL,
    unpriced_requests    BIGINT NOT NULL,
    amount               DECIMAL(38, 12) NOT NULL,
    amount_rounded       DECIMAL(38, 2) NOT NULL,
    list_amount          DECIMAL(38, 12) NOT NULL,
    list_amount_rounded  DECIMAL(38, 2) NOT NULL,
    correction_amount    DECIMAL(38, 12) NOT NULL,
    PRIMARY KEY (month, account_id)
);

-- The statement lines of a closed month, in statement order (line_no). A `correction` line bills the
-- difference between the ledger and what was billed before for an earlier usage month.
CREATE TABLE closed_statement_lines (
    month                VARCHAR NOT NULL,
    account_id           VARCHAR NOT NULL,
    line_no              INTEGER NOT NULL,
    line_type            VARCHAR NOT NULL,     -- usage | correction
    usage_month          VARCHAR NOT NULL,
    api_key_id           VARCHAR NOT NULL,
    model                VARCHAR NOT NULL,
    rate_version_id      INTEGER NOT NULL,
    token_class          VARCHAR NOT NULL,
    quantity             BIGINT NOT NULL,
    price                DECIMAL(38, 12) NOT NULL,
    list_price           DECIMAL(38, 12) NOT NULL,
    amount               DECIMAL(38, 12) NOT NULL,
    amount_rounded       DECIMAL(38, 2) NOT NULL,
    list_amount          DECIMAL(38, 12) NOT NULL,
    list_amount_rounded  DECIMAL(38, 2) NOT NULL,
    PRIMARY KEY (month, account_id, line_no)
);

-- The FOCUS rows of a closed month: usage per charge day x key x model x class x price x tag set, and
-- corrections (charge_class 'Correction') per usage month. Every FOCUS column is derived from these.
CREATE TABLE closed_focus_lines (
    month            VARCHAR NOT NULL,
    row_no           INTEGER NOT NULL,
    charge_class     VARCHAR,                 -- NULL (usage) | Correction
    usage_month      VARCHAR NOT NULL,
    charge_start     TIMESTAMP NOT NULL,
    charge_end       TIMESTAMP NOT NULL,
    billing_start    TIMESTAMP NOT NULL,
    billing_end      TIMESTAMP NOT NULL,
    account_id       VARCHAR NOT NULL,
    api_key_id       VARCHAR NOT NULL,
    key_name         VARCHAR,
    model            VARCHAR NOT NULL,
    rate_version_id  INTEGER NOT NULL,
    token_class      VARCHAR NOT NULL,
    tags             VARCHAR NOT NULL,        -- the user's tags, canonical JSON (sorted keys)
    quantity         BIGINT NOT NULL,
    price            DECIMAL(38, 12) NOT NULL,
    list_price       DECIMAL(38, 12) NOT NULL,
    amount           DECIMAL(38, 12) NOT NULL,
    list_amount      DECIMAL(38, 12) NOT NULL,
    PRIMARY KEY (month, row_no)
);
