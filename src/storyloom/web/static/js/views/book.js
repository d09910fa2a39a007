// The book's parts of a project, shown only when the server has the book routes (`/api/books`):
// outline (generated, editable), story bible, book runs (k..n with progress, ETA, cost against the
// cap, pause / resume / cancel), stale chapters and their regeneration, export, and on a chapter
// page: editing the chosen text and rewriting a selected passage.

import * as api from "../api.js";
import { fill, fmtCost, fmtNum, fmtSecs, h, onFrame, toast } from "../dom.js";
import { t } from "../i18n.js";
import { track } from "../live.js";

const ACTIVE_RUN = new Set(["running", "waiting", "paused"]);

function fail(err) {
  toast(t("error", { msg: err.message }), "error");
}

// -- a new book from a premise (bible + outline generated) -------------------------------------------

export function bookFields() {
  const chapters = h("input", { type: "number", name: "chapters", min: 1, max: 500, value: 10 });
  const generate = h("input", { type: "checkbox", name: "generate", checked: true });
  return {
    el: h("div.row", h("label", t("book_chapters"), chapters), h("label.check", generate, " ", t("book_generate"))),
    read: () => ({ chapters: Number(chapters.value), generate: generate.checked }),
  };
}

// -- the project page's book section ----------------------------------------------------------

export async function bookSection(project, { onChange }) {
  const el = h("div.book");
  const stops = [];
  const runs = h("section.card.runs", { "aria-label": t("runs_title") });
  const stale = h("section.card.stale");
  const outline = h("section.card.outline-section");
  const exportBox = h("section.card.export", h("h2", t("export_title")),
    h("div.actions", ["md", "txt", "epub"].map((f) => h("button.ghost", { type: "button", "data-export": f, onclick: async (e) => {
      e.target.disabled = true;
      try {
        await api.downloadExport(project.id, f);
      } catch (err) {
        fail(err);
      } finally {
        e.target.disabled = false;
      }
    } }, f.toUpperCase()))));
  el.append(runs, stale, outline, exportBox);

  const drawRuns = async () => {
    let list = [];
    try {
      list = await api.listRuns(project.id);
    } catch (err) {
      fill(runs, h("p.error", t("error", { msg: err.message })));
      return false;
    }
    fill(runs, h("h2", t("runs_title")), runForm(project, drawRuns), h("ol.run-list", list.map((r) => runRow(project, r, drawRuns))));
    return list.some((r) => ACTIVE_RUN.has(r.status));
  };
  const drawStale = async () => {
    const list = await api.staleChapters(project.id).catch(() => []);
    fill(stale, h("h2", t("stale_title")), list.length
      ? [h("ul", list.map((c) => h("li", { "data-stale": String(c.number) }, `${t("chapter", { n: c.number })}: ${c.stale_reason || ""}`))),
        h("button.primary", { type: "button", "data-regenerate": "1", onclick: async (e) => {
          e.target.disabled = true;
          try {
            await api.regenerate(project.id, { from_chapter: list[0].number, versions: 2, chooser: "judge" });
            await drawRuns();
            onChange();
          } catch (err) {
            e.target.disabled = false;
            fail(err);
          }
        } }, t("stale_regenerate", { n: list[0].number }))]
      : h("p.muted", t("stale_none")));
  };
  const drawOutline = async () => {
    // The outline is the book's chapter rows (number, title, summary), as the book routes keep it.
    const rows = await api.listChapters(project.id).catch(() => []);
    const chapters = rows.map((c) => ({ number: c.index, title: c.title, summary: c.outline }));
    fill(outline, h("h2", t("outline_chapters")), chapters.length
      ? h("ol.outline-list", chapters.map((c) => outlineRow(project, c, async () => { await drawOutline(); await drawStale(); onChange(); })))
      : h("p.muted", t("outline_none")));
  };
  await Promise.all([drawRuns(), drawStale(), drawOutline()]);
  // Live while a run is active: its state is read again every 2 s (the run moves from one chapter
  // job to the next, so a single job's stream would not show all of it).
  const timer = setInterval(async () => {
    if (document.visibilityState !== "visible") return;
    const active = runs.querySelector("[data-run-state='running'],[data-run-state='waiting']");
    if (active) {
      await drawRuns();
      await drawStale();
      onChange();
    }
  }, 2000);
  stops.push(() => clearInterval(timer));
  return { el, stop: () => stops.forEach((f) => f()), refresh: () => Promise.all([drawOutline(), drawStale()]) };
}

