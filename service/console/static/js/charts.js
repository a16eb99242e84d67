// Training curves with uPlot (vendored: /console/vendor/uplot): loss, learning rate, kNN
// top-1 (beside the raw-pixel baseline), the label-free score (beside raw pixels' and the
// untrained network's) and neighbourhood quality against the epoch, with the start of every
// AND round marked.
import { h } from "./ui.js";

const PANELS = [
  { key: "loss", title: "Loss", series: [{ key: "loss", label: "loss", stroke: "#1f77b4" }] },
  { key: "lr", title: "Learning rate", log: true,
    series: [{ key: "lr", label: "lr", stroke: "#ff7f0e" }] },
  { key: "knn", title: "Weighted kNN top-1", percent: true,
    series: [{ key: "knn_top1", label: "model", stroke: "#2ca02c" },
      { key: "pixel_knn_top1", label: "raw pixels", stroke: "#7f7f7f", dash: [6, 4] }] },
  { key: "label-free", title: "Label-free score", unit: true,
    series: [{ key: "label_free", label: "model", stroke: "#d62728" },
      { key: "pixel_label_free", label: "raw pixels", stroke: "#7f7f7f", dash: [6, 4] },
      { key: "untrained_label_free", label: "untrained", stroke: "#bcbd22", dash: [2, 3] }] },
  { key: "nq", title: "Neighbourhood quality", percent: true,
    series: [{ key: "neighbourhood_quality", label: "quality", stroke: "#9467bd" }] },
];

function powersOfTen(u, splits) {
  return splits.map((v) => (v && Math.abs(Math.log10(v) % 1) < 1e-9 ? v : null));
}

function roundStarts(records) {
  return records.filter((r) => r.epoch === 1 && r.round > 0).map((r) => r.global_epoch - 0.5);
}

// Dashed vertical lines at round starts, drawn under the series.
function roundMarks(getStarts) {
  return {
    hooks: {
      drawClear: [(u) => {
        const { ctx } = u;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.strokeStyle = "#888";
        ctx.setLineDash([4, 4]);
        ctx.lineWidth = 1;
        for (const x of getStarts()) {
          const px = Math.round(u.valToPos(x, "x", true)) + 0.5;
          ctx.beginPath();
          ctx.moveTo(px, top);
          ctx.lineTo(px, top + height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
}

function columns(records, panel) {
  const x = records.map((r) => r.global_epoch);
  return [x, ...panel.series.map((s) => records.map((r) => (r[s.key] ?? null)))];
}

function width(el) {
  return Math.max(240, Math.floor(el.getBoundingClientRect().width) - 2);
}

export function drawCharts(container, records, state) {
  if (!globalThis.uPlot) throw new Error("the chart library did not load");
  if (state) {
    state.records = records;
    for (const c of state.charts) c.plot.setData(columns(records, c.panel));
    return state;
  }
  container.replaceChildren();
  const next = { records, charts: [], destroy: null };
  // Every box first, then the plots: the grid's columns are known only once all its boxes
  // are in it (alone, the first box would span the whole row, and its plot with it).
  const boxes = PANELS.map((panel) => h("figure", { class: "chart", dataset: { chart: panel.key } },
    h("figcaption", {}, panel.title)));
  container.append(...boxes);
  PANELS.forEach((panel, i) => {
    const box = boxes[i];
    const opts = {
      width: width(box),
      height: 180,
      plugins: [roundMarks(() => roundStarts(next.records))],
      scales: {
        x: { time: false },
        y: panel.log ? { distr: 3 } : panel.percent || panel.unit ? { range: [0, 1] } : {},
      },
      axes: [
        // Epochs are whole: no tick between two of them.
        { label: "epoch", size: 36, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000] },
        {
          size: 56,
          // Log scale: label and grid the powers of ten only.
          filter: panel.log ? powersOfTen : undefined,
          grid: panel.log ? { filter: powersOfTen } : undefined,
          ticks: panel.log ? { filter: powersOfTen } : undefined,
          values: panel.percent
            ? (u, ticks) => ticks.map((t) => (t == null ? "" : `${Math.round(t * 100)} %`))
            : panel.log
              ? (u, ticks) => ticks.map((t) => (t == null ? "" : t.toExponential(0)))
              : undefined,
        },
      ],
      series: [{ label: "epoch" }, ...panel.series.map((s) => ({
        label: s.label, stroke: s.stroke, width: 2, dash: s.dash, spanGaps: true,
        points: { show: true, size: 5 },
        value: (u, v) => (v === null || v === undefined ? "–"
          : panel.percent ? `${(100 * v).toFixed(2)} %` : v.toPrecision(4)),
      }))],
      legend: { show: true },
    };
    const plot = new globalThis.uPlot(opts, columns(records, panel), box);
    next.charts.push({ panel, plot, box });
  });
  const resize = () => {
    for (const c of next.charts) c.plot.setSize({ width: width(c.box), height: 180 });
  };
  window.addEventListener("resize", resize);
  next.destroy = () => {
    window.removeEventListener("resize", resize);
    for (const c of next.charts) c.plot.destroy();
  };
  return next;
}
