// Small DOM helpers shared by the pages.
import { blob } from "./api.js";

// h("a", {href: "#/x", class: "y"}, "text", child, ...): an element. Attributes starting
// with "on" are event listeners; `null`/`false` children and attributes are skipped.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// A problem (ApiError or any error) as an alert inside `where`.
export function showProblem(where, error) {
  const text = error && error.message ? error.message : String(error);
  const box = h("div", { class: "problem", role: "alert" }, text);
  clear(where, box);
  return box;
}

export function hideProblem(where) {
  clear(where);
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

// A model's label-free score beside raw pixels' on the same items ("0.511 / 0.809").
export function fmtLabelFree(m) {
  if (!m || m.label_free === null || m.label_free === undefined) return "–";
  return `${fmtNumber(m.label_free, 3)} / ${fmtNumber(m.pixel_label_free, 3)}`;
}

export function fmtPercent(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  return `${(100 * value).toFixed(digits)} %`;
}

export function fmtInt(value) {
  if (value === null || value === undefined) return "–";
  return Number(value).toLocaleString("en");
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// A moment as the models table and the API's manifests give it: year first, in UTC, said so
// (a locale's "07/12/2026" reads as July in one country and December in the next).
export function fmtTime(epochSeconds) {
  if (!epochSeconds) return "–";
  return `${new Date(epochSeconds * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

// Scores of neighbours: four decimals, more where two shown scores would look the same.
export function scoreFormatter(scores) {
  for (const digits of [4, 6, 8]) {
    const shown = scores.map((s) => s.toFixed(digits));
    if (new Set(shown).size === new Set(scores).size) return (s) => s.toFixed(digits);
  }
  return (s) => s.toPrecision(12);
}

export function itemPath(version, kind, id, size) {
  const path = `/models/${encodeURIComponent(version)}/${kind}/` +
    id.split("/").map(encodeURIComponent).join("/");
  return size ? `${path}?size=${size}` : path;
}

// Item images come through fetch() (so a read key can go in a header, never in the URL) and
// are shown from blob: URLs. A few at a time; URLs are released when the page changes.
const queue = [];
let running = 0;
const MAX_PARALLEL = 6;
const live = new Set();

export function releaseImages() {
  queue.length = 0;
  for (const url of live) URL.revokeObjectURL(url);
  live.clear();
}

function pump() {
  while (running < MAX_PARALLEL && queue.length) {
    const { img, path, resolve } = queue.shift();
    if (!img.isConnected) { resolve(false); continue; }
    running++;
    blob(path).then((data) => {
      const url = URL.createObjectURL(data);
      live.add(url);
      img.src = url;
      img.classList.remove("broken");
      resolve(true);
    }).catch((error) => {
      img.classList.add("broken");
      img.title = error.message;
      resolve(false);
    }).finally(() => {
      running--;
      pump();
    });
  }
}

// Started on the next task, once the caller has put the image in the page: an image that
// left the page by then (a page turned quickly) is never fetched.
export function loadImage(img, path) {
  return new Promise((resolve) => {
    queue.push({ img, path, resolve });
    setTimeout(pump, 0);
  });
}

// An item's thumbnail: alt text is the id, loaded through loadImage.
// A transparent pixel until the thumbnail arrives, so the alt text does not flash.
export const PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

export function thumb(version, id, size = 128, cls = "thumb") {
  const img = h("img", { alt: id, class: cls, width: size, height: size, decoding: "async",
    src: PLACEHOLDER });
  loadImage(img, itemPath(version, "thumbnails", id, size));
  return img;
}

export function confirmDialog(title, text, yes = "Yes") {
  const dialog = document.getElementById("confirm-dialog");
  const form = document.getElementById("confirm-form");
  const no = document.getElementById("confirm-no");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    const done = (value) => (event) => {
      event.preventDefault();
      form.removeEventListener("submit", onYes);
      no.removeEventListener("click", onNo);
      dialog.removeEventListener("cancel", onNo);
      dialog.close();
      resolve(value);
    };
    const onYes = done(true);
    const onNo = done(false);
    form.addEventListener("submit", onYes);
    no.addEventListener("click", onNo);
    dialog.addEventListener("cancel", onNo);
    dialog.showModal();
    no.focus();
  });
}

// Query parameters of the hash route (#/page?x=1).
export function hashParams() {
  const hash = location.hash.replace(/^#/, "");
  const q = hash.indexOf("?");
  return new URLSearchParams(q >= 0 ? hash.slice(q + 1) : "");
}

export function setHashParams(page, params) {
  const clean = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") clean.set(k, v);
  }
  const query = clean.toString();
  const target = `#/${page}${query ? `?${query}` : ""}`;
  if (location.hash !== target) history.replaceState(null, "", target);
}

export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf", "#393b79", "#e6550d", "#31a354", "#756bb1", "#843c39", "#de9ed6",
  "#637939", "#3182bd", "#fd8d3c", "#74c476",
];

export function colourOf(label) {
  return label < 0 ? "#9a9a9a" : PALETTE[label % PALETTE.length];
}
