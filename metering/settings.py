"""The one Settings object: the only code that reads environment variables."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

DEFAULT_DB = Path("data/metering.duckdb")
DEFAULT_RATE_CARD = Path(__file__).resolve().parent.parent / "data" / "rate_card.toml"
MIN_TOKEN_LENGTH = 16

ENVIRONMENT = {
    "METERING_DB": "database file (default data/metering.duckdb)",
    "METERING_ADMIN_TOKEN": "admin bearer token; required by `serve` unless --dev",
    "METERING_INGEST_TOKEN": "ingest bearer token (POST /v1/usage only)",
    "METERING_METRICS_TOKEN": "bearer token that may read GET /metrics and nothing else (for a Prometheus scraper)",
    "METERING_RATE_CARD": "rate card TOML seeded into the database at start (default data/rate_card.toml)",
    "METERING_URL": "base URL of a running server; CLI data commands then go through its HTTP API",
    "METERING_TOKEN": "bearer token the CLI sends with --url (default: the admin token)",
    "METERING_WEBHOOK_RETRY_SCHEDULE": "seconds between webhook retries, comma-separated "
                                       "(default 5,300,1800,7200,18000,36000,36000)",
    "METERING_EVALUATE_INTERVAL": "seconds between scheduled budget evaluations (default 60)",
    "METERING_ANOMALY_MIN_USD": "smallest daily spend of a key that can be an anomaly (default 1)",
    "METERING_WEBHOOK_ALLOW_LINK_LOCAL": "1 to allow webhook URLs on link-local and cloud metadata addresses",
    "METERING_BODY_TIMEOUT": "seconds a client may take to send a request body before a 408 (default 30)",
    "METERING_MEMORY_LIMIT": "DuckDB's memory limit, e.g. 3GB (default: DuckDB's, 80% of RAM); past it, spill to disk",
    "METERING_QUERY_TIMEOUT": "seconds an expensive read (usage, reports, re-rating) may run before it is stopped "
                              "with a 429 (default 30)",
    "METERING_READS_PER_PRINCIPAL": "expensive reads one token may run at once; more get a 429 (default 4)",
    "METERING_BILLING_TZ": "IANA time zone of billing months: statements, FOCUS charge days, period close (default UTC)",
    "METERING_AUTO_CLOSE_DAYS": "close each month automatically this many days after it ends (default: unset, off)",
}


# Read by the gateway-side integrations (metering.integrations.litellm), not by the service.
# Documented in docs/integrations.md (tests/integrations/test_litellm.py checks it).
GATEWAY_ENVIRONMENT = {
    "METERING_URL": "base URL of the metering service the gateway reports to",
    "METERING_INGEST_TOKEN": "the ingest token the gateway sends usage with",
    "METERING_SPOOL_DIR": "directory of the client's disk spool (unset: an in-memory queue, lost on exit)",
    "METERING_RESERVE": "1 to reserve each call's most possible cost before the call (the proxy's pre-call hook); "
                        "a deny becomes LiteLLM's budget error",
}


class SettingsError(ValueError):
    pass


def _number(env: dict[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}: not a number: {text!r}") from None
    if not value > 0:
        raise SettingsError(f"{name}: must be above 0, got {text!r}")
    return value


def _billing_tz(name: str) -> str:
    from zoneinfo import available_timezones

    if name not in available_timezones():
        raise SettingsError(f"METERING_BILLING_TZ: unknown IANA time zone {name[:64]!r} (for example UTC, Europe/Berlin)")
    return name


def _days(env: dict[str, str], name: str) -> int | None:
    text = (env.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) > 365:
        raise SettingsError(f"{name}: a whole number of days from 0 to 365, got {text[:40]!r}")
    return int(text)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Where a gateway integration sends usage: the service's URL, the ingest token, the spool."""

    url: str
    ingest_token: str
    spool_dir: Path | None = None
    reserve: bool = False  # reserve before each call (the proxy's pre-call hook)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> GatewaySettings:
        env = dict(os.environ if env is None else env)
        missing = [name for name in ("METERING_URL", "METERING_INGEST_TOKEN") if not env.get(name)]
        if missing:
            raise SettingsError(f"{' and '.join(missing)} not set: the metering integration needs the service's "
                                "URL and its ingest token (see docs/integrations.md)")
        spool = env.get("METERING_SPOOL_DIR")
        return cls(url=env["METERING_URL"], ingest_token=env["METERING_INGEST_TOKEN"],
                   spool_dir=Path(spool) if spool else None,
                   reserve=env.get("METERING_RESERVE", "") in ("1", "true", "yes"))