function runForm(project, redraw) {
  const first = h("input", { type: "number", name: "first", min: 1, max: 100000, value: 1, required: true });
  const last = h("input", { type: "number", name: "last", min: 1, max: 100000, value: 3, required: true });
  const versions = h("input", { type: "number", name: "versions", min: 1, max: 10, value: 2 });
  const chooser = h("select", { name: "chooser" }, h("option", { value: "judge" }, t("run_chooser_judge")), h("option", { value: "author" }, t("run_chooser_author")));
  const cap = h("input", { type: "number", name: "cost_cap_usd", min: 0, step: "0.01", placeholder: "∞" });
  return h("form.run-form", { onsubmit: async (e) => {
    e.preventDefault();
    const body = { first: Number(first.value), last: Number(last.value), versions: Number(versions.value), chooser: chooser.value };
    if (cap.value) body.cost_cap_usd = Number(cap.value);
    try {
      await api.startRun(project.id, body);
      await redraw();
    } catch (err) {
      fail(err);
    }
  } }, h("div.row", h("label", t("run_first"), first), h("label", t("run_last"), last), h("label", t("chapter_versions"), versions),
    h("label", t("run_chooser"), chooser), h("label", t("run_cap"), cap)),
  h("button.primary", { type: "submit" }, t("run_start")));
}

function runRow(project, r, redraw) {
  const pct = r.of ? Math.round((100 * r.done) / r.of) : 0;
  const act = (action) => h("button.ghost", { type: "button", "data-action": action, onclick: async (e) => {
    e.target.disabled = true;
    try {
      await api.runAction(project.id, r.id, action);
      await redraw();
    } catch (err) {
      e.target.disabled = false;
      fail(err);
    }
  } }, t(`run_${action}`));
  const capped = r.cost_cap_usd ? `${fmtCost(r.cost_usd)} / ${fmtCost(r.cost_cap_usd)}` : fmtCost(r.cost_usd);
  return h("li.run", { "data-run": r.id, "data-run-state": r.status },
    h("div.run-head", h("strong", `${r.first}–${r.last}`), h("span.badge", { "data-state": r.status }, t(`run_st_${r.status}`) ),
      r.chapter ? h("span", t("run_at", { n: r.chapter })) : null),
    h("progress", { max: 100, value: pct, "aria-label": `${pct}%` }),
    h("div.small.muted", `${r.done}/${r.of} · ETA ${r.eta_s === null || r.eta_s === undefined ? "–" : fmtSecs(r.eta_s)} · ${fmtNum(r.tokens)} ${t("tokens")} · ${capped}`),
    r.stop_reason ? h("p.warn", t("run_stopped", { why: r.stop_reason })) : null,
    r.error ? h("p.error", r.error) : null,
    h("div.actions", r.status === "running" || r.status === "waiting" ? act("pause") : null,
      r.status === "paused" ? act("resume") : null, ACTIVE_RUN.has(r.status) ? act("cancel") : null));
}

function outlineRow(project, c, saved) {
  const title = h("input", { name: "title", value: c.title || "" });
  const summary = h("textarea", { name: "summary", rows: 2 }, c.summary || "");
  const form = h("form.outline-edit", { hidden: true, onsubmit: async (e) => {
    e.preventDefault();
    try {
      await api.saveOutlineChapter(project.id, c.number, { title: title.value, summary: summary.value });
      toast(t("project_saved"));
      await saved();
    } catch (err) {
      fail(err);
    }
  } }, h("label", t("project_title"), title), h("label", t("outline_summary"), summary), h("button.primary", { type: "submit" }, t("save")));
  return h("li.outline-row", { "data-number": String(c.number) },
    h("div", h("strong", `${c.number}. ${c.title || ""}`), " ", h("button.ghost.small", { type: "button", onclick: () => { form.hidden = !form.hidden; } }, t("edit"))),
    h("p.small", c.summary || ""), form);
}

