// Explore: a model's items as a paged image grid (filter by label and id prefix), an item's
// k nearest neighbours, and search by an image file with weighted-kNN class scores.
import { api } from "../api.js";
import {
  clear, colourOf, fmtInt, h, hideProblem, scoreFormatter, setHashParams, showProblem, thumb,
} from "../ui.js";

const PAGE_SIZE = 48;
const DEFAULT_K = 10;

function neighbourList(version, query, neighbours, queryLabel) {
  const fmt = scoreFormatter(neighbours.map((n) => n.score));
  return h("ol", { class: "neighbours" }, neighbours.map((n) => {
    const same = queryLabel !== null && queryLabel !== undefined && n.label === queryLabel;
    return h("li", { class: same ? "same" : null, dataset: { id: n.id } },
      h("a", { href: `#/explore?model=${encodeURIComponent(version)}&item=${encodeURIComponent(n.id)}`,
        class: "neighbour-link", "aria-label": `Neighbours of ${n.id}` }, thumb(version, n.id, 96)),
      h("div", { class: "meta" },
        h("span", { class: "score", title: "cosine similarity" }, fmt(n.score)),
        h("span", { class: "id" }, n.id),
        h("span", { class: "label" }, n.label ?? "unlabelled",
          same ? h("span", { class: "same-mark" }, " ✓ same label") : null)));
  }));
}

function classBars(scores) {
  const entries = Object.entries(scores).sort((a, b) => b[1] - a[1]);
  return h("figure", { class: "bars", id: "class-scores" },
    h("figcaption", {}, "Weighted-kNN class scores"),
    h("ol", {}, entries.map(([label, share]) => h("li", {},
      h("span", { class: "bar-label" }, label),
      h("span", { class: "bar-track", role: "img",
        "aria-label": `${label}: ${(100 * share).toFixed(2)} %` },
      h("span", { class: "bar-fill", style: null, dataset: { share: share.toFixed(4) } })),
      h("span", { class: "bar-value" }, `${(100 * share).toFixed(2)} %`)))));
}

// Bar widths are set through the CSSOM (inline style attributes are refused by the page's
// content security policy).
function sizeBars(root) {
  for (const fill of root.querySelectorAll(".bar-fill")) {
    fill.style.width = `${(100 * Number(fill.dataset.share)).toFixed(2)}%`;
  }
}

