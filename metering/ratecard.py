"""Rate card versions: loading, validating, and finding the version in effect.

Prices are USD per 1M tokens (web search: USD per 1,000 requests), each with a `current`
and a `list` ("was") price, written as decimal strings so they stay exact. A price has at
most 6 decimal places (1e-12 USD per token), so every record's cost is an exact integer
number of pico-dollars: see `pricing.py`.

File format (`data/rate_card.toml`):

    [models.minimax-m2-7]
    aliases = ["MiniMax-M2.7"]   # optional: other spellings of the model id, priced as the model

    [[models.minimax-m2-7.versions]]
    effective_from = 2025-01-01T00:00:00Z
    input        = { current = "0.15", list = "0.30" }
    cached_input = { current = "0.03", list = "0.06" }
    output       = { current = "0.60", list = "1.20" }
    # optional: cache_write (default: input), thinking (default: output),
    #           web_search (USD per 1,000 requests; default: not charged)

Aliases: a record whose model is exactly (case and all) one of a model's aliases is priced by that
model's versions, at ingest and by re-rating; the ledger keeps the model as the record sent it. An
alias belongs to one model, is never a model's own name, and may not differ only in case from a
name of another model (which would make the card ambiguous to a reader).
"""

from __future__ import annotations

import bisect
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from metering.errors import Conflict, RateCardError, RecordError
from metering.records import parse_timestamp

TOKEN_PRICE_FIELDS = ("input", "cached_input", "output")
OPTIONAL_TOKEN_PRICE_FIELDS = ("cache_write", "thinking")
ALL_PRICE_FIELDS = (*TOKEN_PRICE_FIELDS, *OPTIONAL_TOKEN_PRICE_FIELDS, "web_search")
MAX_TOKEN_PRICE_PLACES = 6  # per 1M tokens -> 1e-12 USD per token
MAX_SEARCH_PRICE_PLACES = 9  # per 1,000 requests -> 1e-12 USD per request
MAX_PRICE = Decimal(1_000_000)
MAX_MODEL = 200  # characters, as a record's model


@dataclass(frozen=True, slots=True)
class Price:
    current: Decimal
    list: Decimal

    def as_json(self) -> dict[str, str]:
        return {"current": format_decimal(self.current), "list": format_decimal(self.list)}


@dataclass(frozen=True, slots=True)
class RateVersion:
    model: str
    effective_from: datetime  # aware UTC
    input: Price
    cached_input: Price
    output: Price
    cache_write: Price | None = None  # None: billed at the input price
    thinking: Price | None = None  # None: billed at the output price
    web_search: Price | None = None  # None: web search is not charged
    id: int | None = None  # assigned by the store

    def same_prices(self, other: RateVersion) -> bool:
        return all(getattr(self, name) == getattr(other, name) for name in ALL_PRICE_FIELDS)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "effective_from": self.effective_from.isoformat().replace("+00:00", "Z"),
        }
        for name in ALL_PRICE_FIELDS:
            price = getattr(self, name)
            out[name] = price.as_json() if price is not None else None
        out["unit"] = {"tokens": "USD per 1M tokens", "web_search": "USD per 1,000 requests"}
        return out


