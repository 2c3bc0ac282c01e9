"""The rate card: every model's versions, and adding one."""

from __future__ import annotations

from typing import Any

from metering.errors import RateCardError
from metering.ratecard import RateCard, parse_version
from metering.services.context import Context


def card_json(card: RateCard) -> dict[str, Any]:
    models: dict[str, list[dict[str, Any]]] = {}
    for version in card.all_versions():
        models.setdefault(version.model, []).append(version.as_json())
    return {"currency": "USD", "models": [{"model": m, "versions": v} for m, v in models.items()]}


def get_card(ctx: Context) -> dict[str, Any]:
    return card_json(ctx.store.card)


def add_version(ctx: Context, *, body: Any, source: str = "api") -> dict[str, Any]:
    """A version from its JSON form (prices as in the file); the same effective_from twice: 409."""
    if not isinstance(body, dict):
        raise RateCardError("the body must be a JSON object: model, effective_from and the prices")
    data = dict(body)
    model = data.pop("model", None)
    if not isinstance(model, str):
        raise RateCardError("model: is required (a string)")
    version = parse_version(model, data, f"rate version for model {model[:200]!r}")
    return ctx.store.add_rate_version(version, source=source).as_json()