// -- the planning job (bible + outline) of a new book ---------------------------------------------

export function planProgress(jobId, onDone) {
  const status = h("span.badge", t("st_pending"));
  const steps = h("ol.timeline.steps");
  const rows = new Map();
  const el = h("section.card.plan-job", h("h2", t("book_planning"), " ", status), steps);
  let state = null;
  const render = () => {
    status.textContent = t(`st_${state.status}`);
    status.dataset.state = state.status;
    for (const path of state.order) {
      const s = state.steps[path];
      if (!rows.has(path)) {
        const row = h("li.agent.step", { "data-step": path }, h("span.dot"), h("span.name", path), h("span.st"), h("span.num.elapsed"));
        rows.set(path, row);
        steps.append(row);
      }
      const row = rows.get(path);
      row.dataset.state = s.status;
      row.querySelector(".st").textContent = t(`st_${s.status}`);
      row.querySelector(".elapsed").textContent = fmtSecs(s.elapsed);
    }
  };
  const stop = track(jobId, (s) => {
    state = s;
    onFrame(`plan.${jobId}`, render);
  }, { onEnd: () => onDone() });
  return { el, stop };
}

// -- a chapter page: edit the chosen text, rewrite a passage ----------------------------------------

export function chapterEditor(project, chapter, onSaved, { rewrite: canRewrite = false } = {}) {
  const text = h("textarea.chapter-edit", { name: "text", rows: 16, "aria-label": t("chapter_text") });
  text.value = chapter.text || "";
  const instruction = h("input", { name: "instruction", placeholder: t("rewrite_placeholder") });
  const candidates = h("div.candidates");
  const selection = h("span.small.muted", t("rewrite_select"));
  const range = { start: 0, end: 0 };
  const onSelect = () => {
    range.start = text.selectionStart;
    range.end = text.selectionEnd;
    selection.textContent = range.end > range.start ? t("rewrite_selected", { n: range.end - range.start }) : t("rewrite_select");
  };
  text.addEventListener("select", onSelect);
  text.addEventListener("keyup", onSelect);
  text.addEventListener("mouseup", onSelect);
  let stop = () => {};
  const rewrite = async () => {
    if (range.end <= range.start) {
      toast(t("rewrite_select"), "error");
      return;
    }
    try {
      // The server counts characters (code points); the textarea counts UTF-16 units.
      const points = (i) => Array.from(text.value.slice(0, i)).length;
      const job = await api.rewritePassage(project.id, chapter.number, { start: points(range.start), end: points(range.end), instruction: instruction.value || "—", candidates: 3 });
      fill(candidates, h("p.muted", t("st_running")));
      stop = track(job.id, () => {}, { onEnd: async () => {
        const done = await api.getJob(job.id);
        const result = done.result && (done.result.result || done.result);
        const list = (result && result.candidates) || [];
        if (done.status !== "completed" || !list.length) {
          fill(candidates, h("p.error", done.error || t("rewrite_none")));
          return;
        }
        fill(candidates, h("ol.candidate-list", list.map((c, i) => h("li.candidate", { "data-candidate": String(i + 1) },
          h("div.passage", c.passage || c.text),
          h("button.primary", { type: "button", onclick: async () => {
            try {
              await api.acceptRewrite(project.id, chapter.number, job.id, i + 1);
              toast(t("rewrite_accepted"));
              onSaved();
            } catch (err) {
              fail(err);
            }
          } }, t("rewrite_accept"))))));
      } });
    } catch (err) {
      fail(err);
    }
  };
  const el = h("section.card.editor", h("h2", t("edit_title")), text,
    h("div.actions", h("button.primary", { type: "button", "data-save-text": "1", onclick: async () => {
      try {
        await api.saveChapterText(project.id, chapter.number, text.value);
        toast(t("project_saved"));
        onSaved();
      } catch (err) {
        fail(err);
      }
    } }, t("save")), canRewrite ? selection : null),
    canRewrite ? [h("h3", t("rewrite_title")), h("div.row", h("label", t("rewrite_instruction"), instruction)),
      h("button.ghost", { type: "button", "data-rewrite": "1", onclick: rewrite }, t("rewrite_go")), candidates] : null);
  return { el, stop: () => stop() };
}

