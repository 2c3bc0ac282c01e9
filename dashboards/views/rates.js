// The rate card: models, versions, current and list unit prices (prices, shown exactly as the card has them).

import { api, session } from "../lib/api.js";
import { h, table, title } from "../lib/dom.js";
import { adminOnly } from "./common.js";

const FIELDS = ["input", "cached_input", "output", "cache_write", "thinking", "web_search"];

export async function rates() {
  if (!session.admin) return adminOnly("Rate card");
  const card = await api("/v1/rates");
  return [title("Rate card"), h("p", { class: "muted", text: "USD per 1M tokens (web search: per 1,000 requests), current / list, "
    + "exactly as on the card. Defaults: cache writes at the input price, thinking at the output price." }),
  ...card.models.map((m) => h("section", { class: "panel", "data-model": m.model }, h("h3", { text: m.model }),
    table(["Effective from", ...FIELDS.map((f) => ({ label: f.replace("_", " "), num: true }))],
      m.versions.map((v) => [v.effective_from.replace("T", " ").replace("Z", " UTC"),
        ...FIELDS.map((f) => (v[f] ? `${v[f].current} / ${v[f].list}` : "default"))]))))];
}