@dataclass(frozen=True, slots=True)
class Settings:
    db_path: Path = DEFAULT_DB
    rate_card_path: Path = DEFAULT_RATE_CARD
    admin_token: str | None = None
    ingest_token: str | None = None
    metrics_token: str | None = None
    url: str | None = None
    client_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    dev: bool = False
    webhook_retry_schedule: str | None = None
    evaluate_interval: float = 60.0
    anomaly_min_usd: str = "1"
    webhook_allow_link_local: bool = False
    evaluate_on_ingest: bool = True  # tests that drive evaluation by hand turn this off
    body_timeout: float = 30.0
    memory_limit: str | None = None
    query_timeout: float = 30.0
    reads_per_principal: int = 4
    billing_tz: str = "UTC"
    auto_close_days: int | None = None

    @property
    def anomaly_min_pico(self) -> int:
        return int(Decimal(self.anomaly_min_usd).scaleb(12))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict[str, object] = {
            "db_path": Path(env.get("METERING_DB") or DEFAULT_DB),
            "rate_card_path": Path(env.get("METERING_RATE_CARD") or DEFAULT_RATE_CARD),
            "admin_token": env.get("METERING_ADMIN_TOKEN") or None,
            "ingest_token": env.get("METERING_INGEST_TOKEN") or None,
            "metrics_token": env.get("METERING_METRICS_TOKEN") or None,
            "url": env.get("METERING_URL") or None,
            "client_token": env.get("METERING_TOKEN") or None,
            "webhook_retry_schedule": env.get("METERING_WEBHOOK_RETRY_SCHEDULE") or None,
            "evaluate_interval": _number(env, "METERING_EVALUATE_INTERVAL", 60.0),
            "anomaly_min_usd": env.get("METERING_ANOMALY_MIN_USD") or "1",
            "webhook_allow_link_local": env.get("METERING_WEBHOOK_ALLOW_LINK_LOCAL", "") in ("1", "true", "yes"),
            "body_timeout": _number(env, "METERING_BODY_TIMEOUT", 30.0),
            "memory_limit": env.get("METERING_MEMORY_LIMIT") or None,
            "query_timeout": _number(env, "METERING_QUERY_TIMEOUT", 30.0),
            "reads_per_principal": int(_number(env, "METERING_READS_PER_PRINCIPAL", 4)),
            "billing_tz": _billing_tz(env.get("METERING_BILLING_TZ") or "UTC"),
            "auto_close_days": _days(env, "METERING_AUTO_CLOSE_DAYS"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def for_serving(self) -> tuple[Settings, dict[str, str]]:
        """Validate for `serve`. In dev mode, generate missing tokens; return the generated ones."""
        generated: dict[str, str] = {}
        settings = self
        if self.dev:
            if not self.admin_token:
                generated["METERING_ADMIN_TOKEN"] = "adm_" + secrets.token_urlsafe(24)
            if not self.ingest_token:
                generated["METERING_INGEST_TOKEN"] = "ing_" + secrets.token_urlsafe(24)
            settings = replace(
                self,
                admin_token=self.admin_token or generated.get("METERING_ADMIN_TOKEN"),
                ingest_token=self.ingest_token or generated.get("METERING_INGEST_TOKEN"),
            )
        if not settings.admin_token:
            raise SettingsError(
                "METERING_ADMIN_TOKEN is not set: refusing to serve without an admin token "
                "(set it, or pass --dev to generate tokens for local use)"
            )
        tokens = (("METERING_ADMIN_TOKEN", settings.admin_token), ("METERING_INGEST_TOKEN", settings.ingest_token),
                  ("METERING_METRICS_TOKEN", settings.metrics_token))
        for name, token in tokens:
            if token is not None and len(token) < MIN_TOKEN_LENGTH:
                raise SettingsError(f"{name} is too short: use at least {MIN_TOKEN_LENGTH} characters")
        for i, (name, token) in enumerate(tokens):
            for other, earlier in tokens[:i]:
                if token and token == earlier:
                    raise SettingsError(f"{name} must differ from {other}")
        return settings, generated
