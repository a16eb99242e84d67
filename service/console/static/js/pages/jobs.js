// Jobs: the list, and one job's live page (progress, charts, cancel).
import { api } from "../api.js";
import { drawCharts } from "../charts.js";
import {
  clear, confirmDialog, fmtDuration, fmtInt, fmtLabelFree, fmtNumber, fmtPercent, fmtTime, h,
  hideProblem, showProblem,
} from "../ui.js";

const TERMINAL = new Set(["succeeded", "failed", "canceled"]);
const POLL_MS = 1000;

function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

function stage(job) {
  const p = job.progress || {};
  if (job.status === "succeeded") return "done";
  if (p.epoch) return `round ${p.round + 1}/${p.rounds}, epoch ${p.epoch}/${p.epochs}`;
  return p.phase || "";
}

// [header, class] of every column after the job's id. Each cell also carries its header as
// data-label, which a phone's layout shows beside the value (one card per job).
const COLUMNS = [["Dataset", ""], ["Status", ""], ["Stage", ""], ["kNN top\u20111", "num"],
  ["Raw pixels", "num"], ["Label-free: model / pixels", "num label-free"], ["Created", ""]];

function row(job) {
  const p = job.progress || {};
  const m = p.metrics || {};
  const values = [
    job.dataset, badge(job.status), stage(job),
    fmtPercent(m.knn_top1 ?? m.loo_knn_top1 ?? p.knn_top1),
    fmtPercent(m.pixel_knn_top1 ?? p.pixel_knn_top1),
    // The finished run's score, else the latest one measured while it trains.
    fmtLabelFree(m.label_free !== undefined ? m : p),
    fmtTime(job.created_at),
  ];
  return h("tr", {},
    h("th", { scope: "row" }, h("a", { href: `#/jobs/${job.id}` }, job.id.slice(0, 8))),
    COLUMNS.map(([label, cls], i) => h("td", { class: cls || null, dataset: { label } },
      values[i])));
}

function listTable(jobs) {
  if (!jobs.length) {
    return h("p", { class: "muted" }, "No jobs yet. ", h("a", { href: "#/train" }, "Train"),
      " a model.");
  }
  return h("div", { class: "table-wrap" }, h("table", { id: "jobs-table", class: "cards" },
    h("caption", { class: "sr-only" }, "Jobs, newest first"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Job"),
      COLUMNS.map(([label, cls]) => h("th", { scope: "col",
        class: cls.startsWith("num") ? "num" : null }, label)))),
    h("tbody", {}, jobs.map(row))));
}

async function renderList(main) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const problem = h("div");
  main.append(h("h1", {}, "Jobs"), h("p", {}, h("a", { href: "#/train" }, "Start a job")),
    problem, box);
  let timer = null;
  let stopped = false;
  const refresh = async () => {
    try {
      const jobs = await api("/jobs?limit=100");
      if (stopped) return;
      hideProblem(problem);
      clear(box, listTable(jobs.data));
      const active = jobs.data.some((j) => !TERMINAL.has(j.status));
      timer = setTimeout(refresh, active ? 2 * POLL_MS : 10 * POLL_MS);
    } catch (error) {
      if (stopped) return;
      showProblem(problem, error);
      timer = setTimeout(refresh, 10 * POLL_MS);
    }
  };
  await refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function stat(label, value, id) {
  return [h("dt", {}, label), h("dd", { id }, value)];
}

// What a label-free score measures: the API names it in `label_free_measure` on every figure
// set that has a score, older runs' included (trainer.label_free.with_measure).
const MEASURES = { retrieval_log_rank: "mean log-rank",
  retrieval_mrr: "reciprocal rank, an earlier measure" };

function measureName(figures) {
  const measure = figures.label_free_measure;
  return MEASURES[measure] || measure || "measure not recorded";
}

// The label-free score: the finished run's (metrics), else the last one measured during
// training (`measured`: the latest epoch record that has it), each beside its baselines.
function labelFree(m, measured) {
  const from = m.label_free !== undefined ? m : measured;
  if (!from) return "–";
  return [from.label_free, from.pixel_label_free, from.untrained_label_free]
    .map((v) => fmtNumber(v, 4)).join(" / ") +
    ` (${fmtInt(from.label_free_items)} items, ${measureName(from)})`;
}

function summary(job, measured) {
  const p = job.progress || {};
  const m = p.metrics || {};
  const top1 = m.knn_top1 ?? m.loo_knn_top1 ?? p.knn_top1;
  const pixels = m.pixel_knn_top1 ?? p.pixel_knn_top1;
  return h("dl", { class: "stats", id: "job-stats" },
    stat("Status", badge(job.status), "job-status"),
    stat("Phase", p.phase || "–", "job-phase"),
    stat("Round", p.round !== undefined ? `${p.round + 1} / ${p.rounds}` : "–"),
    stat("Epoch", p.epoch !== undefined ? `${p.epoch} / ${p.epochs}` : "–", "job-epoch"),
    stat("Images/s", p.images_per_s ? fmtInt(Math.round(p.images_per_s)) : "–"),
    stat("ETA", job.status === "running" ? fmtDuration(p.eta_s) : "–"),
    stat("Loss", fmtNumber(p.loss, 4)),
    stat("kNN top-1", fmtPercent(top1), "job-knn"),
    stat("Raw pixels kNN top-1", fmtPercent(pixels), "job-pixels"),
    stat("Label-free score: model / raw pixels / untrained", labelFree(m, measured),
      "job-label-free"),
    stat("Neighbourhood quality", fmtPercent(p.neighbourhood_quality)),
    stat("Attempts", String(job.attempts)),
    stat("Created", fmtTime(job.created_at)));
}

