// The projects list, and a new project from a premise.

import * as api from "../api.js";
import { clear, fmtTime, h, toast } from "../dom.js";
import { getLang, t } from "../i18n.js";

export async function renderProjects(root) {
  const projects = await api.listProjects();
  clear(root);
  const list = h("ul.project-list");
  for (const p of projects) {
    list.append(h("li.card", h("a.project-link", { href: `#/projects/${p.id}` }, h("h2", p.title)),
      h("p.muted", p.premise.slice(0, 200)), h("p.small", `${p.language} · ${fmtTime(p.updated_at)}`)));
  }
  root.append(h("div.page-head", h("h1", t("projects_title"))),
    h("div.two", newProjectForm(), projects.length ? list : h("p.muted.empty", t("projects_empty"))));
}

function newProjectForm() {
  const title = h("input", { name: "title", required: true, maxlength: 300 });
  const premise = h("textarea", { name: "premise", rows: 5, maxlength: 20000 });
  const genre = h("input", { name: "genre", maxlength: 100 });
  const language = h("select", { name: "language" },
    h("option", { value: "zh", selected: getLang() === "zh" }, "中文"),
    h("option", { value: "en", selected: getLang() === "en" }, "English"));
  const form = h("form.card.new-project", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const p = await api.createProject({ title: title.value, premise: premise.value, genre: genre.value, language: language.value });
        toast(t("project_created"));
        location.hash = `#/projects/${p.id}`;
      } catch (err) {
        toast(t("error", { msg: err.message }), "error");
      }
    },
  }, h("h2", t("project_new")),
  h("label", t("project_title"), title),
  h("label", t("project_premise"), premise),
  h("div.row", h("label", t("project_genre"), genre), h("label", t("project_language"), language)),
  h("button.primary", { type: "submit" }, t("project_create")));
  return form;
}