@dataclass
class RateCard:
    """All versions of all models, sorted by effective_from per model, and the models' aliases.
    `aliases` is replaced, never changed in place, so a reader holding it sees one state."""

    versions: dict[str, list[RateVersion]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> model

    def copy(self) -> RateCard:
        return RateCard({model: list(vs) for model, vs in self.versions.items()}, dict(self.aliases))

    def add(self, version: RateVersion) -> None:
        if version.model not in self.versions:  # a new model: not another's alias, nor one but for case
            self._check_name(version.model, version.model, against=self.aliases)
        versions = self.versions.setdefault(version.model, [])
        if any(v.effective_from == version.effective_from for v in versions):
            raise RateCardError(
                f"model {version.model!r} already has a version effective from "
                f"{version.effective_from.isoformat()}"
            )
        bisect.insort(versions, version, key=lambda v: v.effective_from)

    def _check_name(self, name: str, model: str, *, against: Any = None) -> None:
        """Conflict if `name` (a new alias of `model`, or a new model) is another model's alias, or
        differs only in case from a name (in `against`: default, every model and alias) of another model."""
        owner = self.aliases.get(name)
        if owner is not None and owner != model:
            raise Conflict(f"{name!r} is already an alias of model {owner!r}")
        folded = name.casefold()
        for other in (against if against is not None else (*self.versions, *self.aliases)):
            if other != name and other.casefold() == folded and self.model_of(other) != model:
                raise Conflict(f"{name!r} differs only in case from {other!r}"
                               + (f", an alias of model {self.model_of(other)!r}" if other in self.aliases else
                                  ", a model of the rate card") + ": the card would be ambiguous")

    def add_alias(self, alias: str, model: str) -> bool:
        """Make `alias` a spelling of `model` (which has versions). False if it already is; Conflict if
        it is a model's own name or another model's alias."""
        if alias == model:
            raise RateCardError(f"alias {alias!r}: is the model's own name")
        if model not in self.versions:
            raise RateCardError(f"model {model!r} has no versions: add one with its prices (in the same request) "
                                "before giving it aliases")
        if alias in self.versions:
            raise Conflict(f"{alias!r} is a model of the rate card with prices of its own; it cannot be an alias of "
                           f"{model!r}")
        if self.aliases.get(alias) == model:
            return False
        self._check_name(alias, model)
        self.aliases = {**self.aliases, alias: model}
        return True

    def model_of(self, name: str) -> str:
        """The model a record's model id is priced as: the model whose alias it is, else itself."""
        return self.aliases.get(name, name)

    def aliases_of(self, model: str) -> list[str]:
        return sorted(alias for alias, owner in self.aliases.items() if owner == model)

    def version_at(self, model: str, at: datetime) -> RateVersion | None:
        """The version in effect at `at` for a model id or one of its aliases: the latest with
        effective_from <= at."""
        versions = self.versions.get(model)
        if versions is None and model in self.aliases:
            versions = self.versions.get(self.aliases[model])
        if not versions:
            return None
        i = bisect.bisect_right(versions, at, key=lambda v: v.effective_from)
        return versions[i - 1] if i else None

    def version_by_id(self, version_id: int) -> RateVersion | None:
        return next((v for vs in self.versions.values() for v in vs if v.id == version_id), None)

    def all_versions(self) -> list[RateVersion]:
        return [v for model in sorted(self.versions) for v in self.versions[model]]


def format_decimal(value: Decimal) -> str:
    """A decimal as a plain string, no exponent, no trailing zeros: Decimal('0.150') -> '0.15'."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


# --- parsing and validation ------------------------------------------------------------------


def _decimal(value: Any, where: str, places: int) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RateCardError(
            f"{where}: must be a decimal string such as \"0.15\" (binary floats are inexact), got {value!r}"
        )
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise RateCardError(f"{where}: is not a decimal number: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise RateCardError(f"{where}: must be a non-negative finite number, got {value!r}")
    if number > MAX_PRICE:
        raise RateCardError(f"{where}: must be at most {MAX_PRICE}, got {value!r}")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise RateCardError(f"{where}: has more than {places} decimal places: {value!r}")
    return number


def _price(value: Any, where: str, places: int) -> Price:
    if not isinstance(value, dict):
        raise RateCardError(f"{where}: must be a table {{ current = \"...\", list = \"...\" }}, got {value!r}")
    unknown = set(value) - {"current", "list"}
    if unknown:
        raise RateCardError(f"{where}: unknown key {sorted(unknown)[0]!r} (expected current, list)")
    for key in ("current", "list"):
        if key not in value:
            raise RateCardError(f"{where}.{key}: is required")
    return Price(
        current=_decimal(value["current"], f"{where}.current", places),
        list=_decimal(value["list"], f"{where}.list", places),
    )


def _effective_from(value: Any, where: str) -> datetime:
    if isinstance(value, str):
        try:
            return parse_timestamp(value, where)
        except RecordError as exc:
            raise RateCardError(exc.message) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise RateCardError(f"{where}: needs a UTC offset, e.g. 2025-01-01T00:00:00Z")
        return value.astimezone(UTC)
    if isinstance(value, date):
        raise RateCardError(f"{where}: needs a time and a UTC offset, e.g. {value.isoformat()}T00:00:00Z")
    raise RateCardError(f"{where}: is required (an RFC 3339 timestamp with an offset)")


def parse_version(model: str, data: Any, where: str) -> RateVersion:
    """One version from its TOML/JSON table; errors name `where` (file, model, version) and the field."""
    if not isinstance(model, str) or not 1 <= len(model) <= 200:
        raise RateCardError(f"{where}: model must be a string of 1 to 200 characters")
    if not isinstance(data, dict):
        raise RateCardError(f"{where}: a version must be a table, got {data!r}")
    known = {"effective_from", *ALL_PRICE_FIELDS}
    unknown = sorted(set(data) - known)
    if unknown:
        raise RateCardError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(known))})")
    prices: dict[str, Price | None] = {}
    for name in TOKEN_PRICE_FIELDS:
        if name not in data:
            raise RateCardError(f"{where}: field {name!r} is required")
        prices[name] = _price(data[name], f"{where}: field {name!r}", MAX_TOKEN_PRICE_PLACES)
    for name in OPTIONAL_TOKEN_PRICE_FIELDS:
        if data.get(name) is not None:
            prices[name] = _price(data[name], f"{where}: field {name!r}", MAX_TOKEN_PRICE_PLACES)
    if data.get("web_search") is not None:
        prices["web_search"] = _price(data["web_search"], f"{where}: field 'web_search'", MAX_SEARCH_PRICE_PLACES)
    return RateVersion(
        model=model,
        effective_from=_effective_from(data.get("effective_from"), f"{where}: field 'effective_from'"),
        **prices,  # type: ignore[arg-type]
    )


def parse_aliases(value: Any, where: str) -> list[str]:
    """A model's `aliases`: a list of distinct model ids (strings of 1 to 200 characters)."""
    if not isinstance(value, list):
        raise RateCardError(f"{where}: aliases must be a list of model ids, e.g. [\"MiniMax-M2.7\"], got {value!r}")
    seen: list[str] = []
    for i, alias in enumerate(value):
        if not isinstance(alias, str) or not 1 <= len(alias) <= MAX_MODEL:
            raise RateCardError(f"{where}: aliases[{i}] must be a string of 1 to {MAX_MODEL} characters, "
                                f"got {str(alias)[:50]!r}")
        if alias in seen:
            raise RateCardError(f"{where}: aliases[{i}] {alias!r} is listed twice")
        seen.append(alias)
    return seen


def load_rate_card(path: Path) -> RateCard:
    """Read and validate a rate card file. Any defect raises RateCardError naming the file,
    the model and the field."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RateCardError(f"{path}: rate card file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RateCardError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"models"})
    if unknown:
        raise RateCardError(f"{path}: unknown top-level key {unknown[0]!r} (expected [models.NAME])")
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise RateCardError(f"{path}: no models: expected at least one [[models.NAME.versions]] table")
    card = RateCard()
    aliases: list[tuple[str, str, str]] = []  # added once every model has its versions
    for model, body in models.items():
        where_model = f"{path}: model {model!r}"
        if (not isinstance(body, dict) or "versions" not in body or not set(body) <= {"versions", "aliases"}
                or not isinstance(body["versions"], list)):
            raise RateCardError(f"{where_model}: expected a list of [[models.{model}.versions]] tables "
                                "(and optionally aliases = [...])")
        if not body["versions"]:
            raise RateCardError(f"{where_model}: has no versions")
        for i, data in enumerate(body["versions"]):
            version = parse_version(model, data, f"{where_model} version {i + 1}")
            try:
                card.add(version)
            except (RateCardError, Conflict) as exc:
                raise RateCardError(f"{path}: {exc.message}") from None
        aliases += [(alias, model, where_model) for alias in parse_aliases(body.get("aliases", []), where_model)]
    for alias, model, where_model in aliases:
        try:
            card.add_alias(alias, model)
        except (RateCardError, Conflict) as exc:
            raise RateCardError(f"{where_model}: {exc.message}") from None
    return card
