// Daily spend stacked by model, key or account over a period. The day totals are the API's
// (GET /v1/usage without a group); the page adds no amounts up.

import { api, query, session } from "../lib/api.js";
import { seriesOf, stackedBars } from "../lib/charts.js";
import { describePeriod, periodForm, resolvePeriod } from "../lib/dates.js";
import { h, int, legend, money, panel, table, title } from "../lib/dom.js";

const GROUP_LABELS = { model: "Model", api_key_id: "Key", account_id: "Account" };

export async function daily({ params, go }) {
  const period = resolvePeriod(params, "last-30");
  const groups = session.admin ? ["model", "api_key_id", "account_id"] : ["model"];
  const group = groups.includes(params.get("group")) ? params.get("group") : "model";
  const base = { start: period.start, end: period.end, tz: period.tz, bucket: "day" };
  const [usage, days] = await Promise.all([
    api(`/v1/usage?${query({ ...base, group_by: group })}`), api(`/v1/usage?${query(base)}`)]);
  const labels = usage.buckets.map((b) => b.start.slice(0, 10));
  const series = seriesOf(usage, group);
  const stack = h("label", {}, "Stack by", h("select", { name: "group" }, groups.map((g) =>
    h("option", { value: g, selected: g === group }, GROUP_LABELS[g]))));
  return [
    title("Daily spend"),
    periodForm(period, (p) => go("daily", p), [stack]),
    panel(`By ${GROUP_LABELS[group].toLowerCase()}`, "stack-h",
      stackedBars(labels, series, `Daily spend by ${GROUP_LABELS[group].toLowerCase()}, ${describePeriod(period)}`),
      legend(series.map((x) => x.name))),
    panel("By day", "days-h",
      table(["Date", { label: "Requests", num: true }, { label: "Cost", num: true }, { label: "List cost", num: true }],
        days.buckets.map((b) => {
          const all = b.results[0];
          return [b.start.slice(0, 10), int(all?.requests ?? 0), money(all ? all.cost : "0"), money(all ? all.list_cost : "0")];
        }), { id: "days-table" }),
      h("p", { class: "muted", "data-figure": "daily-total" }, "Total: ", money(days.totals.cost), " (list ",
        money(days.totals.list_cost), ")")),
  ];
}
