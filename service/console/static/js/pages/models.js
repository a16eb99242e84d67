// Models: every published version with its metrics and index; which one is current; promote;
// two versions picked for the compare page.
import { api } from "../api.js";
import { clear, confirmDialog, fmtInt, fmtLabelFree, fmtNumber, fmtPercent, h, hideProblem,
  showProblem }
  from "../ui.js";

// kNN top-1 is a share of the test split; a label-free score is a score, not a share.
function gateText(m) {
  const g = m.gate;
  if (!g || g.candidate === null || g.candidate === undefined) return "–";
  const labelFree = g.measure === "label_free";
  const fmt = labelFree ? (v) => fmtNumber(v, 4) : fmtPercent;
  return `${labelFree ? "label-free score " : ""}${g.promote ? "beats" : "does not beat"} ` +
    `${g.incumbent_name}: ${fmt(g.candidate)} vs ${fmt(g.incumbent)} (margin ${fmt(g.margin)})` +
    gateOutcome(m);
}

// What came of the verdict where the verdict alone does not say it: a job's `promote` that
// overruled it, or a promotion by hand (the manifest keeps the verdict as it was).
function gateOutcome(m) {
  const g = m.gate;
  if (g.promote && !g.promoted) return g.policy === "never" ? "; kept out (promote: never)" : "";
  if (!g.promote && g.promoted) return `; made current anyway (promote: ${g.policy})`;
  if (!g.promote && m.current) return "; made current by hand";
  return "";
}

// To the minute, in UTC as published (the full time is the cell's tooltip).
function fmtCreated(created) {
  return created ? `${created.slice(0, 10)} ${created.slice(11, 16)}` : "–";
}

// The columns after the version: [header, class]. Each cell also carries its header as
// data-label, which a phone's layout shows beside the value (one card per model).
const COLUMNS = [["Dataset", ""], ["Backbone", ""], ["Items", "num"],
  ["Index (recall@10)", "index"], ["kNN top\u20111: model / pixels", "num knn"],
  ["Label-free: model / pixels", "num label-free"], ["Promotion gate", "gate"],
  ["Created (UTC)", "created"], ["", "row-actions"]];

function row(m, onPromote, previous) {
  const enc = encodeURIComponent(m.version);
  const values = [
    m.dataset || "–",
    m.backbone || "–",
    fmtInt(m.item_count),
    [m.index_type || "–", m.recall_at_10 === null ? "" : ` (${m.recall_at_10.toFixed(3)})`],
    m.knn_top1 === null && m.pixel_knn_top1 === null ? "–"
      : `${fmtPercent(m.knn_top1)} / ${fmtPercent(m.pixel_knn_top1)}`,
    fmtLabelFree(m),
    gateText(m),
    fmtCreated(m.created),
    [h("a", { href: `#/explore?model=${enc}` }, "Explore"), " ",
      h("a", { href: `#/map?model=${enc}` }, "Map"), " ",
      h("a", { href: `#/duplicates?v=${enc}` }, "Duplicates"), " ",
      m.current ? null : h("button", { type: "button", class: "small",
        onclick: () => onPromote(m.version) }, "Promote")],
  ];
  const titles = { gate: (m.gate && m.gate.reason) || "", created: m.created || "" };
  return h("tr", { dataset: { version: m.version } },
    h("th", { scope: "row" }, h("code", {}, m.version),
      m.current ? h("span", { class: "badge current" }, "current") : null,
      m.version === previous ? h("span", { class: "badge" }, "previous") : null,
      m.gate && !m.gate.promoted && !m.current
        ? h("span", { class: "badge", title: m.gate.reason || "" }, "candidate") : null),
    COLUMNS.map(([label, cls], i) => h("td", { class: cls || null, title: titles[cls] || null,
      dataset: label ? { label } : null }, values[i])));
}

// Two versions to compare: A defaults to the current one, B to the newest other.
function comparePicker(models) {
  if (models.data.length < 2) return null;
  const first = models.current || models.data[1].version;
  const second = models.data.find((m) => m.version !== first).version;
  const select = (id, chosen) => h("select", { id }, models.data.map((m) =>
    h("option", { value: m.version, selected: m.version === chosen },
      `${m.version}${m.current ? " (current)" : ""}`)));
  const a = select("models-compare-a", first);
  const b = select("models-compare-b", second);
  return h("form", { class: "toolbar card", id: "models-compare", novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      location.hash = `#/compare?a=${encodeURIComponent(a.value)}&b=${encodeURIComponent(b.value)}`;
    } },
  h("div", { class: "field" }, h("label", { for: "models-compare-a" }, "Compare A"), a),
  h("div", { class: "field" }, h("label", { for: "models-compare-b" }, "with B"), b),
  h("button", { type: "submit" }, "Compare"));
}

export async function render(main) {
  const problem = h("div", { id: "models-problem" });
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.append(h("h1", {}, "Models"), problem, box);

  const refresh = async () => {
    const models = await api("/models");
    if (!models.data.length) {
      clear(box, h("p", { class: "muted" }, "No model published yet. ",
        h("a", { href: "#/train" }, "Train one"), "."));
      return;
    }
    clear(box, comparePicker(models), h("div", { class: "table-wrap" },
      h("table", { id: "models-table", class: "cards" },
      h("caption", { class: "sr-only" }, "Published models, newest first"),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col" }, "Version"),
        COLUMNS.map(([label, cls]) => h("th", { scope: "col",
          class: cls.startsWith("num") ? "num" : null }, label)))),
      h("tbody", {}, models.data.map((m) => row(m, promote, models.previous))))),
    models.previous ? h("p", {}, h("button", { type: "button", id: "models-rollback",
      onclick: rollback }, `Roll back to ${models.previous}`)) : null,
    h("p", { class: "muted small" }, "kNN top-1: weighted kNN on the labelled test split ",
      "(or leave-one-out); raw pixels: the same kNN on downscaled, standardised pixels. ",
      "Label-free: how often an augmented copy of an image finds its own image (mean ",
      "log-rank, needs no label), for the model and for raw pixels on the same items."));
  };

  const rollback = async () => {
    const yes = await confirmDialog("Roll back?",
      "The version that was current before becomes current again.", "Roll back");
    if (!yes) return;
    try {
      await api("/models/current/rollback", { method: "POST" });
      hideProblem(problem);
      await refresh();
    } catch (error) {
      showProblem(problem, error);
    }
  };

  const promote = async (version) => {
    const yes = await confirmDialog("Make this model current?",
      `The API will serve ${version} for every request that does not pin a version.`,
      "Promote");
    if (!yes) return;
    try {
      await api(`/models/${encodeURIComponent(version)}/promote`, { method: "POST" });
      hideProblem(problem);
      await refresh();
    } catch (error) {
      showProblem(problem, error);
    }
  };
  await refresh();
}
