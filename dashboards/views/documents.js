// Documents (admin): the daily report, an account's monthly statement and the FOCUS export, fetched with
// the Authorization header and saved from a Blob under the file name the service gives them.

import { ApiError, api, download, query, session } from "../lib/api.js";
import { addDays, presetRange, todayIn, zoneSelect } from "../lib/dates.js";
import { h, title } from "../lib/dom.js";
import { adminOnly } from "./common.js";

const GROUPINGS = {
  "account_id,api_key_id,model": "Account, key and model", "account_id,model": "Account and model",
  "api_key_id,model": "Key and model", model: "Model", "model,endpoint": "Model and endpoint",
};

function kb(bytes) {
  return bytes < 1024 ? `${bytes} bytes` : `${(bytes / 1024).toFixed(1)} kB`;
}

function dateInput(name, value) {
  return h("input", { type: "date", name, value, min: "2000-01-01", max: "2099-12-31", required: true });
}

// A form whose submit buttons each name a format; `path(data, format)` is the document's API path.
function documentForm(id, heading, text, fields, formats, path) {
  const note = h("p", { class: "muted", role: "status", "data-figure": `${id}-status` });
  const form = h("form", { class: "controls", "aria-labelledby": `${id}-h`, "data-document": id, onsubmit: async (e) => {
    e.preventDefault();
    const format = e.submitter?.value ?? formats[0][0];
    const data = new FormData(form);
    const through = form.querySelector("[name=through]");
    through?.setCustomValidity(through.value && through.value < data.get("start")
      ? "The last day must not be before the first day." : "");
    if (!form.reportValidity()) return;
    note.classList.remove("error");
    note.textContent = `Preparing the ${format.toUpperCase()} file…`;
    try {
      const saved = await download(path(data, format), `${id}.${format}`);
      note.textContent = `Saved ${saved.name} (${kb(saved.size)}).`;
    } catch (err) {
      note.classList.add("error");
      note.textContent = err instanceof ApiError ? `The service refused: ${err.message}` : `Could not download: ${err.message}`;
    }
  } },
  fields,
  h("div", { class: "buttons" }, formats.map(([value, label]) =>
    h("button", { type: "submit", value, "data-download": `${id}-${value}`, text: `Download ${label}` }))));
  return h("section", { class: "panel", "aria-labelledby": `${id}-h` },
    h("h3", { id: `${id}-h`, text: heading }), h("p", { class: "muted", text }), form, note);
}

const range = (data) => ({ start: data.get("start"), end: addDays(data.get("through"), 1) });

export async function documents() {
  if (!session.admin) return adminOnly("Documents");
  const registered = await api("/v1/keys");
  const accounts = [...new Set([...registered.data.map((k) => k.account_id), "unassigned"])].sort();
  const today = todayIn("UTC");
  const [start, end] = presetRange("last-30", today);
  const through = addDays(end, -1);
  const [monthFirst] = presetRange("last-month", today);
  return [
    title("Documents"),
    h("p", { class: "muted", text: "Each file is fetched with your token in the request's header and saved by your browser; "
      + "its name is the one the service gives it. Amounts in the files are exact (XLSX: as Excel can hold them)." }),
    documentForm("daily", "Daily report", "One row per local day and group, then a totals row.", [
      h("label", {}, "From", dateInput("start", start)),
      h("label", {}, "Through", dateInput("through", through)),
      h("label", {}, "Time zone", zoneSelect("tz", "UTC")),
      h("label", {}, "Rows per", h("select", { name: "group_by" }, Object.entries(GROUPINGS).map(([v, label]) =>
        h("option", { value: v }, label))))],
    [["csv", "CSV"], ["xlsx", "XLSX"], ["parquet", "Parquet"]],
    (data, format) => `/v1/reports/daily?${query({ ...range(data), tz: data.get("tz"), group_by: data.get("group_by"), format })}`),
    documentForm("statement", "Monthly statement", "An account's month: one line per key, model, token class and unit price, "
      + "rounded to the cent by the rule it prints.", [
      h("label", {}, "Account", h("select", { name: "account" }, accounts.map((a) => h("option", { value: a }, a)))),
      h("label", {}, "Month", h("input", { type: "month", name: "month", value: monthFirst.slice(0, 7), min: "2000-01",
        max: "2099-12", required: true })),
      h("label", {}, "Time zone", zoneSelect("tz", "UTC"))],
    [["csv", "CSV"], ["xlsx", "XLSX"]],
    (data, format) => `/v1/reports/statement?${query({ account: data.get("account"), month: data.get("month"),
      tz: data.get("tz"), format })}`),
    documentForm("focus", "FOCUS export", "The FinOps FOCUS 1.2 cost and usage rows, per UTC day.", [
      h("label", {}, "From (UTC)", dateInput("start", start)),
      h("label", {}, "Through (UTC)", dateInput("through", through))],
    [["csv", "CSV"], ["parquet", "Parquet"]],
    (data, format) => `/v1/reports/focus?${query({ ...range(data), format })}`),
  ];
}
