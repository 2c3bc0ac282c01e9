"""The rate card: every model's versions and aliases, and adding them."""

from __future__ import annotations

from typing import Any

from metering.errors import RateCardError
from metering.ratecard import RateCard, parse_aliases, parse_version
from metering.services.context import Context


def card_json(card: RateCard) -> dict[str, Any]:
    models: dict[str, list[dict[str, Any]]] = {}
    for version in card.all_versions():
        models.setdefault(version.model, []).append(version.as_json())
    return {"currency": "USD", "models": [{"model": m, "aliases": card.aliases_of(m), "versions": v}
                                          for m, v in models.items()]}


def get_card(ctx: Context) -> dict[str, Any]:
    return card_json(ctx.store.card)


def add_version(ctx: Context, *, body: Any, source: str = "api") -> dict[str, Any]:
    """A version from its JSON form (prices as in the file), and/or `aliases` of the model: the same
    effective_from twice, or an alias that is another model's name or alias: 409. A body of only
    `model` and `aliases` adds aliases to a model that has versions. The answer: the version added (if
    any), with the model's aliases."""
    if not isinstance(body, dict):
        raise RateCardError("the body must be a JSON object: model, effective_from and the prices")
    data = dict(body)
    model = data.pop("model", None)
    if not isinstance(model, str):
        raise RateCardError("model: is required (a string)")
    where = f"rate version for model {model[:200]!r}"
    aliases = parse_aliases(data.pop("aliases"), where) if "aliases" in data else []
    version = parse_version(model, data, where) if data or not aliases else None
    stored, _ = ctx.store.add_rates(model, version=version, aliases=aliases, source=source)
    answer = stored.as_json() if stored is not None else {"model": model}
    return {**answer, "aliases": ctx.store.card.aliases_of(model)}
