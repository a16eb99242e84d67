// The collection the console shows: read from GET /collections at start, kept in this tab
// (sessionStorage), changed with the header's switcher. Every serving request of every page
// then goes under /collections/{name} (api.js), so the console works with one collection or
// many, with or without DEFAULT_COLLECTION.
import { api, collection, setCollection } from "./api.js";
import { h } from "./ui.js";

let known = null; // the last GET /collections answer

export function collections() {
  return known;
}

// The collection to show: the one this tab chose if it still exists, else the API's default,
// else the first.
function pick(answer) {
  const names = answer.data.map((c) => c.name);
  const mine = collection();
  if (mine && names.includes(mine)) return mine;
  return answer.default || names[0] || null;
}

export async function loadCollections() {
  known = await api("/collections");
  setCollection(pick(known));
  renderSwitcher();
  return known;
}

// A link that names its collection (?collection=): show that one, quietly.
export function follow(name) {
  if (!name || name === collection()) return;
  setCollection(name);
  renderSwitcher();
}

export function choose(name) {
  setCollection(name);
  renderSwitcher();
  document.dispatchEvent(new Event("collection-changed"));
}

function renderSwitcher() {
  const box = document.getElementById("collection-switch");
  if (!box) return;
  if (!known || !known.data.length) {
    box.replaceChildren();
    return;
  }
  const select = h("select", { id: "collection-select",
    onchange: (e) => choose(e.target.value) },
  known.data.map((c) => h("option", { value: c.name, selected: c.name === collection() },
    c.name)));
  box.replaceChildren(h("label", { for: "collection-select" }, "Collection"), select);
}
