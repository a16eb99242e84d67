// Calls to the API of this origin. Keys live in this tab's sessionStorage only and travel
// as Authorization headers; a 401/403 asks for a key and retries. Errors are the API's
// problem details (RFC 9457), thrown as ApiError.

const READ_KEY = "and.readKey";
const ADMIN_KEY = "and.adminKey";
const COLLECTION = "and.collection";

// The serving routes exist at the root (the API's default collection) and under
// /collections/{name}. The console always names the collection it shows, so it works with any
// number of collections, default or not; the rest (jobs, datasets, train) are the API's own.
const SCOPED = new Set(["models", "items", "embed", "neighbours", "search", "classify"]);
let chosen = sessionStorage.getItem(COLLECTION);
let collectionsReady = Promise.resolve();

export function collection() {
  return chosen;
}

export function setCollection(name) {
  chosen = name || null;
  if (chosen) sessionStorage.setItem(COLLECTION, chosen);
  else sessionStorage.removeItem(COLLECTION);
}

// Scoped requests wait for this (the collection list read at start) before they are sent.
export function whenCollections(promise) {
  collectionsReady = promise.catch(() => undefined);
  return collectionsReady;
}

export function scoped(path) {
  const first = path.replace(/^\//, "").split(/[/?]/)[0];
  return chosen && SCOPED.has(first) ? `/collections/${encodeURIComponent(chosen)}${path}` : path;
}

export class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || `HTTP ${status}`;
    super(problem.detail ? `${title}: ${problem.detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = problem.detail || "";
    this.errors = problem.errors || [];
  }
}

export function storedKey(kind) {
  return sessionStorage.getItem(kind === "admin" ? ADMIN_KEY : READ_KEY);
}

export function hasKeys() {
  return Boolean(storedKey("read") || storedKey("admin"));
}

export function forgetKeys() {
  sessionStorage.removeItem(READ_KEY);
  sessionStorage.removeItem(ADMIN_KEY);
  document.dispatchEvent(new Event("keys-changed"));
}

// A read route takes the read or the admin key; an admin route only the admin key (a key
// typed at the read prompt may be the admin key, so it is tried before asking).
function keyFor(admin) {
  return admin ? storedKey("admin") || storedKey("read") : storedKey("read") || storedKey("admin");
}

let asking = null; // one dialog at a time; concurrent requests wait for the same answer

function askKey(kind, problem) {
  if (asking) return asking;
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("key-input");
  const error = document.getElementById("key-error");
  const reason = document.getElementById("key-reason");
  document.getElementById("key-title").textContent = kind === "admin" ? "Admin key" : "API key";
  reason.textContent = kind === "admin"
    ? "This action needs the API's admin key (ADMIN_API_KEY)."
    : "This API needs a key to read (READ_API_KEY or ADMIN_API_KEY).";
  const shown = problem && problem.status === 403 ? problem.message : "";
  error.textContent = shown;
  error.hidden = !shown;
  input.value = "";
  asking = new Promise((resolve) => {
    const done = (value) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.close();
      asking = null;
      resolve(value);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) {
        error.textContent = "Type a key, or cancel.";
        error.hidden = false;
        return;
      }
      sessionStorage.setItem(kind === "admin" ? ADMIN_KEY : READ_KEY, key);
      document.dispatchEvent(new Event("keys-changed"));
      done(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      done(false);
    };
    const cancel = document.getElementById("key-cancel");
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
  return asking;
}

async function problemOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body === "object") return body;
  } catch (_) { /* not JSON */ }
  return { title: response.statusText || `HTTP ${response.status}` };
}

const MAX_KEY_TRIES = 5;

// fetch() with the right key; a missing or wrong key asks the person and tries again.
async function send(path, init, admin) {
  const first = path.replace(/^\//, "").split(/[/?]/)[0];
  if (SCOPED.has(first)) await collectionsReady;
  path = scoped(path);
  let lastProblem = null;
  for (let tries = 0; tries < MAX_KEY_TRIES; tries++) {
    const headers = new Headers(init.headers || {});
    const key = keyFor(admin);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401 && response.status !== 403) return response;
    const problem = await problemOf(response);
    lastProblem = new ApiError(response.status, problem);
    const wanted = admin ? "admin" : "read";
    if (!(await askKey(wanted, lastProblem))) throw lastProblem;
  }
  throw lastProblem;
}

// JSON in, JSON out. `body` may be a plain object (sent as JSON) or FormData.
export async function api(path, { method = "GET", body, admin } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await send(path, init, admin ?? method !== "GET");
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  if (response.status === 204) return null;
  return response.json();
}

// A binary GET (images): a Blob.
export async function blob(path) {
  const response = await send(path, {}, false);
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response.blob();
}

// An upload with progress (fetch cannot report upload progress): XMLHttpRequest, with the
// same key handling.
export function upload(path, form, onProgress) {
  const attempt = () => new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const key = keyFor(true);
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText || "{}"); } catch (_) { body = {}; }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, {
      title: "Network error", detail: "the upload did not reach the API" })));
    xhr.send(form);
  });
  return (async () => {
    for (let tries = 0; tries < MAX_KEY_TRIES; tries++) {
      const { status, body } = await attempt();
      if (status >= 200 && status < 300) return body;
      const error = new ApiError(status, body);
      if (status !== 401 && status !== 403) throw error;
      if (!(await askKey("admin", error))) throw error;
      onProgress(0);
    }
    throw new ApiError(403, { title: "Forbidden", detail: "no key was accepted" });
  })();
}
