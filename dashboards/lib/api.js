// The only way the page talks to the service: the JSON API with the token in the Authorization header.
// The token lives in this tab's sessionStorage; it is never put in a URL, a link or a download.

import { h } from "./dom.js";

const TOKEN_KEY = "metering.token";

export const session = {
  token: sessionStorage.getItem(TOKEN_KEY),
  me: null,
  get admin() { return this.me?.role === "admin"; },
  keep() { sessionStorage.setItem(TOKEN_KEY, this.token); },
  forget() { sessionStorage.removeItem(TOKEN_KEY); this.token = null; this.me = null; },
};

let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...init.headers, Authorization: `Bearer ${session.token}` } });
  if (response.ok) return response;
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  if (response.status === 401) {
    unauthorized("Your token was not accepted. Sign in again.");
    throw new ApiError(401, "unauthorized");
  }
  throw new ApiError(response.status, body?.error?.message || `HTTP ${response.status}`);
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((item) => q.append(k, item));
    else if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  return q.toString();
}

export async function api(path) {
  return (await call(path)).json();
}

export async function post(path, body, contentType = "application/json") {
  return call(path, { method: "POST", body, headers: { "Content-Type": contentType } });
}

// The file name the service gave the document (Content-Disposition), else `fallback`.
export function fileName(disposition, fallback) {
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(disposition ?? "");
  if (star) return decodeURIComponent(star[1]);
  const plain = /filename\s*=\s*"?([^";]+)"?/i.exec(disposition ?? "");
  return plain ? plain[1] : fallback;
}

// Fetch a document with the Authorization header and save it from a Blob under the service's file
// name. The link the browser follows is a blob: URL made here; the token is never in it.
export async function download(pathOrResponse, fallback) {
  const response = typeof pathOrResponse === "string" ? await call(pathOrResponse) : pathOrResponse;
  const blob = await response.blob();
  const name = fileName(response.headers.get("content-disposition"), fallback);
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return { name, size: blob.size };
}