export async function render(main, route) {
  const models = await api("/models");
  main.append(h("h1", {}, "Explore"));
  if (!models.data.length) {
    main.append(h("p", {}, "No model published yet. ", h("a", { href: "#/train" }, "Train one"),
      "."));
    return;
  }
  const p = route.params;
  const state = {
    model: p.get("model") || models.current || models.data[0].version,
    label: p.get("label") || "",
    prefix: p.get("prefix") || "",
    page: Math.max(0, (Number(p.get("page")) || 1) - 1),
    item: p.get("item"),
    k: Number(p.get("k")) || DEFAULT_K,
  };
  let manifest = null;
  let labelOf = new Map();
  let stopped = false;

  const modelSelect = h("select", { id: "explore-model" }, models.data.map((m) =>
    h("option", { value: m.version, selected: m.version === state.model },
      `${m.version}${m.current ? " (current)" : ""}`)));
  if (!models.data.some((m) => m.version === state.model)) {
    modelSelect.prepend(h("option", { value: state.model, selected: true }, state.model));
  }
  const labelSelect = h("select", { id: "explore-label" });
  const prefixInput = h("input", { id: "explore-prefix", type: "search", value: state.prefix,
    placeholder: "e.g. test/", autocomplete: "off", maxlength: 1024 });
  const kInput = h("input", { id: "explore-k", type: "number", min: 1, step: 1,
    value: String(state.k), inputmode: "numeric" });
  const count = h("p", { id: "explore-count", class: "muted", role: "status" });
  const gridProblem = h("div", { id: "grid-problem" });
  const grid = h("ul", { class: "grid", id: "explore-grid", "aria-label": "Items" });
  const pageInput = h("input", { id: "explore-page", type: "number", min: 1, value: "1",
    inputmode: "numeric", "aria-label": "Page number" });
  const pageTotal = h("span", { id: "explore-pages" });
  const first = h("button", { type: "button", class: "small" }, "« First");
  const prev = h("button", { type: "button", class: "small" }, "‹ Prev");
  const next = h("button", { type: "button", class: "small" }, "Next ›");
  const last = h("button", { type: "button", class: "small" }, "Last »");
  const pager = h("nav", { class: "pager", "aria-label": "Pages of items" }, first, prev,
    h("label", {}, "Page ", pageInput, " of ", pageTotal), next, last);

  const nbProblem = h("div", { id: "neighbours-problem" });
  const nbBox = h("div", { id: "neighbours-box" },
    h("p", { class: "muted" }, "Choose an image to see its nearest neighbours."));
  const nbHeading = h("h2", { id: "neighbours-heading", tabindex: "-1" }, "Nearest neighbours");
  const searchFile = h("input", { id: "search-file", type: "file", accept: "image/*",
    class: "sr-only" });
  const drop = h("label", { for: "search-file", class: "drop", id: "search-drop",
    tabindex: "0" }, "Drop an image here, or choose a file");
  const searchProblem = h("div", { id: "search-problem" });
  const searchBox = h("div", { id: "search-box" });

  main.append(
    h("form", { class: "toolbar", id: "explore-controls", novalidate: true,
      onsubmit: (e) => { e.preventDefault(); state.page = 0; loadPage(); } },
    h("div", { class: "field" }, h("label", { for: "explore-model" }, "Model"), modelSelect),
    h("div", { class: "field" }, h("label", { for: "explore-label" }, "Label"), labelSelect),
    h("div", { class: "field" }, h("label", { for: "explore-prefix" }, "Id prefix"),
      prefixInput),
    h("div", { class: "field narrow" }, h("label", { for: "explore-k" }, "k"), kInput),
    h("button", { type: "submit" }, "Filter")),
    h("div", { class: "explore" },
      h("section", { class: "items", "aria-labelledby": "items-heading" },
        h("h2", { id: "items-heading", class: "sr-only" }, "Items"), count, gridProblem, grid,
        pager),
      h("aside", { class: "side" },
        h("section", { class: "card", id: "neighbours", "aria-labelledby": "neighbours-heading" },
          nbHeading, nbProblem, nbBox),
        h("section", { class: "card", id: "search", "aria-labelledby": "search-heading" },
          h("h2", { id: "search-heading" }, "Search by image"), drop, searchFile,
          searchProblem, searchBox))));

  const saveState = () => setHashParams("explore", {
    model: state.model, label: state.label, prefix: state.prefix,
    page: state.page ? state.page + 1 : "", item: state.item,
    k: state.k !== DEFAULT_K ? state.k : "",
  });

  async function loadModel() {
    manifest = await api(`/models/${encodeURIComponent(state.model)}`);
    labelOf = new Map();
    const classes = manifest.classes || [];
    // A label from the address may be one added since the bundle: kept until the first page.
    setLabels(!state.label || classes.includes(state.label) ? classes : [...classes, state.label]);
  }

  // The labels to filter by: the bundle's, then those of items added since (each page of
  // items lists them all).
  let shownLabels = "";
  function setLabels(classes) {
    const key = JSON.stringify(classes);
    if (key === shownLabels) return;
    shownLabels = key;
    clear(labelSelect, h("option", { value: "" }, "All labels"),
      classes.map((c) => h("option", { value: c, selected: c === state.label }, c)));
    labelSelect.disabled = !classes.length;
  }

  let pageRequest = 0;
  async function loadPage() {
    state.label = labelSelect.value;
    state.prefix = prefixInput.value.trim();
    const mine = ++pageRequest;
    const query = new URLSearchParams({ offset: String(state.page * PAGE_SIZE),
      limit: String(PAGE_SIZE) });
    if (state.label) query.set("label", state.label);
    if (state.prefix) query.set("prefix", state.prefix);
    try {
      const items = await api(`/models/${encodeURIComponent(state.model)}/items?${query}`);
      if (stopped || mine !== pageRequest) return;
      hideProblem(gridProblem);
      setLabels(items.classes || []);
      const pages = Math.max(1, Math.ceil(items.count / PAGE_SIZE));
      if (state.page >= pages && items.count) {
        state.page = pages - 1;
        loadPage();
        return;
      }
      count.textContent = `${fmtInt(items.count)} items` +
        (state.label || state.prefix ? " match" : "") + ` · model ${items.model_version}`;
      pageInput.value = String(state.page + 1);
      pageInput.max = String(pages);
      pageTotal.textContent = fmtInt(pages);
      first.disabled = prev.disabled = state.page === 0;
      next.disabled = last.disabled = state.page >= pages - 1;
      last.onclick = () => { state.page = pages - 1; loadPage(); };
      clear(grid, items.data.map((item) => {
        labelOf.set(item.id, item.label);
        return h("li", { dataset: { id: item.id } },
          h("button", { type: "button", class: "item", "aria-label": `Neighbours of ${item.id}`,
            onclick: () => showNeighbours(item.id, true) },
          thumb(state.model, item.id, 128),
          h("span", { class: "caption" },
            h("span", { class: "label-dot", dataset: { label: item.label ?? "" } }),
            h("span", { class: "label" }, item.label ?? "unlabelled"),
            h("span", { class: "id" }, item.id))));
      }));
      colourDots(grid);
      if (!items.data.length) grid.append(h("li", { class: "muted empty" }, "No items match."));
      saveState();
    } catch (error) {
      if (stopped || mine !== pageRequest) return;
      showProblem(gridProblem, error);
    }
  }

  function colourDots(root) {
    const classes = manifest?.classes || [];
    for (const dot of root.querySelectorAll(".label-dot")) {
      dot.style.background = colourOf(classes.indexOf(dot.dataset.label));
    }
  }

  function readK() {
    const k = Number(kInput.value);
    state.k = Number.isFinite(k) && kInput.value !== "" ? k : DEFAULT_K;
    return state.k;
  }

  async function showNeighbours(id, focus) {
    state.item = id;
    saveState();
    const k = readK();
    clear(nbBox, h("p", { class: "muted" }, `Finding the ${k} nearest neighbours of ${id}…`));
    if (focus) nbHeading.focus({ preventScroll: true });
    if (focus) nbHeading.scrollIntoView({ block: "nearest" });
    try {
      const query = new URLSearchParams({ k: String(k), model_version: state.model });
      const path = id.split("/").map(encodeURIComponent).join("/");
      const found = await api(`/neighbours/${path}?${query}`);
      if (!labelOf.has(id)) await learnLabel(id);
      if (stopped || state.item !== id) return;
      hideProblem(nbProblem);
      const label = labelOf.has(id) ? labelOf.get(id) : undefined;
      const sameCount = found.neighbours.filter((n) => label != null && n.label === label).length;
      clear(nbBox,
        h("div", { class: "query" }, thumb(state.model, id, 128),
          h("div", {}, h("p", { class: "id" }, id),
            h("p", {}, label === undefined ? "" : `label ${label ?? "unlabelled"}`),
            label != null ? h("p", { class: "muted small" },
              `${sameCount} of ${found.neighbours.length} share its label`) : null)),
        neighbourList(state.model, id, found.neighbours, label));
    } catch (error) {
      if (stopped) return;
      clear(nbBox);
      showProblem(nbProblem, error);
    }
  }

  // The label of an item that is not on the page (opened from a link).
  async function learnLabel(id) {
    const query = new URLSearchParams({ prefix: id, limit: "20" });
    try {
      const items = await api(`/models/${encodeURIComponent(state.model)}/items?${query}`);
      const found = items.data.find((item) => item.id === id);
      if (found) labelOf.set(id, found.label);
    } catch (_) { /* the neighbours are shown without marks */ }
  }

  async function search(file) {
    hideProblem(searchProblem);
    const k = readK();
    const preview = h("img", { class: "thumb", alt: `query: ${file.name}`, width: 128,
      height: 128 });
    const url = URL.createObjectURL(file);
    preview.src = url;
    clear(searchBox, h("div", { class: "query" }, preview,
      h("p", { class: "id" }, file.name)), h("p", { class: "muted" }, "Searching…"));
    const form = new FormData();
    form.append("files", file, file.name);
    form.append("k", String(k));
    const version = encodeURIComponent(state.model);
    try {
      const labelled = (manifest?.classes || []).length >= 2;
      const classify = async () => {
        if (!labelled) return null;
        const cform = new FormData();
        cform.append("files", file, file.name);
        try {
          const classified = await api(`/classify?model_version=${version}`,
            { method: "POST", body: cform, admin: false });
          return classified.predictions[0];
        } catch (error) {
          return error;
        }
      };
      const [found, prediction] = await Promise.all([
        api(`/search?model_version=${version}`, { method: "POST", body: form, admin: false }),
        classify(),
      ]);
      if (stopped) return;
      const parts = [];
      if (prediction instanceof Error) {
        parts.push(h("p", { class: "muted" }, `No class scores: ${prediction.message}`));
      } else if (prediction) {
        parts.push(h("p", { id: "search-label" }, "Predicted label ",
          h("strong", {}, prediction.label)), classBars(prediction.scores));
      }
      // Built last: thumbnails start loading once they are in the page.
      parts.push(h("h3", {}, `${found.results[0].neighbours.length} nearest items`),
        neighbourList(state.model, null, found.results[0].neighbours, null));
      clear(searchBox, h("div", { class: "query" }, preview, h("p", { class: "id" }, file.name)),
        parts);
      sizeBars(searchBox);
    } catch (error) {
      if (stopped) return;
      clear(searchBox);
      URL.revokeObjectURL(url);
      showProblem(searchProblem, error);
    }
  }

  modelSelect.addEventListener("change", async () => {
    state.model = modelSelect.value;
    state.page = 0;
    state.label = "";
    state.item = null;
    try {
      await loadModel();
      hideProblem(gridProblem);
      await loadPage();
    } catch (error) {
      showProblem(gridProblem, error);
    }
  });
  labelSelect.addEventListener("change", () => { state.page = 0; loadPage(); });
  let typing = null;
  prefixInput.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.page = 0; loadPage(); }, 300);
  });
  kInput.addEventListener("change", () => { if (state.item) showNeighbours(state.item, false); });
  first.addEventListener("click", () => { state.page = 0; loadPage(); });
  prev.addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadPage(); });
  next.addEventListener("click", () => { state.page += 1; loadPage(); });
  pageInput.addEventListener("change", () => {
    const n = Math.floor(Number(pageInput.value));
    state.page = Number.isFinite(n) && n > 0 ? n - 1 : 0;
    loadPage();
  });
  searchFile.addEventListener("change", () => {
    if (searchFile.files.length) search(searchFile.files[0]);
    searchFile.value = "";
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); searchFile.click(); }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) search(e.dataTransfer.files[0]);
  });

  try {
    await loadModel();
  } catch (error) {
    showProblem(gridProblem, error);
    return () => { stopped = true; };
  }
  await loadPage();
  if (state.item) showNeighbours(state.item, false);
  return () => { stopped = true; clearTimeout(typing); };
}
