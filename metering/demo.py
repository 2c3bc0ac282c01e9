"""`metering demo`: a demo database with realistic synthetic traffic, then the service on it.

60 days (by default) of traffic from 20 keys in 5 accounts, through all three endpoint shapes
(native `usage` objects, normalized like real ones), with a daily and a weekly rhythm, heavy and
light keys (Zipf), prompt-cache hits and thinking, a price change in the period (on the demo's own
model, minimax-m2-7-lite; minimax-m2-7 keeps the shipped card's prices), a spike on one
key, a little usage of a model the card does not price, and a few budgets. Seeded: the same
data every time. Key secrets are `sk_demo_<key id>`: for a demo only.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tqdm import tqdm

from metering.access import ADMIN_PRINCIPAL
from metering.pricing import from_usd
from metering.services import alerts, budgets, ingest, rates, usage
from metering.services.context import Context
from metering.store.db import sha256_hex

ACCOUNTS = ["acme", "globex", "initech", "umbrella", "hooli"]
KEYS = [f"key-{i:02d}" for i in range(1, 21)]
SPIKE_KEY = "key-07"
MODEL = "minimax-m2-7"
OTHER_MODEL = "minimax-m2-7-lite"
UNPRICED_MODEL = "experimental-x"


def demo_secret(api_key_id: str) -> str:
    return f"sk_demo_{api_key_id}"


def _usage(endpoint: str, rng: random.Random, heavy: bool) -> dict[str, Any]:
    scale = 3 if heavy else 1
    prompt = int(rng.lognormvariate(7.2, 0.9)) * scale + 20
    cached = int(prompt * rng.uniform(0.3, 0.95)) if rng.random() < 0.55 else 0
    output = int(rng.lognormvariate(5.5, 0.8)) + 5
    thinking = int(output * rng.uniform(0.2, 0.7))
    if endpoint == "chat.completions":
        return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
                "prompt_tokens_details": {"cached_tokens": cached},
                "completion_tokens_details": {"reasoning_tokens": thinking}}
    if endpoint == "responses":
        return {"input_tokens": prompt, "output_tokens": output, "input_tokens_details": {"cached_tokens": cached},
                "output_tokens_details": {"reasoning_tokens": thinking}, "total_tokens": prompt + output}
    write = int((prompt - cached) * 0.5) if rng.random() < 0.1 else 0
    usage: dict[str, Any] = {"input_tokens": prompt - cached - write, "cache_read_input_tokens": cached,
                             "cache_creation_input_tokens": write, "output_tokens": output}
    if rng.random() < 0.05:
        usage["server_tool_use"] = {"web_search_requests": 1}
    return usage


def build(ctx: Context, *, days: int = 60, seed: int = 7, progress: bool = True) -> dict[str, int]:
    """Fill an empty store with the demo; returns counts."""
    store = ctx.store
    now = ctx.now().astimezone(UTC)
    rng = random.Random(seed)  # noqa: S311 (synthetic data, not security)
    start_day = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    for i, key in enumerate(KEYS):
        store.add_key(api_key_id=key, account_id=ACCOUNTS[i % len(ACCOUNTS)], name=f"{ACCOUNTS[i % 5]} app {i + 1}",
                      secret_sha256=sha256_hex(demo_secret(key)))
    # The price change is on the demo's own model: minimax-m2-7 keeps the shipped card's prices, so the
    # README's "Try it" figures come out as printed beside the demo's traffic.
    change = (now - timedelta(days=days // 3)).replace(hour=0, minute=0, second=0, microsecond=0)
    rates.add_version(ctx, source="demo", body={
        "model": OTHER_MODEL, "effective_from": (start_day - timedelta(days=1)).isoformat(),
        "input": {"current": "0.06", "list": "0.10"}, "cached_input": {"current": "0.012", "list": "0.02"},
        "output": {"current": "0.24", "list": "0.40"}})
    rates.add_version(ctx, source="demo", body={
        "model": OTHER_MODEL, "effective_from": change.isoformat(), "input": {"current": "0.05", "list": "0.10"},
        "cached_input": {"current": "0.01", "list": "0.02"}, "output": {"current": "0.20", "list": "0.40"},
        "web_search": {"current": "5", "list": "10"}})
    weights = {key: 1 / (rank + 1) ** 1.1 for rank, key in enumerate(KEYS)}  # Zipf: key-01 is the heaviest
    spike_day = now.date()  # today: the anomaly rule has something to find
    endpoints = ["chat.completions", "responses", "messages"]
    total = 0
    day = start_day
    bar = tqdm(total=days, desc="demo data", unit=" days", disable=not progress)
    while day <= now:
        weekly = 0.45 if day.weekday() >= 5 else 1.0
        growth = 1 + 0.5 * (day - start_day).days / days
        batch = []
        for key in KEYS:
            per_day = 800 * weights[key] * weekly * growth
            if key == SPIKE_KEY and day.date() == spike_day:
                per_day *= 40
            for hour in range(24):
                at_hour = day + timedelta(hours=hour)
                if at_hour > now:
                    break
                diurnal = 0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 6) / 14)) if 6 <= hour <= 20 else 0.15
                for _ in range(_poisson(rng, per_day * diurnal / 9.5)):
                    endpoint = rng.choice(endpoints)
                    model = MODEL if rng.random() < 0.8 else OTHER_MODEL
                    if rng.random() < 0.002:
                        model = UNPRICED_MODEL
                    occurred = at_hour + timedelta(seconds=rng.randrange(3600))
                    if occurred > now:
                        continue
                    total += 1
                    batch.append({
                        "request_id": f"demo-{total}", "occurred_at": occurred.isoformat(), "api_key_id": key,
                        "model": model, "endpoint": endpoint, "usage": _usage(endpoint, rng, weights[key] > 0.3),
                        "tags": {"project": rng.choice(["chat", "search", "agents"])},
                    })
        for first in range(0, len(batch), ingest.MAX_RECORDS):
            ingest.ingest_items(ctx, batch[first:first + ingest.MAX_RECORDS])
        bar.update(1)
        day += timedelta(days=1)
    bar.close()
    _budgets(ctx, now)
    alerts.evaluate_now(ctx)
    return {"records": total, "keys": len(KEYS), "accounts": len(ACCOUNTS)}


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def _budgets(ctx: Context, now: datetime) -> None:
    """A few budgets sized from the month so far, so the view has something to show."""
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat()

    def spent(group: str) -> dict[str, int]:
        result = usage.usage(ctx, principal=ADMIN_PRINCIPAL, start=month_start, end=now.isoformat(), bucket="month",
                             group_by=group)
        return {r[group]: from_usd(Decimal(r["cost"])) for b in result["buckets"] for r in b["results"]}

    accounts, keys = spent("account_id"), spent("api_key_id")
    specs = [
        ({"account_id": "acme"}, "month", int(accounts.get("acme", 10**12) * 1.4), True),
        ({"api_key_id": "key-01"}, "month", int(keys.get("key-01", 10**12) * 1.1), True),
        ({"all": True}, "month", int(sum(accounts.values()) * 2.5), False),
    ]
    for scope, period, pico, forecast in specs:
        amount = f"{max(pico, 10**12) // 10**10 / 100:.2f}"
        budgets.create(ctx, body={"scope": scope, "period": period, "amount": amount, "forecast": forecast})
