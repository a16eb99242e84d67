// The console's router: #/page[/id][?query] -> a page module's render(main, route).
// A page may return a function that stops its timers when the page is left.
import { forgetKeys, hasKeys, whenCollections } from "./api.js";
import { follow, loadCollections } from "./collections.js";
import { clear, h, releaseImages, showProblem } from "./ui.js";

const PAGES = {
  collections: () => import("./pages/collections.js"),
  datasets: () => import("./pages/datasets.js"),
  train: () => import("./pages/train.js"),
  jobs: () => import("./pages/jobs.js"),
  models: () => import("./pages/models.js"),
  explore: () => import("./pages/explore.js"),
  map: () => import("./pages/map.js"),
  retrain: () => import("./pages/retrain.js"),
  compare: () => import("./pages/compare.js"),
  duplicates: () => import("./pages/duplicates.js"),
};
const TITLES = {
  collections: "Collections",
  datasets: "Datasets", train: "Train", jobs: "Jobs", models: "Models", explore: "Explore",
  map: "Embedding map", retrain: "Retrain policy", compare: "Compare models",
  duplicates: "Near-duplicates",
};
// A page reached from another page's link keeps that page's entry marked in the menu.
const MENU_OF = { compare: "models", duplicates: "models" };

let leave = null;
let generation = 0;

function parse() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const [page, ...rest] = path.split("/");
  return {
    page: page || "collections",
    id: rest.length ? decodeURIComponent(rest.join("/")) : null,
    params: new URLSearchParams(query),
  };
}

async function route() {
  const current = ++generation;
  if (leave) {
    try { leave(); } catch (_) { /* a page's cleanup never blocks the next one */ }
    leave = null;
  }
  releaseImages();
  const main = document.getElementById("main");
  const where = parse();
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === (MENU_OF[where.page] || where.page)) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  follow(where.params.get("collection"));
  const load = PAGES[where.page];
  if (!load) {
    clear(main, h("h1", {}, "Not found"),
      h("p", { class: "problem", role: "alert" }, `There is no page “${where.page}”.`));
    return;
  }
  document.title = `${TITLES[where.page]} · AND console`;
  clear(main, h("p", { class: "muted" }, "Loading…"));
  try {
    const module = await load();
    if (current !== generation) return;
    main.replaceChildren();
    const cleanup = await module.render(main, where);
    if (current !== generation) {
      if (typeof cleanup === "function") cleanup();
      return;
    }
    leave = typeof cleanup === "function" ? cleanup : null;
  } catch (error) {
    if (current !== generation) return;
    clear(main, h("h1", {}, TITLES[where.page]));
    main.append(h("div", { class: "page-problem" }));
    showProblem(main.lastChild, error);
  }
}

function showKeyButton() {
  document.getElementById("forget-keys").hidden = !hasKeys();
}

document.getElementById("forget-keys").addEventListener("click", () => {
  forgetKeys();
  route();
});
document.addEventListener("keys-changed", showKeyButton);
// Another collection: the page's own choices (a version, an item) belonged to the last one.
document.addEventListener("collection-changed", () => {
  const { page } = parse();
  if (location.hash === `#/${page}`) route();
  else location.hash = `#/${page}`;
});
window.addEventListener("hashchange", route);
showKeyButton();
// Serving requests wait for the collection list (api.js); a list that cannot be read (no
// key yet, a network error) leaves the console on the API's default collection.
whenCollections(loadCollections());
route();
