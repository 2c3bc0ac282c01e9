// Calendar dates (YYYY-MM-DD strings) and the period picker shared by the views. A period is a range of
// local days [start, end) in an IANA time zone, which the API turns into instants; the page only names
// the days.

import { h } from "./dom.js";

const BROWSER_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone;
export const ZONES = [...new Set(["UTC", "America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin",
  "Asia/Kolkata", "Asia/Tokyo", "Australia/Sydney", BROWSER_ZONE].filter(Boolean))];
export const PRESETS = {
  "this-month": "This month", "last-month": "Last month", "last-7": "Last 7 days", "last-30": "Last 30 days",
  custom: "Custom range",
};
const MIN_DAY = "2000-01-01";
const MAX_DAY = "2099-12-31";

const parse = (iso) => new Date(`${iso}T00:00:00Z`);
const format = (date) => date.toISOString().slice(0, 10);

export function addDays(iso, n) {
  const d = parse(iso);
  d.setUTCDate(d.getUTCDate() + n);
  return format(d);
}

export function monthStart(iso, monthsLater = 0) {
  const d = parse(iso);
  return format(new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + monthsLater, 1)));
}

export function isDay(text) {
  return /^\d{4}-\d{2}-\d{2}$/.test(text ?? "") && !Number.isNaN(parse(text).getTime()) && format(parse(text)) === text;
}

export function knownZone(tz) {
  try {
    Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

// Today's date in a time zone.
export function todayIn(tz) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", { timeZone: tz, year: "numeric", month: "2-digit",
    day: "2-digit" }).formatToParts(new Date()).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}`;
}

// The days a preset stands for, today being `today`: [start, end).
export function presetRange(preset, today) {
  switch (preset) {
    case "this-month": return [monthStart(today), addDays(today, 1)];
    case "last-month": return [monthStart(today, -1), monthStart(today)];
    case "last-7": return [addDays(today, -6), addDays(today, 1)];
    default: return [addDays(today, -29), addDays(today, 1)]; // last-30
  }
}

// The period a view's hash asks for (`period`, `start`, `end` exclusive, `tz`), with `fallback` as the
// preset when none is named. Throws an Error naming the parameter when the hash is not usable.
export function resolvePeriod(params, fallback) {
  const tz = params.get("tz") || "UTC";
  if (!knownZone(tz)) throw new Error(`tz: unknown time zone ${JSON.stringify(tz)}`);
  const period = params.get("period") || (params.get("start") ? "custom" : fallback);
  if (!(period in PRESETS)) throw new Error(`period: must be one of ${Object.keys(PRESETS).join(", ")}`);
  if (period !== "custom") {
    const [start, end] = presetRange(period, todayIn(tz));
    return { period, start, end, tz };
  }
  const start = params.get("start"), end = params.get("end");
  if (!isDay(start) || !isDay(end)) throw new Error("start, end: a custom range needs two dates (YYYY-MM-DD)");
  if (end <= start) throw new Error(`end: the range ends (${end}) before it starts (${start})`);
  return { period, start, end, tz };
}

export function describePeriod({ start, end, tz }) {
  const through = addDays(end, -1);
  return `${start === through ? start : `${start} to ${through}`} (${tz}, local days)`;
}

function zoneSelect(name, tz) {
  const zones = ZONES.includes(tz) ? ZONES : [...ZONES, tz];
  return h("select", { name }, zones.map((z) => h("option", { value: z, selected: z === tz }, z)));
}

// From / Through (inclusive, as people read a range) / time zone, with the presets; `extra`: more labelled
// controls. On submit, `onSubmit` gets the hash parameters.
export function periodForm(current, onSubmit, extra = []) {
  const select = h("select", { name: "period" },
    Object.entries(PRESETS).map(([value, label]) => h("option", { value, selected: value === current.period }, label)));
  const from = h("input", { type: "date", name: "start", value: current.start, min: MIN_DAY, max: MAX_DAY, required: true });
  const through = h("input", { type: "date", name: "through", value: addDays(current.end, -1), min: MIN_DAY, max: MAX_DAY,
    required: true });
  const tzSelect = zoneSelect("tz", current.tz);
  const fill = () => {
    if (select.value === "custom") return;
    const [start, end] = presetRange(select.value, todayIn(tzSelect.value));
    from.value = start;
    through.value = addDays(end, -1);
  };
  select.addEventListener("change", fill);
  tzSelect.addEventListener("change", fill);
  for (const input of [from, through]) input.addEventListener("input", () => { select.value = "custom"; });
  const form = h("form", { class: "controls", "aria-label": "Choose the period", onsubmit: (e) => {
    e.preventDefault();
    through.setCustomValidity(through.value && from.value && through.value < from.value
      ? "The last day must not be before the first day." : "");
    if (!form.reportValidity()) return;
    const data = new FormData(form);
    const params = { period: select.value, tz: tzSelect.value };
    if (select.value === "custom") Object.assign(params, { start: from.value, end: addDays(through.value, 1) });
    for (const [k, v] of data.entries()) if (!["period", "tz", "start", "through"].includes(k)) params[k] = v;
    onSubmit(params);
  } },
  h("label", {}, "Period", select),
  h("label", {}, "From", from),
  h("label", {}, "Through", through),
  h("label", {}, "Time zone", tzSelect),
  extra,
  h("button", { type: "submit", text: "Show" }));
  return form;
}

export { zoneSelect };
