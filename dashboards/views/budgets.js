// Budgets: each budget's period, spend, thresholds and projection. A key sees a wider budget that
// covers it only as exceeded or not, with its own spend (the API gives nothing more).

import { api } from "../lib/api.js";
import { h, money, title } from "../lib/dom.js";
import { toPico } from "../lib/money.js";

export function scopeText(scope) {
  return Object.entries(scope).map(([k, v]) => (k === "all" ? "everything"
    : k === "tag" ? `tag ${Object.entries(v).map(([n, x]) => `${n}=${x}`).join(", ")}`
      : `${k === "api_key_id" ? "key" : "account"} ${v}`)).join(" ");
}

const percent = (fraction) => `${(Number(fraction) * 100).toFixed(1)}%`;

export function budgetCard(st) {
  const label = h("div", { class: "label", text: `${scopeText(st.scope)} · ${st.period} (${st.tz}) · ${st.basis}` });
  const period = `period ${st.period_start.slice(0, 10)} to ${st.period_end.slice(0, 10)}`;
  if (st.spent === undefined) {
    // A wider budget that covers this key: its terms, whether it is exceeded, and this key's own spend.
    return h("div", { class: "card", "data-budget": st.budget_id }, label,
      h("div", { class: "value", text: st.exceeded ? "Exceeded" : "Within budget" }),
      h("div", { class: "note" }, "your spend this period ", money(st.key_spent),
        ` · shared budget: only its state is shown · ${period}`));
  }
  // Placement only: where the fill, the threshold marks and the projection sit on the bar.
  const amount = toPico(st.amount) || 1n;
  const ratio = (v) => Number((toPico(v) * 10000n) / amount) / 10000;
  const thresholds = (st.thresholds ?? []).map(Number);
  const scale = Math.min(Math.max(1, ratio(st.spent), ratio(st.projected), ...thresholds), 2);
  const at = (r) => `${Math.min(100, (100 * r) / scale)}%`;
  const progress = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": Math.round(100 * Number(st.fraction)), "aria-label": `Spent ${percent(st.fraction)} of the budget` },
  h("div", { class: `fill${st.exceeded ? " over" : ""}`, style: `width:${at(ratio(st.spent))}` }),
  thresholds.map((t) => h("div", { class: "mark", style: `left:${at(t)}`, title: `threshold ${t * 100}%` })),
  h("div", { class: "proj", style: `left:${at(ratio(st.projected))}`, title: "projected at the period's end" }));
  return h("div", { class: "card", "data-budget": st.budget_id }, label,
    h("div", { class: "value" }, money(st.spent), " of ", money(st.amount)), progress,
    h("div", { class: "note" }, `${percent(st.fraction)} spent · projected `, money(st.projected), " · ",
      st.held && toPico(st.held) > 0n ? [money(st.held), " held by open reservations · "] : null,
      st.exceeded ? "EXCEEDED" : [money(st.remaining), " left"], ` · ${period}`));
}

export async function budgets() {
  const list = await api("/v1/budgets");
  const more = h("p", {}, "Alerts these budgets raised, and their delivery: ", h("a", { href: "#/alerts", text: "Alerts" }), ".");
  if (!list.data.length) {
    return [title("Budgets"), h("p", { class: "panel", "data-figure": "no-budgets", text: "No budgets are set up." }), more];
  }
  const statuses = await Promise.all(list.data.map((b) => api(`/v1/budgets/${encodeURIComponent(b.id)}/status`)));
  return [title("Budgets"), h("section", { class: "cards wide" }, statuses.map((st) => budgetCard(st))), more];
}
