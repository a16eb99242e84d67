// Embedding map: the model's 2-D map (PCA then t-SNE, computed at publication) as a canvas
// scatter coloured by label. Wheel or +/- zooms, dragging or the arrow keys pan, hovering
// shows the item's thumbnail, a click opens its neighbours in Explore.
import { api } from "../api.js";
import {
  PLACEHOLDER, clear, colourOf, fmtInt, h, itemPath, loadImage, showProblem,
} from "../ui.js";

const GRID = 64; // hover lookup: points bucketed in a GRID x GRID grid of the unit square

function buildIndex(xs, ys) {
  const n = xs.length;
  const cell = new Int32Array(n);
  const counts = new Int32Array(GRID * GRID + 1);
  for (let i = 0; i < n; i++) {
    const cx = Math.min(GRID - 1, Math.max(0, Math.floor(xs[i] * GRID)));
    const cy = Math.min(GRID - 1, Math.max(0, Math.floor(ys[i] * GRID)));
    cell[i] = cy * GRID + cx;
    counts[cell[i] + 1]++;
  }
  for (let c = 0; c < GRID * GRID; c++) counts[c + 1] += counts[c];
  const start = counts.slice();
  const order = new Int32Array(n);
  for (let i = 0; i < n; i++) order[start[cell[i]]++] = i;
  return { counts, order };
}

function groupsByLabel(labels) {
  const groups = new Map();
  labels.forEach((label, i) => {
    if (!groups.has(label)) groups.set(label, []);
    groups.get(label).push(i);
  });
  return [...groups.entries()].sort((a, b) => a[0] - b[0])
    .map(([label, rows]) => ({ label, rows: Int32Array.from(rows) }));
}

