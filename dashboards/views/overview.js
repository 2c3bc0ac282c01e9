// Overview: a period's spend over time, top keys and models, dollars per token class, cache savings,
// and the month's projection. Every figure is computed by the API (GET /v1/overview).

import { api, query, session } from "../lib/api.js";
import { seriesOfDays, shareBar, stackedBars } from "../lib/charts.js";
import { describePeriod, periodForm, resolvePeriod } from "../lib/dates.js";
import { card, h, int, legend, money, panel, pct, table, title } from "../lib/dom.js";
import { toPico } from "../lib/money.js";

export const CLASS_LABELS = {
  uncached_input: "Input, not cached", cached_input: "Cached input", cache_write: "Cache writes",
  output: "Output, not thinking", thinking: "Thinking", web_search: "Web searches (requests)",
};

function keyLink(id) {
  return h("a", { href: `#/keys/${encodeURIComponent(id)}`, text: id });
}

export async function overview({ params, go }) {
  const period = resolvePeriod(params, "this-month");
  const ov = await api(`/v1/overview?${query({ start: period.start, end: period.end, tz: period.tz })}`);
  const t = ov.totals;
  const mine = session.me.role === "key";
  const classes = ov.by_class.classes;
  const series = seriesOfDays(ov.daily, ov.top_models.map((m) => m.model));
  const unpriced = t.unpriced_requests > 0
    ? `${int(t.unpriced_requests)} unpriced requests are not in these amounts` : null;
  return [
    title(mine ? `Overview · ${session.me.api_key_id}` : "Overview"),
    periodForm(period, (p) => go("overview", p)),
    h("p", { class: "muted", id: "period-text", text: `${describePeriod(period)} · ${int(t.requests)} requests` }),
    h("div", { class: "cards", "aria-label": "The period" },
      card("Spend", money(t.cost), unpriced ?? `${int(t.requests)} requests`, "spend"),
      card("At list price", money(t.list_cost), null, "list"),
      card("Savings vs list", money(t.savings),
        `${pct(Number(toPico(t.savings)), Number(toPico(t.list_cost)))} of list`, "savings"),
      card("Saved by the prompt cache", money(ov.by_class.cache_savings),
        "cached tokens at the uncached input price, minus what they cost", "cache")),
    h("div", { class: "cards", "aria-label": "This month" },
      card(`Today (${ov.tz})`, money(ov.today), null, "today"),
      card("Month to date", money(ov.month_to_date), null, "mtd"),
      card("Projected month end", money(ov.projected_month_end), ov.projection_rule, "projected")),
    panel("Spend over time", "spend-h",
      stackedBars(ov.daily.map((d) => d.date), series, `Daily spend by model, ${describePeriod(period)}`),
      legend(series.map((x) => x.name)),
      h("details", {}, h("summary", { text: "The figures by day" }),
        table(["Day", { label: "Spend", num: true }], ov.daily.map((d) => [d.date, money(d.cost)]),
          { id: "daily-table" }))),
    h("div", { class: "split" },
      panel(mine ? "Your key" : "Top keys", "keys-h",
        table(["Key", { label: "Requests", num: true }, { label: "Spend", num: true }],
          ov.top_keys.map((k) => [keyLink(k.api_key_id), int(k.requests), money(k.cost)]),
          { id: "top-keys", rowAttrs: (i) => ({ "data-key": ov.top_keys[i].api_key_id }) })),
      panel("Top models", "models-h",
        table(["Model", { label: "Requests", num: true }, { label: "Spend", num: true }],
          ov.top_models.map((m) => [m.model, int(m.requests), money(m.cost)]),
          { id: "top-models", rowAttrs: (i) => ({ "data-model": ov.top_models[i].model }) }))),
    panel("Cost per token class", "class-h",
      shareBar(classes.filter((c) => c.token_class !== "web_search").map((c) => ({
        value: c.quantity, title: `${CLASS_LABELS[c.token_class]}: ${int(c.quantity)} tokens` })), "Token mix in the period"),
      legend(classes.filter((c) => c.token_class !== "web_search").map((c) => CLASS_LABELS[c.token_class])),
      h("p", { class: "muted", text: "Cost at the current and at the list price; each record's tokens are priced by "
        + "the rate version that priced the record." }),
      table(["Class", { label: "Tokens", num: true }, { label: "Cost", num: true }, { label: "List", num: true }],
        classes.map((c) => [CLASS_LABELS[c.token_class] ?? c.token_class, int(c.quantity), money(c.cost), money(c.list_cost)]),
        { id: "class-table", rowAttrs: (i) => ({ "data-class": classes[i].token_class }),
          foot: ["All classes", "", money(t.cost), money(t.list_cost)] })),
  ];
}
