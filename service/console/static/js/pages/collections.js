// Collections: every dataset this API serves, with its current model and figures; the landing
// page. Opening one makes it the collection every other page shows.
import { choose, loadCollections } from "../collections.js";
import { collection } from "../api.js";
import { clear, fmtInt, fmtLabelFree, fmtPercent, h } from "../ui.js";

function card(c) {
  const m = c.model;
  const open = () => {
    choose(c.name);
    location.hash = "#/models";
  };
  return h("li", { class: "card collection", dataset: { name: c.name } },
    h("h2", {}, c.name,
      c.name === collection() ? h("span", { class: "badge current" }, "shown") : null,
      c.default ? h("span", { class: "badge" }, "default") : null),
    h("dl", { class: "figures" },
      h("dt", {}, "Current model"), h("dd", {}, c.current_version
        ? h("code", {}, c.current_version) : "none"),
      h("dt", {}, "Items"), h("dd", { class: "num" }, fmtInt(c.item_count)),
      h("dt", {}, "kNN top-1"), h("dd", { class: "num", dataset: { figure: "knn" } },
        m ? fmtPercent(m.knn_top1) : "–"),
      h("dt", {}, "Raw pixels"), h("dd", { class: "num" }, m ? fmtPercent(m.pixel_knn_top1) : "–"),
      h("dt", {}, "Label-free: model / pixels"),
      h("dd", { class: "num", dataset: { figure: "label-free" } }, fmtLabelFree(m)),
      h("dt", {}, "Backbone"), h("dd", {}, (m && m.backbone) || "–")),
    c.images_problem ? h("p", { class: "problem", role: "status" }, c.images_problem) : null,
    h("p", {}, h("button", { type: "button", class: "small", onclick: open },
      `Open ${c.name}`)));
}

export async function render(main) {
  main.append(h("h1", {}, "Collections"));
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.append(box);
  const answer = await loadCollections();
  if (!answer.data.length) {
    clear(box, h("p", { class: "muted" }, "No collection yet: a collection appears when a ",
      "model of a dataset is published. ", h("a", { href: "#/datasets" }, "Add a dataset"),
      " and ", h("a", { href: "#/train" }, "train one"), "."));
    return;
  }
  clear(box, h("ul", { class: "collections", id: "collections-list" },
    answer.data.map(card)));
}