// The files the run could not read: how many, and the first few with why.
function skippedLine(job) {
  const m = (job.progress || {}).metrics || {};
  if (!m.skipped_items) return null;
  const named = (m.skipped || []).slice(0, 3).map((s) => `${s.id} (${s.reason})`);
  const more = m.skipped_items - named.length;
  return h("p", { id: "job-skipped", class: "muted" },
    `${fmtInt(m.skipped_items)} file(s) could not be read as images and were left out: `,
    named.join("; "), more > 0 ? `; and ${fmtInt(more)} more` : "", ".");
}

// The promotion gate's verdict: why the model is, or is not, current.
function gateLine(job) {
  const g = job.gate || {};
  if (g.promoted === undefined) return null;
  const what = g.promoted ? "Made current" : "Published as a candidate, not current";
  return h("p", { id: "job-gate", class: g.promoted ? "" : "problem" },
    h("strong", {}, what), ` (promote: ${g.policy}). `, g.reason || "");
}

async function renderJob(main, id) {
  const head = h("div", { class: "job-head" });
  const problem = h("div", { id: "job-problem" });
  const live = h("div", { id: "job-live", "aria-live": "polite" });
  const bar = h("progress", { id: "job-progress", max: 1, value: 0,
    "aria-label": "Training progress" });
  const charts = h("div", { class: "charts", id: "job-charts", dataset: { points: "0" } });
  main.append(h("h1", {}, "Job ", h("code", {}, id.slice(0, 8))), problem, head, bar, live,
    h("h2", {}, "Training curves"),
    h("p", { class: "muted small" }, "Per epoch. The first round is instance discrimination; ",
      "dashed lines mark the start of each AND round (anchors and neighbourhoods found anew)."),
    charts);
  let timer = null;
  let stopped = false;
  let shownEpochs = -1;
  let job = null;
  let chartState = null;
  let measured = null; // the latest epoch record with a label-free score

  const cancel = h("button", { type: "button", class: "danger", id: "job-cancel",
    onclick: async () => {
      const yes = await confirmDialog("Cancel this job?",
        "A running job stops after its current batch and keeps its checkpoint; a queued job " +
        "never starts.", "Cancel job");
      if (!yes) return;
      try {
        job = await api(`/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
        hideProblem(problem);
        show();
      } catch (error) {
        showProblem(problem, error);
      }
    } }, "Cancel job");

  function show() {
    const p = job.progress || {};
    const links = [];
    if (job.model_version) {
      // The model serves the job's dataset: the links open that collection.
      const where = `model=${encodeURIComponent(job.model_version)}` +
        `&collection=${encodeURIComponent(job.dataset)}`;
      links.push(h("a", { href: `#/explore?${where}` }, `Explore model ${job.model_version}`),
        " · ", h("a", { href: `#/map?${where}` }, "its map"));
    }
    clear(head,
      h("p", {}, "Dataset ", h("strong", {}, job.dataset), links.length ? " · " : "", links),
      job.error ? h("p", { class: "problem", role: "alert" }, `Error: ${job.error}`) : null,
      job.note ? h("p", { class: "muted" }, job.note) : null,
      gateLine(job),
      skippedLine(job),
      !TERMINAL.has(job.status) && !job.cancel_requested ? cancel : null,
      job.cancel_requested && !TERMINAL.has(job.status)
        ? h("p", { class: "muted" }, "Cancel requested: stopping after the current batch.")
        : null);
    clear(live, summary(job, measured));
    const total = (p.rounds || 0) * (p.epochs || 0);
    bar.value = job.status === "succeeded" ? 1 : total ? (p.global_epoch || 0) / total : 0;
  }

  async function tick() {
    try {
      job = await api(`/jobs/${encodeURIComponent(id)}`);
      if (stopped) return;
      hideProblem(problem);
      show();
      const epochs = job.progress?.global_epoch ?? 0;
      if (epochs !== shownEpochs || TERMINAL.has(job.status)) {
        const history = await api(`/jobs/${encodeURIComponent(id)}/progress`);
        if (stopped) return;
        shownEpochs = epochs;
        measured = history.epochs.findLast((r) => r.label_free !== null
          && r.label_free !== undefined) || measured;
        show();
        chartState = drawCharts(charts, history.epochs, chartState);
        charts.dataset.points = String(history.epochs.length);
      }
      if (!TERMINAL.has(job.status)) timer = setTimeout(tick, POLL_MS);
      else charts.dataset.final = "true";
    } catch (error) {
      if (stopped) return;
      showProblem(problem, error);
      if (error.status !== 404) timer = setTimeout(tick, 5 * POLL_MS);
    }
  }
  await tick();
  return () => { stopped = true; clearTimeout(timer); if (chartState) chartState.destroy(); };
}

export async function render(main, route) {
  return route.id ? renderJob(main, route.id) : renderList(main);
}
