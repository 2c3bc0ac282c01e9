// The metering dashboard: a static page that reads only the public JSON API.
// Money arrives as exact decimal strings and is formatted with BigInt arithmetic, never floats;
// floats are used only to place bars on a chart.

const TOKEN_KEY = "metering.token";
const PALETTE = ["#0b5cad", "#d95f02", "#1b9e77", "#7570b3", "#c2185b", "#5d8a00", "#8d6e00", "#616161"];
const ZONES = ["UTC", "America/New_York", "America/Los_Angeles", "Europe/Berlin", "Asia/Kolkata", "Asia/Tokyo",
  "Australia/Sydney"];
const PICO = 10n ** 12n;

const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null };
const main = document.getElementById("main");

// --- small helpers ---------------------------------------------------------------------------------

function h(tag, props = {}, ...children) {
  const el = document.createElementNS(
    tag === "svg" || props.svg ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "svg" || v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = v;
    else if (k === "style") el.style.cssText = v; // CSSOM, which the page's CSP allows (inline style attributes it does not)
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function s(tag, props = {}, ...children) { return h(tag, { ...props, svg: true }, ...children); }

export function toPico(text) {
  let str = String(text ?? "0");
  const neg = str.startsWith("-");
  if (neg) str = str.slice(1);
  const [whole, frac = ""] = str.split(".");
  const value = BigInt(whole || "0") * PICO + BigInt((frac + "000000000000").slice(0, 12));
  return neg ? -value : value;
}

// Exact: round half up to `places` decimals; amounts under a dollar get 4 places.
export function usd(value, places) {
  if (value === null) return "unpriced";  // the API's null: unknown, not free
  let pico = typeof value === "bigint" ? value : toPico(value);
  const neg = pico < 0n;
  if (neg) pico = -pico;
  const p = places ?? (pico < PICO ? 4 : 2);
  const unit = 10n ** BigInt(12 - p);
  const digits = ((pico + unit / 2n) / unit).toString().padStart(p + 1, "0");
  const whole = digits.slice(0, digits.length - p).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${neg ? "-" : ""}$${whole}${p ? "." + digits.slice(digits.length - p) : ""}`;
}

const int = (n) => Number(n).toLocaleString("en-US");
const pct = (num, den) => (den > 0 ? `${((100 * num) / den).toFixed(1)}%` : "—");
const sumPico = (items, field = "cost") => items.reduce((acc, x) => acc + toPico(x[field]), 0n);

function isoDate(d) { return d.toISOString().slice(0, 10); }
function addDays(date, n) { const d = new Date(date); d.setUTCDate(d.getUTCDate() + n); return d; }
function todayUTC() { const n = new Date(); return new Date(Date.UTC(n.getUTCFullYear(), n.getUTCMonth(), n.getUTCDate())); }

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401) { signOut("Your token was not accepted. Sign in again."); throw new ApiError(401, "unauthorized"); }
  if (!response.ok) throw new ApiError(response.status, body?.error?.message || `HTTP ${response.status}`);
  return body;
}

function card(label, value, note, id) {
  return h("div", { class: "card", "data-figure": id },
    h("div", { class: "label", text: label }), h("div", { class: "value", text: value }),
    note ? h("div", { class: "note", text: note }) : null);
}

function table(headers, rows, caption) {
  return h("div", { class: "scroll" }, h("table", {},
    caption ? h("caption", { class: "muted", text: caption }) : null,
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.num ? "num" : null }, x.label ?? x)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) =>
      h(i === 0 ? "th" : "td", { scope: i === 0 ? "row" : null, class: headers[i].num ? "num" : null }, cell)))))));
}

function legend(names) {
  return h("div", { class: "legend" }, names.map((name, i) =>
    h("span", {}, h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }), name ?? "(none)")));
}

// Stacked bars: labels (x), series [{name, values: [BigInt pico]}].
function stackedBars(labels, series, title) {
  const W = 820, H = 280, L = 70, B = 40, T = 10;
  const totals = labels.map((_, i) => series.reduce((acc, sr) => acc + sr.values[i], 0n));
  const max = totals.reduce((a, b) => (b > a ? b : a), 0n);
  const maxUsd = Number(max) / 1e12 || 1;
  const bw = (W - L - 10) / Math.max(labels.length, 1);
  const y = (v) => T + (H - T - B) * (1 - v / maxUsd);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  svg.append(s("title", { text: title }));
  for (let k = 0; k <= 4; k++) {
    const v = (maxUsd * k) / 4;
    svg.append(s("line", { x1: L, x2: W - 10, y1: y(v), y2: y(v), stroke: "#d5dbe1" }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#4a5561",
      text: usd(BigInt(Math.round(v * 1e6)) * 1000000n, 2) }));
  }
  labels.forEach((label, i) => {
    let base = 0;
    series.forEach((sr, j) => {
      const v = Number(sr.values[i]) / 1e12;
      if (v <= 0) return;
      const rect = s("rect", { x: L + i * bw + 1, y: y(base + v), width: Math.max(bw - 2, 1),
        height: Math.max(y(base) - y(base + v), 0.5), fill: PALETTE[j % PALETTE.length] });
      rect.append(s("title", { text: `${label} · ${sr.name ?? "(none)"}: ${usd(sr.values[i])}` }));
      svg.append(rect);
      base += v;
    });
    const every = Math.ceil(labels.length / 10);
    if (i % every === 0) {
      svg.append(s("text", { x: L + i * bw + bw / 2, y: H - B + 16, "text-anchor": "middle", "font-size": 11,
        fill: "#4a5561", text: label.slice(5) }));
    }
  });
  return svg;
}

// Group usage buckets into chart series (top groups, the rest as "other").
function seriesOf(usage, field, limit = 7) {
  const totals = new Map();
  for (const b of usage.buckets) for (const r of b.results) {
    const key = r[field] ?? "(none)";
    totals.set(key, (totals.get(key) ?? 0n) + toPico(r.cost));
  }
  const ranked = [...totals.entries()].sort((a, b) => (b[1] > a[1] ? 1 : b[1] < a[1] ? -1 : 0)).map((e) => e[0]);
  const top = ranked.slice(0, limit);
  const names = ranked.length > limit ? [...top, "other"] : top;
  const series = names.map((name) => ({ name, values: usage.buckets.map(() => 0n) }));
  usage.buckets.forEach((b, i) => {
    for (const r of b.results) {
      const key = r[field] ?? "(none)";
      const idx = top.includes(key) ? top.indexOf(key) : names.length - 1;
      series[idx].values[i] += toPico(r.cost);
    }
  });
  return series;
}

function setTitle(text) {
  document.title = `${text} · Metering`;
  return h("h2", { text });
}

// --- views ---------------------------------------------------------------------------------------------

async function overview() {
  // Every figure here is computed by the API (GET /v1/overview); the page formats, it never prices.
  const ov = await api("/v1/overview");
  const t = ov.totals;
  const mix = [
    ["Uncached input", t.input_tokens - t.cached_tokens - t.cache_write_tokens],
    ["Cached input", t.cached_tokens], ["Cache writes", t.cache_write_tokens],
    ["Output (not thinking)", t.output_tokens - t.thinking_tokens], ["Thinking", t.thinking_tokens],
  ];
  const mixTotal = mix.reduce((a, x) => a + x[1], 0);
  const bar = s("svg", { class: "chart", viewBox: "0 0 820 34", role: "img", "aria-label": "Token mix this month" });
  let x = 0;
  mix.forEach(([name, n], i) => {
    const w = mixTotal ? (820 * n) / mixTotal : 0;
    const rect = s("rect", { x, y: 2, width: w, height: 30, fill: PALETTE[i] });
    rect.append(s("title", { text: `${name}: ${int(n)} tokens` }));
    bar.append(rect);
    x += w;
  });
  const listPico = toPico(t.list_cost);
  return [
    setTitle(state.me.role === "key" ? `Overview · ${state.me.api_key_id}` : "Overview"),
    h("div", { class: "cards" },
      card("Spend today (UTC)", usd(ov.today), null, "today"),
      card("Month to date", usd(ov.month_to_date), `${int(t.requests)} requests`, "mtd"),
      card("Projected month end", usd(ov.projected_month_end), ov.projection_rule, "projected"),
      card("At list price", usd(t.list_cost), null, "list"),
      card("Savings vs list", usd(t.savings), pct(Number(toPico(t.savings)), Number(listPico)) + " of list", "savings"),
      card("Saved by the prompt cache", usd(ov.by_class.cache_savings),
        "cached tokens at the uncached input price minus their cost", "cache")),
    h("section", { class: "panel", "aria-labelledby": "mix-h" },
      h("h3", { id: "mix-h", text: "Token mix this month" }), bar, legend(mix.map(([n]) => n)),
      table([{ label: "Class" }, { label: "Tokens", num: true }, { label: "Share", num: true }, { label: "Cost", num: true }],
        ov.by_class.classes.map((c) => [c.token_class.replace("_", " "), int(c.quantity), pct(c.quantity, mixTotal + t.web_search_requests), usd(c.cost)]))),
  ];
}

async function daily() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const today = todayUTC();
  const start = params.get("start") || isoDate(addDays(today, -29));
  const end = params.get("end") || isoDate(addDays(today, 1));
  const tz = params.get("tz") || "UTC";
  const group = params.get("group") || "model";
  const groups = state.me.role === "admin" ? ["model", "api_key_id", "account_id"] : ["model"];
  const usage = await api(`/v1/usage?${new URLSearchParams({ start, end, tz, bucket: "day", group_by: group })}`);
  const labels = usage.buckets.map((b) => b.start.slice(0, 10));
  const series = seriesOf(usage, group);
  const form = h("form", { class: "controls", onsubmit: (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    location.hash = `#/daily?${new URLSearchParams(f)}`;
  } },
  h("label", {}, "From", h("input", { type: "date", name: "start", value: start, required: true })),
  h("label", {}, "To (exclusive)", h("input", { type: "date", name: "end", value: end, required: true })),
  h("label", {}, "Time zone", h("select", { name: "tz" }, ZONES.map((z) => h("option", { value: z, selected: z === tz }, z)))),
  h("label", {}, "Stack by", h("select", { name: "group" }, groups.map((g) =>
    h("option", { value: g, selected: g === group }, { model: "Model", api_key_id: "Key", account_id: "Account" }[g])))),
  h("button", { type: "submit", text: "Show" }));
  return [
    setTitle("Daily spend"), form,
    h("section", { class: "panel" }, stackedBars(labels, series, `Daily spend by ${group}, ${tz}`),
      legend(series.map((x) => x.name))),
    h("section", { class: "panel" }, h("h3", { text: "By day" }),
      table([{ label: "Date" }, { label: "Requests", num: true }, { label: "Cost", num: true }, { label: "List cost", num: true }],
        usage.buckets.map((b, i) => [labels[i], int(b.results.reduce((a, r) => a + r.requests, 0)),
          usd(sumPico(b.results)), usd(sumPico(b.results, "list_cost"))])),
      h("p", { class: "muted", "data-figure": "daily-total" }, `Total: ${usd(usage.totals.cost)} (list ${usd(usage.totals.list_cost)})`)),
  ];
}

