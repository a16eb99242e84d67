// A dataset's retrain policy: what it would do now, and a form to set it.
import { api } from "../api.js";
import { clear, fmtPercent, fmtTime, h, hideProblem, showProblem } from "../ui.js";

function statusList(s) {
  const job = s.last_job
    ? h("a", { href: `#/jobs/${encodeURIComponent(s.last_job)}` }, s.last_job.slice(0, 8)) : null;
  return h("dl", { class: "stats", id: "retrain-status" },
    h("div", {}, h("dt", {}, "Current model"), h("dd", {}, s.current_version || "–")),
    h("div", {}, h("dt", {}, "Changed since its training"),
      h("dd", {}, `${s.changed} of ${s.items} (${fmtPercent(s.fraction)})`)),
    h("div", {}, h("dt", {}, "Due"), h("dd", { id: "retrain-due" }, s.due ? "yes" : "no")),
    h("div", {}, h("dt", {}, "Last retrain"),
      h("dd", {}, ...(s.last_job ? [job, " ", fmtTime(s.last_enqueued_at)] : ["none yet"]))));
}

export async function render(main, route) {
  const dataset = route.params.get("dataset") || "";
  main.append(h("h1", {}, "Retrain policy of ", h("code", {}, dataset)));
  const problem = h("div", { id: "retrain-problem" });
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const enabled = h("input", { id: "retrain-enabled", type: "checkbox" });
  const share = h("input", { id: "retrain-share", type: "number", min: "0.1", max: "100",
    step: "0.1", required: true });
  const backoff = h("input", { id: "retrain-backoff", type: "number", min: "0", step: "1",
    required: true });
  const config = h("textarea", { id: "retrain-config", rows: 3, spellcheck: false });
  const saved = h("p", { id: "retrain-saved", class: "ok", role: "status" });

  const show = (s) => {
    enabled.checked = s.enabled;
    share.value = String(+(100 * s.changed_fraction).toFixed(2));
    backoff.value = String(s.backoff_s);
    config.value = JSON.stringify(s.config);
    clear(box, statusList(s), h("p", { class: "muted", id: "retrain-reason" }, s.reason));
  };
  const form = h("form", { id: "retrain-form", class: "card", novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      hideProblem(problem);
      saved.textContent = "";
      let parsed;
      try {
        parsed = JSON.parse(config.value || "{}");
      } catch (_) {
        showProblem(problem, new Error("The config is not valid JSON."));
        return;
      }
      try {
        show(await api(`/datasets/${encodeURIComponent(dataset)}/retrain`, { method: "PUT",
          body: { enabled: enabled.checked, changed_fraction: Number(share.value) / 100,
            backoff_s: Number(backoff.value), config: parsed } }));
        saved.textContent = "Saved.";
      } catch (error) {
        showProblem(problem, error);
      }
    } },
  h("div", { class: "field check" }, enabled,
    h("label", { for: "retrain-enabled" }, "Retrain when enough of the collection has changed")),
  h("div", { class: "field narrow" }, h("label", { for: "retrain-share" },
    "Changed share of the current model's items that starts a retrain (%)"), share),
  h("div", { class: "field" }, h("label", { for: "retrain-config" },
    "Config overrides of the retrain job (JSON; it starts from the current model)"), config),
  h("div", { class: "field narrow" }, h("label", { for: "retrain-backoff" },
    "Wait after a failed retrain (s)"), backoff),
  h("button", { type: "submit", id: "retrain-submit" }, "Save policy"), saved);
  main.append(h("p", { class: "muted" }, "A retrain is a job warm-started from the current ",
    "model; the promotion gate decides whether its model replaces the current one."),
  problem, box, form);
  show(await api(`/datasets/${encodeURIComponent(dataset)}/retrain`));
}
