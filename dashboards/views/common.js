// What the views share.

import { h, title } from "../lib/dom.js";

// A view for administrators, opened with a key's token: says so and asks the API nothing.
export function adminOnly(name) {
  return [title(name), h("p", { class: "panel", "data-figure": "admin-only",
    text: `${name}: for administrators. Your key's token sees its own usage, budgets and alerts.` })];
}