// -- the story bible (world, characters, style) as forms -------------------------------------------

const lines = (v) => (v || []).join("\n");
const unlines = (v) => v.split("\n").map((x) => x.trim()).filter(Boolean);

export async function storyBibleForm(project, onSaved) {
  const bible = await api.getBible(project.id);
  const area = (value, attrs = {}) => {
    const el = h("textarea", { rows: 3, ...attrs });
    el.value = value || "";
    return el;
  };
  const input = (value, attrs = {}) => {
    const el = h("input", attrs);
    el.value = value || "";
    return el;
  };
  const setting = area(bible.world && bible.world.setting, { name: "world_setting" });
  const rules = area(lines(bible.world && bible.world.rules), { name: "world_rules" });
  const style = bible.style || {};
  const person = input(style.person, { name: "style_person" });
  const tense = input(style.tense, { name: "style_tense" });
  const tone = input(style.tone, { name: "style_tone" });
  const banned = area(lines(style.banned_phrases), { name: "style_banned" });
  const people = h("div.characters");
  const addPerson = (c = {}) => {
    const f = (k, label, value, tag = "input") => {
      const el = tag === "textarea" ? area(value, { "data-field": k, rows: 2 }) : input(value, { "data-field": k });
      return h("label", label, el);
    };
    const card = h("fieldset.character", { "data-extra": JSON.stringify({ relationships: c.relationships || [] }) },
      h("legend", c.name || t("bible_characters")),
      h("div.row", f("name", t("character_name"), c.name), f("role", t("character_role"), c.role)),
      f("traits", t("character_traits"), (c.traits || []).join(", ")), f("goals", t("character_goals"), c.goals),
      f("arc", t("character_arc"), c.arc, "textarea"), f("voice", t("character_voice"), c.voice),
      h("button.ghost", { type: "button", onclick: () => card.remove() }, t("character_remove")));
    people.append(card);
  };
  for (const c of bible.characters || []) addPerson(c);
  const form = h("form.card.story-bible", { onsubmit: async (e) => {
    e.preventDefault();
    const characters = [...people.querySelectorAll("fieldset")].map((fs) => {
      const v = (k) => fs.querySelector(`[data-field=${k}]`).value.trim();
      return { ...JSON.parse(fs.dataset.extra), name: v("name"), role: v("role"), goals: v("goals"), arc: v("arc"), voice: v("voice"),
        traits: v("traits").split(/[,，、]/).map((x) => x.trim()).filter(Boolean) };
    }).filter((c) => c.name);
    const next = { ...bible, world: { ...(bible.world || {}), setting: setting.value, rules: unlines(rules.value) }, characters,
      style: { ...style, person: person.value, tense: tense.value, tone: tone.value, banned_phrases: unlines(banned.value) } };
    try {
      await api.saveBible(project.id, next);
      toast(t("project_saved"));
      onSaved();
    } catch (err) {
      fail(err);
    }
  } }, h("h2", t("story_bible")), h("p.small.muted", t("story_bible_help")),
  h("h3", t("bible_world")), h("label", t("bible_setting"), setting), h("label", t("bible_rules"), rules),
  h("h3", t("bible_characters")), people, h("button.ghost", { type: "button", onclick: () => addPerson() }, t("character_add")),
  h("h3", t("bible_style")), h("div.row", h("label", t("style_person"), person), h("label", t("style_tense"), tense), h("label", t("style_tone"), tone)),
  h("label", t("style_banned"), banned),
  h("div.actions", h("button.primary", { type: "submit", "data-save-bible": "1" }, t("save"))));
  return form;
}
