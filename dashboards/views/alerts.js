// Alerts: every alert the token may see (GET /v1/alerts: a key sees those of its own budgets and the
// anomalies about itself), with its delivery, filtered by status and type.

import { api, query } from "../lib/api.js";
import { h, money, table, title } from "../lib/dom.js";
import { scopeText } from "./budgets.js";

const TYPES = {
  "budget.threshold_crossed": "Threshold crossed", "budget.forecast_exceeded": "Forecast to exceed",
  "spend.anomaly": "Spend anomaly",
};
const STATUSES = {
  pending: "pending", delivered: "delivered", failed: "failed", disabled: "endpoint disabled", no_endpoint: "no webhook",
};

const when = (ts) => (ts ? `${ts.slice(0, 16).replace("T", " ")} UTC` : "—");
const threshold = (a) => (a.type === "budget.threshold_crossed" ? `${+(Number(a.payload.data.threshold) * 100).toFixed(4)}%`
  : a.type === "budget.forecast_exceeded" ? "forecast" : "—");

function subject(a, budgets) {
  if (a.budget_id && a.type !== "spend.anomaly") {
    const b = budgets.get(a.budget_id) ?? a.payload.data;
    return h("span", { title: a.budget_id }, b?.scope ? `${scopeText(b.scope)} · ${b.period}` : a.budget_id);
  }
  return `key ${a.api_key_id} · ${a.payload.data.day ?? ""}`;
}

function spent(a) {
  const d = a.payload.data;
  if (d.spent === undefined) return "—";
  return d.amount !== undefined ? h("span", {}, money(d.spent), " of ", money(d.amount)) : money(d.spent);
}

function options(labels, present, selected) {
  const values = [...new Set([...Object.keys(labels), ...present])];
  return [h("option", { value: "", text: "All" }),
    values.map((v) => h("option", { value: v, selected: v === selected }, labels[v] ?? v))];
}

export async function alerts({ params }) {
  const [list, budgetList] = await Promise.all([api("/v1/alerts"), api("/v1/budgets")]);
  const budgets = new Map(budgetList.data.map((b) => [b.id, b]));
  const items = list.data.slice().reverse(); // newest first
  const status = h("select", { name: "status" }, options(STATUSES, items.map((a) => a.status), params.get("status")));
  const type = h("select", { name: "type" }, options(TYPES, items.map((a) => a.type), params.get("type")));
  const count = h("p", { class: "muted", role: "status", "data-figure": "alert-count" });
  const holder = h("div", {});
  const render = () => {
    const shown = items.filter((a) => (!status.value || a.status === status.value) && (!type.value || a.type === type.value));
    count.textContent = `${shown.length} of ${items.length} alerts`;
    holder.replaceChildren(shown.length ? table(
      ["Created", "Type", "Budget or key", "Threshold", "Spent", "Status", { label: "Attempts", num: true }, "Delivered"],
      shown.map((a) => [when(a.created_at), TYPES[a.type] ?? a.type, subject(a, budgets), threshold(a), spent(a),
        h("span", { class: `badge ${a.status}`, text: STATUSES[a.status] ?? a.status }), String(a.attempts),
        when(a.delivered_at)]),
      { id: "alerts-table", stack: true, rowAttrs: (i) => ({ "data-alert": shown[i].id, "data-status": shown[i].status,
        "data-type": shown[i].type }) })
      : h("p", { class: "muted", text: items.length ? "No alert matches these filters." : "No alerts yet." }));
    history.replaceState(null, "", `#/alerts${status.value || type.value ? `?${query({ status: status.value, type: type.value })}` : ""}`);
  };
  status.addEventListener("change", render);
  type.addEventListener("change", render);
  render();
  return [
    title("Alerts"),
    h("form", { class: "controls", "aria-label": "Filters", onsubmit: (e) => e.preventDefault() },
      h("label", {}, "Status", status), h("label", {}, "Type", type)),
    count,
    h("section", { class: "panel" }, holder),
  ];
}
