// Train: a dataset and a config form built from GET /config (the same keys, defaults and
// meanings as `python -m trainer config`). Only changed keys are sent; the API's
// validation errors are shown at their field.
import { api } from "../api.js";
import { h, hideProblem, showProblem } from "../ui.js";

// The keys most runs change, shown first; the rest are under "All settings".
const MAIN_KEYS = ["backbone", "image_size", "rounds", "epochs_per_round", "batch_size", "lr",
  "anchor_rate", "neighbours", "crop_scale_min", "color_jitter", "grayscale_p", "knn_k",
  "seed"];

function inputFor(key, info) {
  const id = `cfg-${key}`;
  const common = { id, name: key, "aria-describedby": `${id}-help ${id}-error` };
  const d = info.default;
  if (typeof d === "boolean") {
    const box = h("input", { ...common, type: "checkbox" });
    box.checked = d;
    return box;
  }
  if (typeof d === "number") {
    return h("input", { ...common, type: "number", step: "any", value: String(d),
      inputmode: "decimal" });
  }
  if (Array.isArray(d)) {
    return h("input", { ...common, type: "text", value: JSON.stringify(d), spellcheck: "false" });
  }
  return h("input", { ...common, type: "text", value: String(d ?? ""), spellcheck: "false" });
}

// The value a field holds, in the type of its default; undefined when unchanged.
function changedValue(input, info) {
  const d = info.default;
  if (typeof d === "boolean") return input.checked === d ? undefined : input.checked;
  const raw = input.value.trim();
  if (typeof d === "number") {
    if (raw === "") return undefined;
    const n = Number(raw);
    if (!Number.isFinite(n)) return raw; // let the API say what is wrong with it
    return n === d ? undefined : n;
  }
  if (Array.isArray(d)) {
    try {
      const parsed = JSON.parse(raw);
      return JSON.stringify(parsed) === JSON.stringify(d) ? undefined : parsed;
    } catch (_) {
      return raw;
    }
  }
  return raw === String(d ?? "") ? undefined : raw;
}

function field(key, info) {
  const id = `cfg-${key}`;
  const input = inputFor(key, info);
  const error = h("small", { id: `${id}-error`, class: "field-error", role: "alert" });
  const wrap = h("div", { class: typeof info.default === "boolean" ? "field check" : "field",
    dataset: { key } },
  h("label", { for: id }, key), input,
  h("small", { id: `${id}-help`, class: "muted" },
    `${info.doc} (default ${JSON.stringify(info.default)})`),
  error);
  return { key, info, input, error, wrap };
}

export async function render(main, route) {
  const [datasets, docs] = await Promise.all([api("/datasets"), api("/config")]);
  const wanted = route.params.get("dataset");
  main.append(h("h1", {}, "Train a model"));
  if (!datasets.data.length) {
    main.append(h("p", {}, "No dataset yet. ", h("a", { href: "#/datasets" }, "Upload one"),
      " first."));
    return;
  }
  const select = h("select", { id: "train-dataset", name: "dataset" },
    datasets.data.map((d) => h("option", { value: d.name, selected: d.name === wanted },
      `${d.name} (${d.items} images${d.labelled ? `, ${d.classes.length} classes` : ""})`)));
  const promote = h("select", { id: "train-promote", name: "promote" },
    h("option", { value: "gate", selected: true },
      "Current only if it beats the current model (or raw pixels) by more than the noise"),
    h("option", { value: "always" }, "Current whatever it measures"),
    h("option", { value: "never" }, "Never current: a candidate to promote by hand"));
  const fields = Object.entries(docs).map(([key, info]) => field(key, info));
  const byKey = new Map(fields.map((f) => [f.key, f]));
  const main_ = MAIN_KEYS.filter((k) => byKey.has(k)).map((k) => byKey.get(k));
  const rest = fields.filter((f) => !MAIN_KEYS.includes(f.key));
  const problem = h("div", { id: "train-problem" });
  const submit = h("button", { type: "submit", id: "train-submit" }, "Start training");

  const form = h("form", { id: "train-form", novalidate: true, onsubmit: async (event) => {
    event.preventDefault();
    hideProblem(problem);
    for (const f of fields) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
    const config = {};
    for (const f of fields) {
      const value = changedValue(f.input, f.info);
      if (value !== undefined) config[f.key] = value;
    }
    submit.disabled = true;
    try {
      const job = await api("/train", { method: "POST",
        body: { dataset: select.value, config, promote: promote.value } });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      showProblem(problem, error);
      let first = null;
      for (const e of error.errors || []) {
        const loc = e.loc || [];
        const key = loc[0] === "config" ? loc[1] : loc[loc.length - 1];
        const f = byKey.get(key);
        if (f) {
          f.error.textContent = e.msg || error.detail;
          f.input.setAttribute("aria-invalid", "true");
          if (!first) first = f;
        }
      }
      if (first) {
        if (!main_.includes(first)) form.querySelector("details").open = true;
        first.input.focus();
      }
    } finally {
      submit.disabled = false;
    }
  } },
  h("div", { class: "card" },
    h("div", { class: "field" }, h("label", { for: "train-dataset" }, "Dataset"), select),
    h("div", { class: "field" }, h("label", { for: "train-promote" },
      "When the job succeeds, its model becomes"), promote)),
  h("fieldset", { class: "card grid-fields" }, h("legend", {}, "Main settings"),
    main_.map((f) => f.wrap)),
  h("details", { class: "card" }, h("summary", {}, `All settings (${rest.length} more)`),
    h("div", { class: "grid-fields" }, rest.map((f) => f.wrap))),
  problem,
  h("div", { class: "actions" }, submit));
  main.append(h("p", { class: "muted" }, "Defaults are the paper's CIFAR-10 schedule; ",
    "a small run on a CPU: backbone small_cnn, a few rounds of a few epochs."), form);
}
