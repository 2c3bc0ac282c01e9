"""The rollup: the ledger summed per 15 minutes x key x model x endpoint, defined once here.

Every real UTC offset is a multiple of 15 minutes, so local hours, days and months in any zone are
unions of rollup buckets. Ledger rows carry a commit sequence (`seq`); rows up to
`rollup_state.watermark` are in `usage_rollup`, the rest (the tail) are summed on the fly, so
`usage_rollup_at(watermark)` is exact at every moment. The writer flushes the tail in the background
(`FLUSH`), a re-rating recomputes the money of the buckets it touched (`REFRESH_MONEY`), and the SQL
macros readers use (`usage_rollup_at`, `usage_rollup_tail`, the `usage_rollup_live` view) are created
from the same measures when the store opens (`DEFINITIONS`).
"""

from __future__ import annotations

from metering.records import TOKEN_FIELDS
from metering.tokenclasses import NULLABLE_FIELDS

KEY_COLUMNS = ("bucket_start", "api_key_id", "model", "endpoint")
# (rollup column, its aggregate over ledger rows); a null count (unknown thinking) sums as 0.
MEASURES: tuple[tuple[str, str], ...] = (
    ("requests", "count(*)"),
    *((f, f"coalesce(sum({f}), 0)" if f in NULLABLE_FIELDS else f"sum({f})") for f in TOKEN_FIELDS),
    ("cost_pico", "coalesce(sum(cost_pico), 0)"),
    ("list_cost_pico", "coalesce(sum(list_cost_pico), 0)"),
    ("unpriced_requests", "count(*) FILTER (WHERE rate_version_id IS NULL)"),
)
MONEY = ("cost_pico", "list_cost_pico", "unpriced_requests")  # what a re-rating changes
COLUMNS = (*KEY_COLUMNS, *(name for name, _ in MEASURES))


def aggregate(where: str) -> str:
    """The ledger rows matching `where` (a fixed condition over bound parameters) in rollup rows."""
    measures = ", ".join(f"{agg} AS {name}" for name, agg in MEASURES)
    return (f"SELECT time_bucket(INTERVAL 15 MINUTE, occurred_at) AS bucket_start, api_key_id, model, "  # noqa: S608
            f"coalesce(endpoint, '') AS endpoint, {measures} FROM ledger WHERE {where} GROUP BY ALL")


# Constant bounds (not a subquery), so the ledger scan skips every row group outside them (zone maps).
FLUSH = (f"INSERT INTO usage_rollup BY NAME {aggregate('seq > $lo AND seq <= $hi')} ON CONFLICT DO UPDATE SET "
         + ", ".join(f"{name} = {name} + excluded.{name}" for name, _ in MEASURES))

# The money of the rolled-up buckets in [$lo, $hi), recomputed from the ledger after a re-rating.
REFRESH_MONEY = (
    "UPDATE usage_rollup AS r SET " + ", ".join(f"{name} = a.{name}" for name in MONEY)  # noqa: S608
    + f" FROM ({aggregate('occurred_at >= $lo AND occurred_at < $hi')}) AS a WHERE "
    + " AND ".join(f"r.{c} = a.{c}" for c in KEY_COLUMNS)
)

_COLUMN_LIST = ", ".join(COLUMNS)
DEFINITIONS = f"""
CREATE OR REPLACE MACRO usage_rollup_tail(wm) AS TABLE {aggregate('seq > wm')};
CREATE OR REPLACE MACRO usage_rollup_at(wm) AS TABLE
    SELECT {_COLUMN_LIST} FROM usage_rollup UNION ALL SELECT {_COLUMN_LIST} FROM usage_rollup_tail(wm);
CREATE OR REPLACE VIEW usage_rollup_live AS SELECT * FROM usage_rollup_at((SELECT watermark FROM rollup_state));
"""  # noqa: S608 (fixed column names)
