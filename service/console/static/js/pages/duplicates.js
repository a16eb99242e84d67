// Near-duplicates: pairs of items of one model version whose cosine passes a threshold
// (GET /models/{v}/duplicates), most similar first, both images side by side.
import { api } from "../api.js";
import {
  clear, fmtInt, fmtNumber, h, hideProblem, setHashParams, showProblem, thumb,
} from "../ui.js";

const THUMB = 96;
const PAGE = 50;

function side(version, item) {
  return h("figure", { class: "dup-item", dataset: { id: item.id } },
    thumb(version, item.id, THUMB),
    h("figcaption", {}, h("span", { class: "id" }, item.id),
      h("span", { class: "muted small" }, item.label ?? "unlabelled")));
}

function pairRow(version, pair) {
  return h("li", { class: "card dup-pair" },
    side(version, pair.a),
    h("p", { class: "dup-cosine", title: "cosine similarity" }, fmtNumber(pair.cosine, 4)),
    side(version, pair.b));
}

export async function render(main, route) {
  const models = await api("/models");
  main.append(h("h1", {}, "Near-duplicates"));
  if (!models.data.length) {
    main.append(h("p", {}, "No model is published yet."));
    return;
  }
  const p = route.params;
  const version = p.get("v") || models.current || models.data[0].version;
  const select = h("select", { id: "dup-version" }, models.data.map((m) =>
    h("option", { value: m.version, selected: m.version === version },
      `${m.version}${m.current ? " (current)" : ""}`)));
  const threshold = h("input", { id: "dup-threshold", type: "number", min: "0.8", max: "1",
    step: "0.005", value: p.get("threshold") || "", placeholder: "default" });
  const problem = h("div", { id: "dup-problem" });
  const status = h("p", { id: "dup-status", class: "muted", role: "status" });
  const box = h("ol", { id: "dup-pairs", class: "dup-list" });
  const more = h("button", { type: "button", id: "dup-more", hidden: true }, "More pairs");
  main.append(
    h("form", { class: "toolbar", id: "dup-form", novalidate: true,
      onsubmit: (e) => { e.preventDefault(); run(0); } },
    h("div", { class: "field" }, h("label", { for: "dup-version" }, "Model"), select),
    h("div", { class: "field" }, h("label", { for: "dup-threshold" }, "Cosine at least"),
      threshold),
    h("button", { type: "submit", id: "dup-submit" }, "Find pairs")),
    problem, status, box, more);

  let request = 0;
  let shown = 0;
  async function run(offset) {
    const mine = ++request;
    const v = select.value;
    const query = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (threshold.value) query.set("threshold", threshold.value);
    setHashParams("duplicates", threshold.value ? { v, threshold: threshold.value } : { v });
    if (!offset) { clear(box); shown = 0; }
    hideProblem(problem);
    more.hidden = true;
    status.textContent = "Looking for pairs… (found once per collection state; a large " +
      "collection takes a while)";
    try {
      const out = await api(`/models/${encodeURIComponent(v)}/duplicates?${query}`);
      if (mine !== request) return;
      box.append(...out.pairs.map((pair) => pairRow(v, pair)));
      shown += out.pairs.length;
      status.textContent = `${fmtInt(out.total)} ${out.total === 1 ? "pair" : "pairs"} at ` +
        `cosine ≥ ${out.threshold}` +
        ` among ${fmtInt(out.items)} items (showing ${fmtInt(shown)})` +
        (out.crowded ? `; ${fmtInt(out.crowded)} items have ${out.neighbours} or more ` +
          "others at cosine ≥ 0.8, so some of their pairs may be missing." : ".");
      more.hidden = shown >= out.total;
      more.onclick = () => run(shown);
    } catch (error) {
      if (mine !== request) return;
      status.textContent = "";
      showProblem(problem, error);
    }
  }
  await run(0);
}
