// The metering dashboard: a static page that reads only the public JSON API. This file is the shell:
// sign-in, navigation and the views' routes; each view is a module in views/.
// Money arrives as exact decimal strings and is formatted by lib/money.js (BigInt, never floats).

import { ApiError, api, onUnauthorized, query, session } from "./lib/api.js";
import { h, int } from "./lib/dom.js";
import { MONEY_RULE } from "./lib/money.js";
import { alerts } from "./views/alerts.js";
import { budgets } from "./views/budgets.js";
import { daily } from "./views/daily.js";
import { documents } from "./views/documents.js";
import { keyPage, keys } from "./views/keys.js";
import { overview } from "./views/overview.js";
import { rates } from "./views/rates.js";
import { reconcile } from "./views/reconcile.js";

const ROUTES = { overview, daily, keys, budgets, alerts, documents, reconcile, rates };
const main = document.getElementById("main");
const nav = document.getElementById("nav");

function go(view, params) {
  const q = query(params);
  location.hash = `#/${view}${q ? `?${q}` : ""}`;
}

async function render() {
  const hash = location.hash || "#/overview";
  const [path, search] = hash.slice(2).split("?");
  const [name, arg] = path.split("/");
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
  try {
    const view = name === "keys" && arg ? keyPage : ROUTES[name] || overview;
    const context = { params: new URLSearchParams(search || ""), go, arg: arg && decodeURIComponent(arg) };
    main.replaceChildren(...(await view(context)), h("p", { class: "muted rule", text: MONEY_RULE }));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    const text = err instanceof ApiError && err.status === 403 ? "This view is not available to your token."
      : `Could not load this view: ${err.message}`;
    main.replaceChildren(h("p", { class: "error", role: "alert", text }));
  }
  main.focus();
}

async function warnUnpriced() {
  const box = document.getElementById("warning");
  box.hidden = true;
  if (!session.admin) return;
  const unpriced = await api("/v1/unpriced");
  if (unpriced.total_requests > 0) {
    box.textContent = `${int(unpriced.total_requests)} requests of models the rate card does not price `
      + `(${unpriced.data.map((m) => m.model).join(", ")}) are stored unpriced; add a rate version and re-rate.`;
    box.hidden = false;
  }
}

function signOut(message) {
  session.forget();
  nav.hidden = true;
  document.getElementById("warning").hidden = true;
  showSignIn(message);
}

function showSignIn(message) {
  document.title = "Sign in · Metering";
  const form = h("form", { class: "panel signin", onsubmit: async (e) => {
    e.preventDefault();
    session.token = new FormData(e.target).get("token").trim();
    await start(true);
  } },
  h("h2", { text: "Sign in" }),
  h("label", { for: "token", text: "Token" }),
  h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "token-help" }),
  h("p", { id: "token-help", class: "muted", text: "The admin token sees everything; an API key's secret sees that key. "
    + "The token stays in this browser tab." }),
  message ? h("p", { class: "error", role: "alert", text: message }) : null,
  h("button", { type: "submit", text: "Sign in" }));
  main.replaceChildren(form);
  form.querySelector("input").focus();
}

async function start(fresh) {
  if (!session.token) return showSignIn();
  let me;
  try {
    me = await api("/v1/me");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) signOut(`Could not sign in: ${err.message}`);
    return;
  }
  if (me.role === "ingest") return signOut("The ingest token can only send usage; sign in with the admin token or a key.");
  session.me = me;
  session.keep();
  nav.hidden = false;
  for (const a of nav.querySelectorAll("[data-admin]")) a.hidden = !session.admin;
  document.getElementById("who").textContent = session.admin ? "admin" : `key ${me.api_key_id}`;
  if (fresh && location.hash !== "#/overview") location.hash = "#/overview";
  else await render();
  warnUnpriced().catch(() => {});
}

onUnauthorized(signOut);
// The skip link moves focus to the view without touching the address (the views' routes live there).
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => { if (session.me) render(); });
start(false);
