"""Provider reconciliation: the upstream provider's own usage report against the ledger.

Pure functions: no I/O, no clock. `parse_report` reads a usage report exactly as the provider's
admin API returns it (one page, or a JSON array of pages) and sums it per UTC day x model (x the
provider's project, workspace or key, mapped to our key or tag, when asked); `compare` sets it
beside the ledger's sums of the same cells and prices both sides at our rate card;
`render_csv` / `render_xlsx` make the answer a document finance can read.

Token classes use the ledger's inclusive semantics (see `metering.records`):
    input_tokens       = uncached input + cached + cache writes
    cached_tokens      = cache reads
    cache_write_tokens = cache writes (all retention periods)
    output_tokens      = all output (reasoning included)
OpenAI's Usage API (`GET /v1/organization/usage/completions`) is inclusive already: `input_tokens`
includes `input_cached_tokens` and the cache-write fields. Anthropic's Admin API usage report
(`GET /v1/organizations/usage_report/messages`) is not: `uncached_input_tokens` excludes
`cache_read_input_tokens` and `cache_creation`, which are added back.

A class the report does not carry (OpenAI's completions usage has no web searches and, before
cache writes were billed, no cache-write fields; Anthropic's report has no request count) is null
on the provider's side, never causes drift, and is priced on the provider's side with the
ledger's quantity, so both costs cover the same classes. Reasoning tokens are not split out of
output by either report: the provider's output is priced with the ledger's reasoning share.

Tolerance: a class drifts when |provider - ledger| > tolerance x ledger (tolerance 0: exact; a
ledger count of 0 against any provider count drifts at every tolerance). A cell present on one
side only always drifts. Costs never decide the status; they say what the drift is worth.
"""

from metering.reconcile.compare import LedgerCell, compare
from metering.reconcile.documents import MEDIA_TYPES, flat_rows, header_lines, render, render_csv, render_xlsx
from metering.reconcile.params import (
    ENDPOINTS,
    FORMATS,
    PROVIDERS,
    TOLERANCE_RULE,
    Models,
    Split,
    parse_day,
    parse_format,
    parse_models,
    parse_provider,
    parse_range,
    parse_split,
    parse_tolerance,
)
from metering.reconcile.providers import Report, pages_of, parse_report

__all__ = ["ENDPOINTS", "FORMATS", "MEDIA_TYPES", "PROVIDERS", "TOLERANCE_RULE", "LedgerCell", "Models", "Report", "Split",
           "compare", "flat_rows", "header_lines", "pages_of", "parse_day", "parse_format", "parse_models",
           "parse_provider", "parse_range", "parse_report", "parse_split", "parse_tolerance", "render", "render_csv",
           "render_xlsx"]