export async function render(main, route) {
  const models = await api("/models");
  main.append(h("h1", {}, "Embedding map"));
  if (!models.data.length) {
    main.append(h("p", {}, "No model published yet. ", h("a", { href: "#/train" }, "Train one"),
      "."));
    return;
  }
  const version = route.params.get("model") || models.current || models.data[0].version;
  const select = h("select", { id: "map-model" }, models.data.map((m) =>
    h("option", { value: m.version, selected: m.version === version },
      `${m.version}${m.current ? " (current)" : ""}`)));
  select.addEventListener("change", () => {
    location.hash = `#/map?model=${encodeURIComponent(select.value)}`;
  });
  const status = h("p", { id: "map-status", class: "muted", role: "status" }, "Loading the map…");
  const problem = h("div", { id: "map-problem" });
  const canvas = h("canvas", { id: "map-canvas", tabindex: "0", role: "img",
    "aria-label": "Embedding map. Arrow keys pan, + and - zoom, 0 resets, Enter opens the " +
      "highlighted item." });
  const tipImg = h("img", { alt: "", class: "thumb", width: 96, height: 96, src: PLACEHOLDER });
  const tipText = h("div", { class: "tip-text" });
  const tip = h("div", { class: "map-tip", id: "map-tip", hidden: true }, tipImg, tipText);
  const wrap = h("div", { class: "map-wrap" }, canvas, tip);
  const legend = h("ul", { class: "legend", id: "map-legend", "aria-label": "Colours" });
  const zoomIn = h("button", { type: "button", class: "small", "aria-label": "Zoom in" }, "+");
  const zoomOut = h("button", { type: "button", class: "small", "aria-label": "Zoom out" }, "−");
  const reset = h("button", { type: "button", class: "small" }, "Reset view");
  main.append(
    h("div", { class: "toolbar" },
      h("div", { class: "field" }, h("label", { for: "map-model" }, "Model"), select),
      h("div", { class: "zoom" }, zoomIn, zoomOut, reset)),
    status, problem, wrap, legend);

  let data;
  try {
    const t0 = performance.now();
    data = await api(`/models/${encodeURIComponent(version)}/map`);
    window.__mapStats = { fetchMs: performance.now() - t0, drawMs: [] };
  } catch (error) {
    clear(status);
    showProblem(problem, error);
    return undefined;
  }
  const n = data.count;
  const xs = Float32Array.from(data.x);
  // Screen y grows downwards: flip so the map reads like a plot.
  const ys = Float32Array.from(data.y, (y) => 1 - y);
  const groups = groupsByLabel(data.label);
  const index = buildIndex(xs, ys);
  status.textContent = `${fmtInt(n)} points` +
    (n < data.item_count ? ` (a random sample of ${fmtInt(data.item_count)} items)` : "") +
    ` · model ${data.model_version} · wheel or +/− to zoom, drag to pan, hover for the image, ` +
    "click for its neighbours";
  clear(legend, groups.map((g) => {
    const swatch = h("span", { class: "swatch" });
    swatch.style.background = colourOf(g.label);
    return h("li", {}, swatch, g.label < 0 ? "unlabelled" : data.classes[g.label],
      h("span", { class: "muted" }, ` ${fmtInt(g.rows.length)}`));
  }));

  const ctx = canvas.getContext("2d", { alpha: false });
  const view = { scale: 1, tx: 0, ty: 0, w: 0, h: 0, base: 1 };
  let hovered = -1;
  let frame = 0;
  let stopped = false;

  function fit() {
    view.base = Math.min(view.w, view.h) * 0.94;
    view.scale = view.base;
    view.tx = (view.w - view.scale) / 2;
    view.ty = (view.h - view.scale) / 2;
  }

  function resize() {
    const width = Math.max(200, Math.floor(wrap.getBoundingClientRect().width));
    const height = Math.max(240, Math.min(Math.floor(window.innerHeight * 0.7), width));
    const dpr = window.devicePixelRatio || 1;
    const first = view.w === 0;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    view.w = width;
    view.h = height;
    if (first) fit();
    redraw();
  }

  function draw() {
    frame = 0;
    if (stopped) return;
    const t0 = performance.now();
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, view.w, view.h);
    // Larger points for small maps; they grow a little as one zooms in.
    const r0 = Math.min(4, Math.max(1.2, 5.5 - 0.9 * Math.log10(n + 1)));
    const r = Math.min(8, r0 * Math.sqrt(view.scale / view.base));
    const d = 2 * r;
    const { scale, tx, ty, w, h: height } = view;
    let drawn = 0;
    for (const g of groups) {
      ctx.fillStyle = colourOf(g.label);
      ctx.beginPath();
      const rows = g.rows;
      for (let j = 0; j < rows.length; j++) {
        const i = rows[j];
        const sx = xs[i] * scale + tx;
        const sy = ys[i] * scale + ty;
        if (sx < -d || sy < -d || sx > w + d || sy > height + d) continue;
        ctx.rect(sx - r, sy - r, d, d);
        drawn++;
      }
      ctx.fill();
    }
    if (hovered >= 0) {
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(xs[hovered] * scale + tx, ys[hovered] * scale + ty, r + 4, 0, 2 * Math.PI);
      ctx.stroke();
    }
    canvas.dataset.points = String(drawn);
    const stats = window.__mapStats;
    if (stats) {
      stats.drawMs.push(performance.now() - t0);
      if (stats.drawMs.length > 1000) stats.drawMs.shift();
      if (stats.firstDrawAt === undefined) stats.firstDrawAt = performance.now();
    }
  }

  function redraw() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function zoomAt(factor, sx, sy) {
    const next = Math.min(view.base * 400, Math.max(view.base * 0.5, view.scale * factor));
    const k = next / view.scale;
    view.tx = sx - (sx - view.tx) * k;
    view.ty = sy - (sy - view.ty) * k;
    view.scale = next;
    redraw();
  }

  // The point nearest to a screen position, within a few pixels.
  function pick(sx, sy) {
    const wx = (sx - view.tx) / view.scale;
    const wy = (sy - view.ty) / view.scale;
    const reach = 8 / view.scale;
    const c0 = Math.max(0, Math.floor((wx - reach) * GRID));
    const c1 = Math.min(GRID - 1, Math.floor((wx + reach) * GRID));
    const r0 = Math.max(0, Math.floor((wy - reach) * GRID));
    const r1 = Math.min(GRID - 1, Math.floor((wy + reach) * GRID));
    let best = -1;
    let bestD = reach * reach;
    for (let row = r0; row <= r1; row++) {
      for (let col = c0; col <= c1; col++) {
        const c = row * GRID + col;
        for (let k = index.counts[c]; k < index.counts[c + 1]; k++) {
          const i = index.order[k];
          const dx = xs[i] - wx;
          const dy = ys[i] - wy;
          const dd = dx * dx + dy * dy;
          if (dd <= bestD) { bestD = dd; best = i; }
        }
      }
    }
    return best;
  }

  function showTip(i) {
    if (i === hovered) return;
    hovered = i;
    redraw();
    if (i < 0) { tip.hidden = true; return; }
    const id = data.ids[i];
    const label = data.label[i] < 0 ? "unlabelled" : data.classes[data.label[i]];
    tipText.textContent = `${id} · ${label}`;
    tipImg.alt = id;
    tipImg.src = PLACEHOLDER;
    tip.hidden = false;
    const sx = xs[i] * view.scale + view.tx;
    const sy = ys[i] * view.scale + view.ty;
    tip.style.left = `${Math.min(view.w - 170, sx + 12)}px`;
    tip.style.top = `${Math.max(0, Math.min(view.h - 140, sy + 12))}px`;
    loadImage(tipImg, itemPath(version, "thumbnails", id, 96));
  }

  function open(i) {
    if (i < 0) return;
    location.hash = `#/explore?model=${encodeURIComponent(version)}` +
      `&item=${encodeURIComponent(data.ids[i])}`;
  }

  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty, moved: false };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    const rect = canvas.getBoundingClientRect();
    if (drag) {
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (drag.moved) {
        view.tx = drag.tx + dx;
        view.ty = drag.ty + dy;
        tip.hidden = true;
        hovered = -1;
        redraw();
        return;
      }
    }
    showTip(pick(e.clientX - rect.left, e.clientY - rect.top));
  });
  canvas.addEventListener("pointerup", (e) => {
    const rect = canvas.getBoundingClientRect();
    const wasClick = drag && !drag.moved;
    drag = null;
    if (wasClick) open(pick(e.clientX - rect.left, e.clientY - rect.top));
  });
  canvas.addEventListener("pointerleave", () => { if (!drag) showTip(-1); });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = canvas.getBoundingClientRect();
    zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });
  canvas.addEventListener("keydown", (e) => {
    const step = 40;
    const keys = {
      ArrowLeft: () => { view.tx += step; }, ArrowRight: () => { view.tx -= step; },
      ArrowUp: () => { view.ty += step; }, ArrowDown: () => { view.ty -= step; },
      "+": () => zoomAt(1.25, view.w / 2, view.h / 2),
      "=": () => zoomAt(1.25, view.w / 2, view.h / 2),
      "-": () => zoomAt(0.8, view.w / 2, view.h / 2),
      0: () => fit(),
      Enter: () => open(hovered >= 0 ? hovered : pick(view.w / 2, view.h / 2)),
    };
    const act = keys[e.key];
    if (!act) return;
    e.preventDefault();
    act();
    if (e.key !== "Enter") showTip(pick(view.w / 2, view.h / 2));
    redraw();
  });
  zoomIn.addEventListener("click", () => zoomAt(1.5, view.w / 2, view.h / 2));
  zoomOut.addEventListener("click", () => zoomAt(1 / 1.5, view.w / 2, view.h / 2));
  reset.addEventListener("click", () => { fit(); redraw(); });

  const observer = new ResizeObserver(() => resize());
  observer.observe(wrap);
  resize();
  // For benchmarks and tests: pan the view by (dx, dy) pixels.
  window.__mapPan = (dx, dy) => { view.tx += dx; view.ty += dy; redraw(); };
  return () => {
    stopped = true;
    observer.disconnect();
    if (frame) cancelAnimationFrame(frame);
    delete window.__mapPan;
  };
}
