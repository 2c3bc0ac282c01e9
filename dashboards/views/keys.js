// Keys: a sortable table of one month's spend per key, and a page per key over any period.

import { api, query, session } from "../lib/api.js";
import { seriesOf, stackedBars } from "../lib/charts.js";
import { describePeriod, knownZone, monthStart, periodForm, resolvePeriod, todayIn, zoneSelect } from "../lib/dates.js";
import { card, h, int, legend, money, panel, pct, title } from "../lib/dom.js";
import { toPico } from "../lib/money.js";
import { budgetCard } from "./budgets.js";

const COLUMNS = [
  { id: "api_key_id", label: "Key" }, { id: "account", label: "Account" },
  { id: "cost", label: "Spend", num: true }, { id: "requests", label: "Requests", num: true },
  { id: "tokens", label: "Tokens", num: true }, { id: "hit", label: "Cache hit rate", num: true },
  { id: "thinking", label: "Thinking share", num: true },
];

export async function keys({ params, go }) {
  const tz = params.get("tz") || "UTC";
  if (!knownZone(tz)) throw new Error(`tz: unknown time zone ${JSON.stringify(tz)}`);
  const month = /^\d{4}-\d{2}$/.test(params.get("month") ?? "") ? params.get("month") : todayIn(tz).slice(0, 7);
  const start = `${month}-01`;
  const [usage, registered] = await Promise.all([
    api(`/v1/usage?${query({ start, end: monthStart(start, 1), tz, bucket: "month", group_by: "api_key_id" })}`),
    session.admin ? api("/v1/keys")
      : Promise.resolve({ data: [{ api_key_id: session.me.api_key_id, account_id: session.me.account_id }] }),
  ]);
  const accounts = new Map(registered.data.map((k) => [k.api_key_id, k.account_id]));
  const rows = usage.buckets.flatMap((b) => b.results).map((r) => ({
    api_key_id: r.api_key_id, account: accounts.get(r.api_key_id) ?? "unassigned", cost: r.cost === null ? -1n : toPico(r.cost),
    costText: r.cost, requests: r.requests, tokens: r.input_tokens + r.output_tokens,
    hit: r.input_tokens ? r.cached_tokens / r.input_tokens : 0, thinking: r.output_tokens ? r.thinking_tokens / r.output_tokens : 0,
  }));
  const sort = { by: "cost", desc: true };
  const holder = h("div", {});
  const render = () => {
    const sorted = [...rows].sort((a, b) => {
      const av = a[sort.by], bv = b[sort.by];
      const c = av < bv ? -1 : av > bv ? 1 : 0;
      return sort.desc ? -c : c;
    });
    const head = h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col", class: c.num ? "num" : null,
      "aria-sort": sort.by === c.id ? (sort.desc ? "descending" : "ascending") : "none" },
    h("button", { type: "button", "data-sort": c.id, onclick: () => {
      sort.desc = sort.by === c.id ? !sort.desc : c.num;
      sort.by = c.id;
      render();
      holder.querySelector(`button[data-sort=${c.id}]`).focus();
    } }, c.label + (sort.by === c.id ? (sort.desc ? " ▼" : " ▲") : "")))));
    const body = sorted.map((r) => h("tr", { "data-key": r.api_key_id },
      h("th", { scope: "row" }, h("a", { href: `#/keys/${encodeURIComponent(r.api_key_id)}`, text: r.api_key_id })),
      h("td", { text: r.account }), h("td", { class: "num" }, money(r.costText)),
      h("td", { class: "num", text: int(r.requests) }), h("td", { class: "num", text: int(r.tokens) }),
      h("td", { class: "num", text: pct(r.hit, 1) }), h("td", { class: "num", text: pct(r.thinking, 1) })));
    holder.replaceChildren(h("div", { class: "scroll" }, h("table", { id: "keys-table" },
      h("caption", { class: "muted", text: `${month} (${tz}). Select a column heading to sort.` }),
      h("thead", {}, head), h("tbody", {}, body))));
  };
  render();
  const form = h("form", { class: "controls", "aria-label": "Choose the month", onsubmit: (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    go("keys", { month: data.get("month"), tz: data.get("tz") });
  } },
  h("label", {}, "Month", h("input", { type: "month", name: "month", value: month, min: "2000-01", max: "2099-12",
    required: true })),
  h("label", {}, "Time zone", zoneSelect("tz", tz)),
  h("button", { type: "submit", text: "Show" }));
  return [title("Keys"), form, h("section", { class: "panel" }, holder)];
}

export async function keyPage({ params, go, arg: id }) {
  if (session.me.role === "key" && id !== session.me.api_key_id) {
    // Asks the API nothing: a key may read only itself.
    return [title("Key"), h("p", { class: "error", role: "alert", "data-figure": "denied",
      text: `You can see only your own key (${session.me.api_key_id}).` })];
  }
  const period = resolvePeriod(params, "last-30");
  const q = { start: period.start, end: period.end, tz: period.tz, bucket: "day", group_by: "model" };
  if (session.admin) q.api_key_id = id;
  const [usage, status] = await Promise.all([
    api(`/v1/usage?${query(q)}`), api(`/v1/budgets/status?${query({ api_key_id: id })}`)]);
  const series = seriesOf(usage, "model");
  return [
    title(`Key ${id}`),
    periodForm(period, (p) => go(`keys/${encodeURIComponent(id)}`, p)),
    h("div", { class: "cards" },
      card("Spend", money(usage.totals.cost), describePeriod(period), "key-cost"),
      card("Requests", int(usage.totals.requests), null, "key-requests"),
      card("Cache hit rate", pct(usage.totals.cached_tokens, usage.totals.input_tokens)),
      card("Thinking share", pct(usage.totals.thinking_tokens, usage.totals.output_tokens))),
    panel("Daily spend by model", "key-daily-h", stackedBars(usage.buckets.map((b) => b.start.slice(0, 10)), series,
      `Daily spend of ${id} by model`), legend(series.map((x) => x.name))),
    panel("Budgets covering this key", "key-budgets-h",
      status.budgets.length ? status.budgets.map((st) => budgetCard(st)) : h("p", { class: "muted", text: "No budget covers this key." })),
  ];
}
