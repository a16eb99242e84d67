// Compare: two model versions of one dataset on the same items (GET /models/{a}/compare/{b}):
// both scores with the noise margin, the overlap of their neighbour lists, and the items whose
// neighbours changed most, with their neighbours under both models side by side.
import { api } from "../api.js";
import {
  clear, fmtInt, fmtNumber, fmtPercent, h, hideProblem, scoreFormatter, setHashParams,
  showProblem, thumb,
} from "../ui.js";

const THUMB = 64;

function versionSelect(id, models, selected) {
  return h("select", { id }, models.data.map((m) =>
    h("option", { value: m.version, selected: m.version === selected },
      `${m.version}${m.current ? " (current)" : ""}${m.dataset ? ` · ${m.dataset}` : ""}`)));
}

function signed(value, fmt) {
  return `${value > 0 ? "+" : value < 0 ? "−" : "±"}${fmt(Math.abs(value))}`;
}

// "B − A: +0.0420, within the noise margin 0.2250" (+ who scores higher beyond it).
function verdict(figure, fmt) {
  const beyond = Math.abs(figure.difference) > figure.margin;
  const higher = figure.difference > 0 ? "B" : "A";
  return `B − A: ${signed(figure.difference, fmt)}, ${beyond ? "beyond" : "within"} the ` +
    `noise margin ${fmt(figure.margin)}${beyond ? `: ${higher} scores higher` : ""}`;
}

// One figure of both models: its name and what it was measured on, A's and B's values, and
// what their difference means.
function figureCard(key, title, detail, valueA, valueB, line) {
  return h("section", { class: "card figure", dataset: { figure: key } },
    h("h2", {}, title), h("p", { class: "muted small" }, detail),
    h("dl", { class: "pair" },
      h("div", {}, h("dt", {}, "A"), h("dd", { class: "value-a" }, valueA)),
      h("div", {}, h("dt", {}, "B"), h("dd", { class: "value-b" }, valueB))),
    line ? h("p", { class: "verdict" }, line) : null);
}

function figures(out) {
  const cards = [];
  if (out.knn) {
    cards.push(figureCard("knn", "kNN top-1", `${out.knn.protocol} protocol, ` +
      `${fmtInt(out.knn.queries)} queries, k = ${out.knn.k}, paired per query`,
    fmtPercent(out.a.knn_top1), fmtPercent(out.b.knn_top1),
    verdict(out.knn, (v) => fmtPercent(v))));
  }
  if (out.label_free) {
    cards.push(figureCard("label-free", "Label-free score", `${fmtInt(out.label_free.items)} ` +
      `items, the same ${out.label_free.augmentation} views for both`,
    fmtNumber(out.a.label_free, 4), fmtNumber(out.b.label_free, 4),
    verdict(out.label_free, (v) => fmtNumber(v, 4))));
  }
  cards.push(h("section", { class: "card figure", id: "compare-overlap",
    dataset: { figure: "overlap" } },
  h("h2", {}, "Neighbour overlap"),
  h("p", { class: "muted small" }, `Top-${out.overlap.k} lists of ` +
    `${fmtInt(out.overlap.items)} sampled items (of ${fmtInt(out.common_items)} in common)`),
  h("p", { class: "big" }, fmtPercent(out.overlap.mean)),
  h("p", { class: "verdict" }, "The mean share of an item's neighbours under A that are ",
    "also its neighbours under B (100 % = the same neighbours).")));
  return h("div", { id: "compare-scores", class: "figures" }, cards);
}

function strip(version, neighbours, other, side) {
  const kept = new Set(other.map((n) => n.id));
  const fmt = scoreFormatter(neighbours.map((n) => n.score));
  return h("ol", { class: "strip", dataset: { side } }, neighbours.map((n) =>
    h("li", { class: kept.has(n.id) ? "kept" : null, dataset: { id: n.id },
      title: `${n.id}${n.label ? ` (${n.label})` : ""}: ${fmt(n.score)}` },
    thumb(version, n.id, THUMB),
    h("span", { class: "strip-score" }, fmt(n.score)),
    kept.has(n.id) ? h("span", { class: "sr-only" }, " (in both lists)") : null)));
}

function changedItem(out, item) {
  return h("li", { class: "card changed", dataset: { id: item.id } },
    h("div", { class: "query" }, thumb(out.a.version, item.id, 96),
      h("div", {}, h("p", { class: "id" }, item.id),
        h("p", {}, item.label ?? "unlabelled"),
        h("p", { class: "overlap" }, `Overlap ${fmtPercent(item.overlap, 0)}`))),
    h("div", { class: "compare-lists" },
      h("section", {}, h("h3", {}, `Under A (${out.a.version})`),
        strip(out.a.version, item.a, item.b, "a")),
      h("section", {}, h("h3", {}, `Under B (${out.b.version})`),
        strip(out.b.version, item.b, item.a, "b"))));
}

function results(out) {
  return [
    figures(out),
    out.notes.length ? h("ul", { id: "compare-notes", class: "muted" },
      out.notes.map((n) => h("li", {}, n))) : null,
    h("h2", {}, "Items whose neighbours changed most"),
    h("p", { class: "muted small" }, "Each item's nearest neighbours under both models, ",
      "nearest first, with their cosine similarity; neighbours in both lists are outlined."),
    h("ol", { id: "compare-changed", class: "changed-list" },
      out.changed_most.map((item) => changedItem(out, item))),
  ];
}

export async function render(main, route) {
  const models = await api("/models");
  main.append(h("h1", {}, "Compare models"));
  if (models.data.length < 2) {
    main.append(h("p", {}, "Two published models are needed. ",
      h("a", { href: "#/models" }, "Models"), "."));
    return;
  }
  const p = route.params;
  const a = p.get("a") || models.current || models.data[1].version;
  const b = p.get("b") || models.data.find((m) => m.version !== a).version;
  const selectA = versionSelect("compare-a", models, a);
  const selectB = versionSelect("compare-b", models, b);
  const problem = h("div", { id: "compare-problem" });
  const status = h("p", { id: "compare-status", class: "muted", role: "status" });
  const box = h("div", { id: "compare-results" });
  main.append(
    h("form", { class: "toolbar", id: "compare-form", novalidate: true,
      onsubmit: (e) => { e.preventDefault(); run(selectA.value, selectB.value); } },
    h("div", { class: "field" }, h("label", { for: "compare-a" }, "A"), selectA),
    h("div", { class: "field" }, h("label", { for: "compare-b" }, "B"), selectB),
    h("button", { type: "submit", id: "compare-submit" }, "Compare")),
    problem, status, box);

  let request = 0;
  async function run(va, vb) {
    const mine = ++request;
    setHashParams("compare", { a: va, b: vb });
    clear(box);
    hideProblem(problem);
    status.textContent = "Comparing… (a pair is measured once, which may take a while)";
    try {
      const out = await api(`/models/${encodeURIComponent(va)}/compare/${encodeURIComponent(vb)}`);
      if (mine !== request) return;
      status.textContent = `${fmtInt(out.common_items)} items in common, dataset ` +
        `${out.dataset ?? "–"}.`;
      clear(box, results(out));
    } catch (error) {
      if (mine !== request) return;
      status.textContent = "";
      showProblem(problem, error);
    }
  }
  await run(a, b);
}