const KEY_COLUMNS = [
  { id: "api_key_id", label: "Key" }, { id: "account", label: "Account" },
  { id: "cost", label: "Spend", num: true }, { id: "requests", label: "Requests", num: true },
  { id: "tokens", label: "Tokens", num: true }, { id: "hit", label: "Cache hit rate", num: true },
  { id: "thinking", label: "Thinking share", num: true },
];

async function keys() {
  const today = todayUTC();
  const monthStart = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), 1));
  const [usage, registered] = await Promise.all([
    api(`/v1/usage?start=${isoDate(monthStart)}&end=${isoDate(addDays(today, 1))}&bucket=month&group_by=api_key_id`),
    state.me.role === "admin" ? api("/v1/keys") : Promise.resolve({ data: [{ api_key_id: state.me.api_key_id, account_id: state.me.account_id }] }),
  ]);
  const accounts = new Map(registered.data.map((k) => [k.api_key_id, k.account_id]));
  const rows = usage.buckets.flatMap((b) => b.results).map((r) => ({
    api_key_id: r.api_key_id, account: accounts.get(r.api_key_id) ?? "unassigned", cost: toPico(r.cost),
    requests: r.requests, tokens: r.input_tokens + r.output_tokens,
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
    const head = h("tr", {}, KEY_COLUMNS.map((c) => h("th", { scope: "col", class: c.num ? "num" : null,
      "aria-sort": sort.by === c.id ? (sort.desc ? "descending" : "ascending") : "none" },
    h("button", { type: "button", "data-sort": c.id, onclick: () => {
      sort.desc = sort.by === c.id ? !sort.desc : c.num;
      sort.by = c.id;
      render();
    } }, c.label + (sort.by === c.id ? (sort.desc ? " ▼" : " ▲") : "")))));
    const body = sorted.map((r) => h("tr", { "data-key": r.api_key_id },
      h("th", { scope: "row" }, h("a", { href: `#/keys/${encodeURIComponent(r.api_key_id)}`, text: r.api_key_id })),
      h("td", { text: r.account }), h("td", { class: "num", text: usd(r.cost) }),
      h("td", { class: "num", text: int(r.requests) }), h("td", { class: "num", text: int(r.tokens) }),
      h("td", { class: "num", text: pct(r.hit, 1) }), h("td", { class: "num", text: pct(r.thinking, 1) })));
    holder.replaceChildren(h("div", { class: "scroll" }, h("table", { id: "keys-table" },
      h("caption", { class: "muted", text: "This month (UTC). Select a column heading to sort." }),
      h("thead", {}, head), h("tbody", {}, body))));
  };
  render();
  return [setTitle("Keys"), h("section", { class: "panel" }, holder)];
}

async function keyPage(id) {
  if (state.me.role === "key" && id !== state.me.api_key_id) {
    return [setTitle("Key"), h("p", { class: "error", role: "alert", "data-figure": "denied",
      text: `You can see only your own key (${state.me.api_key_id}).` })];
  }
  const today = todayUTC();
  const q = new URLSearchParams({ start: isoDate(addDays(today, -29)), end: isoDate(addDays(today, 1)), bucket: "day", group_by: "model" });
  if (state.me.role === "admin") q.set("api_key_id", id);
  const [usage, status] = await Promise.all([
    api(`/v1/usage?${q}`), api(`/v1/budgets/status?api_key_id=${encodeURIComponent(id)}`)]);
  const series = seriesOf(usage, "model");
  return [
    setTitle(`Key ${id}`),
    h("div", { class: "cards" },
      card("Spend, last 30 days", usd(usage.totals.cost), null, "key-cost"),
      card("Requests", int(usage.totals.requests), null, "key-requests"),
      card("Cache hit rate", pct(usage.totals.cached_tokens, usage.totals.input_tokens)),
      card("Thinking share", pct(usage.totals.thinking_tokens, usage.totals.output_tokens))),
    h("section", { class: "panel" }, stackedBars(usage.buckets.map((b) => b.start.slice(0, 10)), series,
      `Daily spend of ${id} by model`), legend(series.map((x) => x.name))),
    h("section", { class: "panel" }, h("h3", { text: "Budgets covering this key" }),
      status.budgets.length ? status.budgets.map((st) => budgetBar(st)) : h("p", { class: "muted", text: "No budget covers this key." })),
  ];
}

function budgetBar(st) {
  const scopeText = Object.entries(st.scope).map(([k, v]) => (k === "all" ? "everything" : k === "tag" ? `tag ${JSON.stringify(v)}` : `${k} ${v}`)).join(" ");
  if (st.spent === undefined) {
    // A wider budget that covers this key: the API gives its terms, whether it is exceeded, and this
    // key's own spend, never the other keys' figures.
    return h("div", { class: "card", "data-budget": st.budget_id },
      h("div", { class: "label", text: `${scopeText} · ${st.period} (${st.tz}) · ${st.basis}` }),
      h("div", { class: "value", text: st.exceeded ? "Exceeded" : "Within budget" }),
      h("div", { class: "note", text: `your spend this period ${usd(st.key_spent)} · shared budget: only its state is shown · period ${st.period_start.slice(0, 10)} to ${st.period_end.slice(0, 10)}` }));
  }
  const amount = toPico(st.amount);
  const ratio = (v) => Number((toPico(v) * 10000n) / (amount || 1n)) / 10000;
  const thresholds = (st.thresholds ?? []).map(Number);
  const scale = Math.min(Math.max(1, ratio(st.spent), ratio(st.projected), ...thresholds), 2);
  const at = (r) => `${Math.min(100, (100 * r) / scale)}%`;
  const progress = h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": Math.round(100 * ratio(st.spent)), "aria-label": `Spent ${usd(st.spent)} of ${usd(st.amount)}` },
  h("div", { class: `fill${st.exceeded ? " over" : ""}`, style: `width:${at(ratio(st.spent))}` }),
  thresholds.map((t) => h("div", { class: "mark", style: `left:${at(t)}`, title: `threshold ${t * 100}%` })),
  h("div", { class: "proj", style: `left:${at(ratio(st.projected))}`, title: `projected ${usd(st.projected)}` }));
  return h("div", { class: "card", "data-budget": st.budget_id },
    h("div", { class: "label", text: `${scopeText} · ${st.period} (${st.tz}) · ${st.basis}` }),
    h("div", { class: "value", text: `${usd(st.spent)} of ${usd(st.amount)}` }), progress,
    h("div", { class: "note", text: `${(100 * ratio(st.spent)).toFixed(1)}% spent · projected ${usd(st.projected)} · ${st.exceeded ? "EXCEEDED" : `${usd(st.remaining)} left`} · period ${st.period_start.slice(0, 10)} to ${st.period_end.slice(0, 10)}` }));
}

