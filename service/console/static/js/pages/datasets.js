// Datasets: the list, an archive upload with a progress bar, registering a folder.
import { api, upload } from "../api.js";
import { clear, fmtInt, h, hideProblem, showProblem } from "../ui.js";

const NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}";

// What a new dataset holds, said once the upload or registration succeeded; a layout that
// lost its labels to a few loose files says so (layout_note).
function madeText(verb, made) {
  return `${verb} ${made.name}: ${fmtInt(made.items)} images` +
    (made.labelled ? `, ${made.classes.length} classes` : ", unlabelled") +
    (made.ignored_files ? `, ${made.ignored_files} other files ignored` : "") + "." +
    (made.layout_note ? ` Note: ${made.layout_note}.` : "");
}

function classesText(d) {
  if (!d.labelled) return d.layout_note ? "unlabelled (images outside class folders)" : "unlabelled";
  const shown = d.classes.slice(0, 6).join(", ");
  return `${d.classes.length} (${shown}${d.classes.length > 6 ? ", …" : ""})`;
}

function table(datasets) {
  if (!datasets.length) {
    return h("p", { class: "muted" }, "No datasets yet: upload an archive below.");
  }
  return h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "sr-only" }, "Datasets"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Name"), h("th", { scope: "col", class: "num" }, "Items"),
      h("th", { scope: "col", class: "num" }, "Train"),
      h("th", { scope: "col", class: "num" }, "Eval"),
      h("th", { scope: "col" }, "Classes"), h("th", { scope: "col" }, "Splits"),
      h("th", { scope: "col" }, ""))),
    h("tbody", {}, datasets.map((d) => h("tr", { dataset: { name: d.name } },
      h("th", { scope: "row" }, d.name),
      h("td", { class: "num" }, fmtInt(d.items)),
      h("td", { class: "num" }, fmtInt(d.train_items)),
      h("td", { class: "num" }, fmtInt(d.eval_items)),
      h("td", d.layout_note ? { title: d.layout_note } : {}, classesText(d)),
      h("td", {}, Object.entries(d.splits).map(([s, n]) => `${s} ${fmtInt(n)}`).join(", ")),
      h("td", {}, h("a", { href: `#/train?dataset=${encodeURIComponent(d.name)}` },
        `Train on ${d.name}`), " · ",
      h("a", { href: `#/retrain?dataset=${encodeURIComponent(d.name)}` }, "Retrain policy")))))));
}

export async function render(main) {
  const listBox = h("div", { id: "dataset-list" }, h("p", { class: "muted" }, "Loading…"));
  const listProblem = h("div");
  const refresh = async () => {
    try {
      const found = await api("/datasets");
      hideProblem(listProblem);
      clear(listBox, table(found.data));
    } catch (error) {
      clear(listBox);
      showProblem(listProblem, error);
    }
  };

  // --- upload ------------------------------------------------------------------------
  const name = h("input", { id: "upload-name", name: "name", required: true,
    pattern: NAME_PATTERN, autocomplete: "off", "aria-describedby": "upload-name-help" });
  const file = h("input", { id: "upload-file", name: "file", type: "file", required: true,
    accept: ".zip,.tar,.tgz,.gz,.bz2,.xz,application/zip,application/x-tar" });
  const bar = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true,
    "aria-label": "Upload progress" });
  const uploadProblem = h("div", { id: "upload-problem" });
  const uploadDone = h("p", { id: "upload-done", class: "ok", role: "status" });
  const button = h("button", { type: "submit" }, "Upload");
  file.addEventListener("change", () => {
    if (!name.value && file.files.length) {
      name.value = file.files[0].name.split(".")[0].replace(/[^A-Za-z0-9._-]/g, "-")
        .replace(/^[^A-Za-z0-9]+/, "").slice(0, 64);
    }
  });
  const uploadForm = h("form", { id: "upload-form", class: "card", novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      hideProblem(uploadProblem);
      uploadDone.textContent = "";
      if (!file.files.length || !name.value.trim()) {
        showProblem(uploadProblem, new Error("Choose an archive and give the dataset a name."));
        return;
      }
      const form = new FormData();
      form.append("name", name.value.trim());
      form.append("file", file.files[0]);
      bar.hidden = false;
      bar.value = 0;
      button.disabled = true;
      try {
        const made = await upload("/datasets", form, (share) => { bar.value = share; });
        bar.value = 1;
        uploadDone.textContent = madeText("Dataset", made);
        uploadForm.reset();
        await refresh();
      } catch (error) {
        showProblem(uploadProblem, error);
      } finally {
        button.disabled = false;
        bar.hidden = true;
      }
    } },
  h("h2", {}, "Upload an archive"),
  h("p", { class: "muted small" }, "A .zip or .tar(.gz) of images. Class folders give labels; ",
    h("code", {}, "train/"), " and ", h("code", {}, "test/"), " folders give splits."),
  h("div", { class: "field" }, h("label", { for: "upload-file" }, "Archive"), file),
  h("div", { class: "field" }, h("label", { for: "upload-name" }, "Name"), name,
    h("small", { id: "upload-name-help", class: "muted" },
      "Letters, digits, . _ - (up to 64), starting with a letter or digit.")),
  h("div", { class: "actions" }, button, bar),
  uploadProblem, uploadDone);

  // --- register a folder ---------------------------------------------------------------
  const regName = h("input", { id: "register-name", required: true, pattern: NAME_PATTERN,
    autocomplete: "off" });
  const regPath = h("input", { id: "register-path", autocomplete: "off",
    placeholder: "imports/shelf", "aria-describedby": "register-path-help" });
  const regProblem = h("div", { id: "register-problem" });
  const regDone = h("p", { id: "register-done", class: "ok", role: "status" });
  const registerForm = h("form", { id: "register-form", class: "card", novalidate: true,
    onsubmit: async (event) => {
      event.preventDefault();
      hideProblem(regProblem);
      regDone.textContent = "";
      const body = { name: regName.value.trim() };
      if (regPath.value.trim()) body.path = regPath.value.trim();
      try {
        const made = await api("/datasets", { method: "POST", body });
        regDone.textContent = madeText("Registered", made);
        registerForm.reset();
        await refresh();
      } catch (error) {
        showProblem(regProblem, error);
      }
    } },
  h("h2", {}, "Register a folder"),
  h("div", { class: "field" }, h("label", { for: "register-name" }, "Name"), regName),
  h("div", { class: "field" }, h("label", { for: "register-path" }, "Path under the data root"),
    regPath, h("small", { id: "register-path-help", class: "muted" },
      "A folder or archive already on the server, relative to DATA_ROOT (default: the name).")),
  h("div", { class: "actions" }, h("button", { type: "submit" }, "Register")),
  regProblem, regDone);

  main.append(h("h1", {}, "Datasets"), listProblem, listBox,
    h("div", { class: "two" }, uploadForm, registerForm));
  await refresh();
}
