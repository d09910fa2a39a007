// One project: its story bible (premise, genre, style, characters), outline and chapters.

import * as api from "../api.js";
import { clear, h, toast } from "../dom.js";
import { t } from "../i18n.js";
import { bookSection, planProgress, storyBibleForm } from "./book.js";
import { rewriteForm } from "./chapter.js";

// The book routes' chapter states, in the studio's words.
const BOOK_STATES = { outlined: "not_written", writing: "writing", awaiting_choice: "waiting", chosen: "chosen", stale: "stale" };

// not written / writing / waiting for a choice / chosen (/ failed), from the chapter's jobs and versions.
export function chapterState(chapter) {
  if (chapter.stale) return "stale";
  const job = chapter.jobs && chapter.jobs[0];
  if (job && ["pending", "running", "retrying"].includes(job.status)) return "writing";
  if (chapter.current_version_id) return "chosen";
  if (chapter.versions && chapter.versions.length) return "waiting";
  if (job && job.status === "failed") return "failed";
  return "not_written";
}

export function stateBadge(state) {
  return h("span.badge.state", { "data-state": state }, t(`state_${state}`));
}

export async function renderProject(root, { pid }) {
  const [project, features] = await Promise.all([api.getProject(pid), api.features()]);
  clear(root);
  const list = h("ol.chapter-list");
  const chaptersCard = h("section.card", h("h2", t("chapters_title")), list);
  const drawChapters = async () => {
    const [chapters, states] = await Promise.all([
      api.listChapters(pid),
      features.books ? api.bookChapters(pid).catch(() => []) : Promise.resolve([]),
    ]);
    const byNumber = new Map(states.map((s) => [s.number, s]));
    clear(list);
    for (const c of chapters) {
      const b = byNumber.get(c.index);
      const state = b ? BOOK_STATES[b.state] || b.state : chapterState(c);
      list.append(h("li.chapter-row", { "data-index": String(c.index) },
        h("a", { href: `#/projects/${pid}/chapters/${c.id}` }, `${t("chapter", { n: c.index })}${c.title ? ` · ${c.title}` : ""}`),
        stateBadge(state), h("span.muted.clip", b && b.stale_reason ? b.stale_reason : c.outline)));
    }
    if (!chapters.length) list.append(h("li.muted", t("chapters_empty")));
  };
  await drawChapters();
  const left = h("div", chaptersCard, rewriteForm(project, null));
  const right = h("div", bibleForm(project));
  root.append(h("div.page-head", h("h1", project.title)), h("div.two", left, right));
  const stops = [];
  if (features.books) {
    const section = await bookSection(project, { onChange: drawChapters });
    stops.push(section.stop);
    left.append(section.el);
    const drawBible = async () => {
      if (!features.bible) return;
      const form = await storyBibleForm(project, () => { drawChapters(); section.refresh(); }).catch(() => null);
      const old = right.querySelector(".story-bible");
      if (form && old) old.replaceWith(form);
      else if (form) right.append(form);
    };
    await drawBible();
    const planJob = sessionStorage.getItem(`storyloom.plan.${pid}`);
    if (planJob) {
      const plan = planProgress(planJob, async () => {
        sessionStorage.removeItem(`storyloom.plan.${pid}`);
        await drawChapters();
        await section.refresh();
        await drawBible();
      });
      stops.push(plan.stop);
      left.prepend(plan.el);
    }
  }
  return () => stops.forEach((f) => f());
}

function bibleForm(project) {
  const field = (name, label, tag = "input", attrs = {}) => {
    const el = h(tag, { name, ...attrs }, tag === "textarea" ? project[name] : null);
    if (tag !== "textarea") el.value = project[name] || "";
    return { el, wrap: h("label", label, el) };
  };
  const title = field("title", t("project_title"), "input", { required: true, maxlength: 300 });
  const premise = field("premise", t("project_premise"), "textarea", { rows: 4, maxlength: 20000 });
  const genre = field("genre", t("project_genre"), "input", { maxlength: 100 });
  const style = field("style", t("project_style"), "input", { maxlength: 1000 });
  const outline = field("outline", t("outline_title"), "textarea", { rows: 8, maxlength: 20000 });
  const people = h("div.characters");
  const addPerson = (c = {}) => {
    const f = (k, label, tag = "input") => {
      const el = h(tag, { name: k, "data-field": k }, tag === "textarea" ? (c[k] || "") : null);
      if (tag !== "textarea") el.value = k === "traits" ? (c.traits || []).join(", ") : (c[k] || "");
      return h("label", label, el);
    };
    const card = h("fieldset.character", h("legend", t("bible_characters")),
      h("div.row", f("name", t("character_name")), f("role", t("character_role"))),
      f("traits", t("character_traits")), f("background", t("character_background"), "textarea"), f("goals", t("character_goals")),
      h("button.ghost", { type: "button", onclick: () => card.remove() }, t("character_remove")));
    people.append(card);
  };
  for (const c of project.characters || []) addPerson(c);
  const form = h("form.card.bible", {
    onsubmit: async (e) => {
      e.preventDefault();
      const characters = [...people.querySelectorAll("fieldset")].map((fs) => {
        const v = (k) => fs.querySelector(`[data-field=${k}]`).value.trim();
        return { name: v("name"), role: v("role"), traits: v("traits").split(/[,，、]/).map((x) => x.trim()).filter(Boolean), background: v("background"), goals: v("goals") };
      }).filter((c) => c.name);
      try {
        await api.updateProject(project.id, {
          title: title.el.value, premise: premise.el.value, genre: genre.el.value, style: style.el.value,
          outline: outline.el.value, characters,
        });
        toast(t("project_saved"));
      } catch (err) {
        toast(t("error", { msg: err.message }), "error");
      }
    },
  }, h("h2", t("bible_title")), title.wrap, premise.wrap, h("div.row", genre.wrap, style.wrap),
  h("h3", t("bible_characters")), people,
  h("button.ghost", { type: "button", onclick: () => addPerson() }, t("character_add")),
  h("h3", t("outline_title")), h("p.small.muted", t("outline_help")), outline.wrap,
  h("div.actions", h("button.primary", { type: "submit" }, t("save")),
    h("button.danger", { type: "button", onclick: async () => {
      if (!confirm(t("project_delete_confirm"))) return;
      await api.deleteProject(project.id);
      location.hash = "#/projects";
    } }, t("project_delete"))));
  return form;
}