async function budgets() {
  const [list, alerts] = await Promise.all([api("/v1/budgets"), api("/v1/alerts")]);
  if (!list.data.length) {
    return [setTitle("Budgets"), h("p", { class: "panel", "data-figure": "no-budgets", text: "No budgets are set up." })];
  }
  const statuses = await Promise.all(list.data.map((b) => api(`/v1/budgets/${b.id}/status`)));
  return [
    setTitle("Budgets"),
    h("section", { class: "cards" }, statuses.map((st) => budgetBar(st))),
    h("section", { class: "panel" }, h("h3", { text: "Alert history" }),
      alerts.data.length ? table(
        [{ label: "Created" }, { label: "Type" }, { label: "Budget or key" }, { label: "Threshold" }, { label: "Status" }, { label: "Attempts", num: true }],
        alerts.data.slice().reverse().map((a) => [a.created_at.slice(0, 16).replace("T", " "), a.type,
          a.budget_id ?? a.api_key_id ?? "", a.payload.data.threshold ?? "", a.status, String(a.attempts)]))
        : h("p", { class: "muted", text: "No alerts yet." })),
  ];
}

async function rates() {
  if (state.me.role !== "admin") {
    return [setTitle("Rate card"), h("p", { class: "panel", text: "The rate card is visible to administrators." })];
  }
  const card_ = await api("/v1/rates");
  const fields = ["input", "cached_input", "output", "cache_write", "thinking", "web_search"];
  return [setTitle("Rate card"), h("p", { class: "muted", text: "USD per 1M tokens (web search: per 1,000 requests), current / list. Defaults: cache writes at the input price, thinking at the output price." }),
    ...card_.models.map((m) => h("section", { class: "panel", "data-model": m.model }, h("h3", { text: m.model }),
      table([{ label: "Effective from" }, ...fields.map((f) => ({ label: f.replace("_", " "), num: true }))],
        m.versions.map((v) => [v.effective_from.replace("T", " ").replace("Z", " UTC"),
          ...fields.map((f) => (v[f] ? `${v[f].current} / ${v[f].list}` : "default"))]))))];
}

// --- shell -------------------------------------------------------------------------------------------------

const ROUTES = { overview, daily, keys, budgets, rates };

async function render() {
  const hash = location.hash || "#/overview";
  const [path] = hash.slice(2).split("?");
  const [name, arg] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
  try {
    const view = name === "keys" && arg ? () => keyPage(decodeURIComponent(arg)) : ROUTES[name] || overview;
    main.replaceChildren(...(await view()));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    const text = err instanceof ApiError && err.status === 403 ? "This view is not available to your token." : `Could not load this view: ${err.message}`;
    main.replaceChildren(h("p", { class: "error", role: "alert", text }));
  }
  main.focus();
}

async function warnUnpriced() {
  const box = document.getElementById("warning");
  box.hidden = true;
  if (state.me.role !== "admin") return;
  const unpriced = await api("/v1/unpriced");
  if (unpriced.total_requests > 0) {
    box.textContent = `${int(unpriced.total_requests)} requests of models the rate card does not price (${unpriced.data.map((m) => m.model).join(", ")}) are stored unpriced; add a rate version and re-rate.`;
    box.hidden = false;
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("warning").hidden = true;
  showSignIn(message);
}

function showSignIn(message) {
  document.title = "Sign in · Metering";
  const form = h("form", { class: "panel signin", onsubmit: async (e) => {
    e.preventDefault();
    state.token = new FormData(e.target).get("token").trim();
    await start(true);
  } },
  h("h2", { text: "Sign in" }),
  h("label", { for: "token", text: "Token" }),
  h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "token-help" }),
  h("p", { id: "token-help", class: "muted", text: "The admin token sees everything; an API key's secret sees that key. The token stays in this browser tab." }),
  message ? h("p", { class: "error", role: "alert", text: message }) : null,
  h("button", { type: "submit", text: "Sign in" }));
  main.replaceChildren(form);
  form.querySelector("input").focus();
}

async function start(fresh) {
  if (!state.token) return showSignIn();
  let me;
  try {
    me = await api("/v1/me");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) signOut(`Could not sign in: ${err.message}`);
    return;
  }
  if (me.role === "ingest") return signOut("The ingest token can only send usage; sign in with the admin token or a key.");
  state.me = me;
  sessionStorage.setItem(TOKEN_KEY, state.token);
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = me.role === "admin" ? "admin" : `key ${me.api_key_id}`;
  if (fresh && location.hash !== "#/overview") location.hash = "#/overview";
  else await render();
  warnUnpriced().catch(() => {});
}

document.getElementById("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", () => { if (state.me) render(); });
start(false);
