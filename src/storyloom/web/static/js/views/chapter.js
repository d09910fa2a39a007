// A chapter: its versions written live (one column each, agent timeline + streaming text), the
// director's plan and the judge's reasons, then comparison, diff and the choice.

import * as api from "../api.js";
import { clear, fill, fmtCost, fmtNum, fmtSecs, h, onFrame, toast } from "../dom.js";
import { t } from "../i18n.js";
import { track } from "../live.js";
import { diffView } from "../diff.js";
import { chapterEditor } from "./book.js";
import { chapterState, stateBadge } from "./project.js";

const AGENTS = ["plot", "character", "scene", "synthesis", "optimize", "quality", "revise", "final"];
// The steps that write the version's prose, in the order they replace each other on screen.
function proseRank(path) {
  const m = path ? VERSION_RE.exec(path) : null;
  if (!m) return -1;
  if (m[2] === "revise") return m[4] === "revise" ? 10 + Number(m[3]) : -1;
  return { synthesis: 1, optimize: 2 }[m[2]] ?? -1;
}
const isProse = (path) => proseRank(path) > 0;
const VERSION_RE = /^versions\/v(\d+)\/([^/]+)(?:\/r(\d+)\/([^/]+))?$/;

function statusLabel(s) {
  return t(`st_${s}`);
}

export async function renderChapter(root, { pid, cid }) {
  const [project, chapter] = await Promise.all([api.getProject(pid), api.getChapter(pid, cid)]);
  const job = chapter.jobs[0] || null;
  clear(root);
  const badge = stateBadge(chapterState(chapter));
  const head = h("div.page-head",
    h("a.back", { href: `#/projects/${pid}` }, t("back_to_project")),
    h("h1", `${t("chapter", { n: chapter.index })}${chapter.title ? ` · ${chapter.title}` : ""}`),
    badge);
  root.append(head, h("p.outline", chapter.outline));
  const views = { stop: () => {} };
  if (job) {
    const live = liveView(project, chapter, job, async () => {
      const now = await api.getChapter(pid, cid);
      badge.replaceWith(stateBadge(chapterState(now)));
      // The job chose a version (the judge's pick): show the page again, with the text's editor.
      if (now.current_version_id && !chapter.current_version_id) window.dispatchEvent(new HashChangeEvent("hashchange"));
    });
    root.append(live.el);
    views.stop = live.stop;
  }
  const features = await api.features();
  if (features.books && chapter.current_version_id) {
    const reload = () => window.dispatchEvent(new HashChangeEvent("hashchange"));
    const editor = chapterEditor(project, await api.bookChapter(pid, chapter.index), reload, { rewrite: features.rewrite });
    root.append(editor.el);
    const stopLive = views.stop;
    views.stop = () => {
      stopLive();
      editor.stop();
    };
  }
  root.append(rewriteForm(project, chapter));
  return () => views.stop();
}

// -- the live view -------------------------------------------------------------------------------

function liveView(project, chapter, job, onDone) {
  const el = h("section.live", { "aria-label": t("chapter", { n: chapter.index }), "data-job": job.id });
  const jobLine = h("div.job-line");
  const status = h("span.badge", statusLabel(job.status));
  const totals = h("span.totals");
  const cancel = h("button.ghost", { type: "button", onclick: async () => {
    try {
      await api.cancelJob(job.id);
    } catch (err) {
      toast(t("error", { msg: err.message }), "error");
    }
  } }, t("cancel_job"));
  jobLine.append(status, totals, cancel);

  const director = panel(t("director"));
  const plan = h("div.plan");
  director.body.append(plan);
  const judge = panel(t("judge"));
  const judgeBody = h("div.judge-body", h("p.muted", statusLabel("waiting")));
  judge.body.append(judgeBody);
  const grid = h("div.versions", { role: "list" });
  const after = h("div.after");
  el.append(jobLine, h("div.side-by-side", director.el, judge.el), grid, after);

  const columns = new Map(); // version number -> column
  const column = (n) => {
    if (!columns.has(n)) {
      const col = versionColumn(n);
      columns.set(n, col);
      // Keep columns in order whatever order their first events come in.
      const next = [...columns.keys()].filter((k) => k > n).sort((a, b) => a - b)[0];
      if (next !== undefined) grid.insertBefore(col.el, columns.get(next).el);
      else grid.append(col.el);
      grid.style.setProperty("--cols", String(columns.size));
    }
    return columns.get(n);
  };
  // A hint from this browser's submission (or the stored versions): columns before any event.
  const expected = Number(sessionStorage.getItem(`storyloom.versions.${job.id}`)) || chapter.versions.length || 0;
  for (let n = 1; n <= expected; n++) column(n);

  let usage = {};
  let state = null;
  const render = () => {
    if (!state) return;
    status.textContent = statusLabel(state.status);
    status.dataset.state = state.status;
    for (const [path, s] of Object.entries(state.steps)) {
      const m = VERSION_RE.exec(path);
      if (m) column(Number(m[1])).update(m[2], path, s, state, usage);
      else if (path === "director") updateAgentRow(director.row, s, usage.director);
      else if (path === "judge") updateAgentRow(judge.row, s, sumUsage(usage, (p) => p.startsWith("judge")));
    }
    const dirText = state.steps.director ? state.steps.director.text : "";
    if (!plan.dataset.final && plan.textContent !== dirText) plan.textContent = dirText;
    const all = sumUsage(usage, () => true) || { prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 };
    totals.textContent = `${fmtNum(all.prompt_tokens + all.completion_tokens)} ${t("tokens")} · ${fmtCost(all.cost_usd)}`;
    cancel.hidden = state.ended;
  };

  let polling = null;
  const pollUsage = async () => {
    try {
      const rows = await api.jobSteps(job.id);
      usage = Object.fromEntries(rows.map((r) => [r.step, r]));
      onFrame("chapter.render", render);
    } catch {
      /* the next poll will do */
    }
  };
  const ticker = setInterval(() => onFrame("chapter.render", render), 1000); // elapsed of running steps

  const stop = track(job.id, (s, change) => {
    state = s;
    if (change && change.text !== undefined) {
      const m = VERSION_RE.exec(change.path);
      if (m) column(Number(m[1])).pending(change.path, change.text);
    }
    onFrame("chapter.render", render);
  }, {
    onEnd: async (s) => {
      state = s;
      clearInterval(polling);
      await pollUsage();
      try {
        const [fresh, versions] = await Promise.all([
          api.getJob(job.id),
          api.listVersions(project.id, chapter.id),
        ]);
        finish(fresh, versions.filter((v) => v.job_id === job.id));
        await onDone();
      } catch (err) {
        toast(t("error", { msg: err.message }), "error");
      }
    },
  });
  pollUsage();
  polling = setInterval(pollUsage, 2000);

  function finish(fresh, versions) {
    const result = fresh.result && (fresh.result.result || fresh.result);
    render();
    if (result && result.plan) {
      plan.dataset.final = "1";
      fill(plan, planList(result.plan));
    }
    fill(judgeBody, judgeSummary(result && result.judge));
    for (const v of (result && result.versions) || []) {
      const col = columns.get(v.index);
      if (col) col.finish(v, versions.find((x) => x.index === v.index), project, chapter);
    }
    fill(after, compareView(versions, result));
  }

  return {
    el,
    stop: () => {
      stop();
      clearInterval(polling);
      clearInterval(ticker);
    },
  };
}

function panel(title) {
  const row = agentRow(title);
  const body = h("div.panel-body");
  const el = h("section.panel", h("h2", title), row.el, body);
  return { el, body, row };
}

function agentRow(label) {
  const dot = h("span.dot", { "aria-hidden": "true" });
  const st = h("span.st", statusLabel("waiting"));
  const elapsed = h("span.num.elapsed", "–");
  const tokens = h("span.num.tokens", "–");
  const cost = h("span.num.cost", "–");
  const el = h("li.agent", { "data-state": "waiting" }, dot, h("span.name", label), st, elapsed, tokens, cost);
  return { el, st, elapsed, tokens, cost, note: null };
}

function updateAgentRow(row, s, use) {
  if (!s) return;
  const shown = s.status;
  if (row.el.dataset.state !== shown) {
    row.el.dataset.state = shown;
    row.st.textContent = statusLabel(shown);
  }
  row.el.title = s.degraded || s.error || "";
  const now = Date.now() / 1000;
  const secs = s.elapsed ?? (s.start ? Math.max(0, now - s.start) : null);
  row.elapsed.textContent = fmtSecs(secs);
  if (use) {
    row.tokens.textContent = fmtNum(use.prompt_tokens + use.completion_tokens);
    row.cost.textContent = fmtCost(use.cost_usd);
  }
}

function sumUsage(usage, wanted) {
  const out = { prompt_tokens: 0, completion_tokens: 0, cost_usd: 0, calls: 0 };
  let any = false;
  for (const [path, u] of Object.entries(usage)) {
    if (!wanted(path)) continue;
    any = true;
    out.prompt_tokens += u.prompt_tokens;
    out.completion_tokens += u.completion_tokens;
    out.cost_usd += u.cost_usd;
    out.calls += u.calls;
  }
  return any ? out : null;
}

// One version's column: timeline rows exist from the start (waiting), the text box has a fixed
// height, so nothing moves while text streams in.
function versionColumn(n) {
  const rows = {};
  const list = h("ol.timeline", { "aria-label": t("version", { n }) });
  for (const agent of AGENTS) {
    rows[agent] = agentRow(t(`agent_${agent}`));
    list.append(rows[agent].el);
  }
  const badge = h("span.badge", statusLabel("waiting"));
  const textLabel = h("div.text-label", t("text_none"));
  const textNode = document.createTextNode("");
  const text = h("div.stream", { tabindex: "0", role: "log", "aria-live": "off", "data-version": String(n) }, textNode);
  const measures = h("div.measures");
  const actions = h("div.actions");
  const el = h("article.version", { role: "listitem", "data-version": String(n) },
    h("header", h("h3", t("version", { n })), badge), list, textLabel, text, measures, actions);
  let shownStep = null;
  let queued = "";

  const flushText = () => {
    if (!queued) return;
    const atBottom = text.scrollTop + text.clientHeight >= text.scrollHeight - 24;
    textNode.appendData(queued);
    queued = "";
    if (atBottom) text.scrollTop = text.scrollHeight;
  };

  const show = (path, s) => {
    shownStep = path;
    queued = "";
    textNode.data = s.text;
    const m = VERSION_RE.exec(path);
    textLabel.textContent = t("text_of", { step: m[3] ? `${t("agent_revise")} r${m[3]}` : t(`agent_${m[2]}`) });
    text.scrollTop = text.scrollHeight;
  };

  return {
    el,
    pending(path, chunk) {
      if (path === shownStep) {
        queued += chunk;
        onFrame(`text.${n}`, flushText);
      }
    },
    update(agent, path, s, state, usage) {
      if (isProse(path) && s.status !== "waiting" && path !== shownStep && proseRank(path) > proseRank(shownStep)) {
        show(path, s);
      }
      if (agent === "revise") {
        // The loop's rounds (revise rN writes prose, check rN scores it) share the loop's row.
        updateAgentRow(rows.revise, state.steps[`versions/v${n}/revise`] || s,
          sumUsage(usage, (p) => p.startsWith(`versions/v${n}/revise/`)));
      } else if (rows[agent]) {
        updateAgentRow(rows[agent], s, usage[path]);
      }
      const steps = Object.entries(state.steps).filter(([p]) => p.startsWith(`versions/v${n}/`)).map(([, v]) => v.status);
      const final = state.steps[`versions/v${n}/final`];
      const st = final && final.status === "done" ? "done" : steps.includes("failed") ? "failed" : steps.some((x) => x === "running") ? "running" : steps.length ? "running" : "waiting";
      if (badge.dataset.state !== st) {
        badge.dataset.state = st;
        badge.textContent = statusLabel(st);
      }
    },
    finish(v, stored, project, chapter) {
      flushText();
      // Whether what streamed in is exactly the version's text (tests read it), then the version's
      // own text (the same, unless the revise loop's last round was not kept).
      text.dataset.streamedMatches = String(textNode.data === v.text);
      if (v.ok && v.text && textNode.data !== v.text) textNode.data = v.text;
      for (const a of v.agents || []) {
        const row = rows[a.agent];
        if (row && a.agent !== "revise") {
          row.tokens.textContent = fmtNum(a.usage.prompt_tokens + a.usage.completion_tokens);
          row.cost.textContent = fmtCost(a.cost_usd);
        }
      }
      if (!v.ok) {
        badge.dataset.state = "failed";
        badge.textContent = statusLabel("failed");
        measures.append(h("p.error", v.error || ""));
        return;
      }
      fill(measures, measureList(v));
      clear(actions);
      if (stored) {
        if (stored.chosen) actions.append(h("span.badge.chosen", t("chosen")));
        else {
          actions.append(h("button.primary", { type: "button", "data-choose": String(v.index), onclick: async (e) => {
            e.target.disabled = true;
            try {
              await api.chooseVersion(project.id, chapter.id, stored.id);
              toast(t("chosen_ok", { n: v.index }));
              window.dispatchEvent(new HashChangeEvent("hashchange"));
            } catch (err) {
              e.target.disabled = false;
              toast(t("error", { msg: err.message }), "error");
            }
          } }, t("choose")));
        }
      }
    },
  };
}

// The measures a version has: the chapter flow's own, plus the book's (repetition, continuity)
// when the novel app measures them; a measure no version has is not shown.
const MEASURES = [
  ["m_length", (v) => v.length, fmtNum],
  ["m_length_score", (v) => v.length_score, String],
  ["m_quality", (v) => v.quality_score, (x, v) => (v.quality_measured === false ? `${x} (${statusLabel("degraded")})` : String(x))],
  ["m_repetition", (v) => (v.measures || {}).repetition, (x) => Number(x).toFixed(3)],
  ["m_continuity", (v) => (v.continuity && v.continuity.length ? v.continuity.length : (v.measures || {}).continuity_issues), String],
  ["m_issues", (v) => (v.issues || []).length, String],
  ["m_revise", (v) => v.revise_rounds ?? 0, String],
];

function shownMeasures(versions) {
  return MEASURES.filter(([, get]) => versions.some((v) => get(v) !== undefined && get(v) !== null));
}

function measureList(v) {
  const dl = h("dl.measure-list");
  for (const [key, get, fmt] of shownMeasures([v])) dl.append(h("dt", t(key)), h("dd", fmt(get(v), v)));
  return dl;
}

function planList(plan) {
  const dl = h("dl.plan-list");
  for (const [k, v] of Object.entries(plan)) {
    dl.append(h("dt", k), h("dd", Array.isArray(v) ? h("ul", v.map((x) => h("li", String(x)))) : String(v)));
  }
  return dl;
}

function judgeSummary(judge) {
  if (!judge) return h("p.muted", "–");
  const out = h("div");
  out.append(h("p.winner", judge.decided && judge.winner ? t("judge_winner", { n: judge.winner }) : t("judge_undecided")));
  if (judge.degraded) out.append(h("p.warn", `${statusLabel("degraded")}: ${judge.degraded}`));
  for (const m of judge.matches || []) {
    out.append(h("details.match", h("summary", t("match", { a: m.a, b: m.b, w: m.winner ?? "–" })),
      h("ul", (m.reasons || []).map((r) => h("li", r)))));
  }
  return out;
}

// -- compare, diff -------------------------------------------------------------------------------

function compareView(versions, result) {
  const ok = ((result && result.versions) || []).filter((v) => v.ok);
  if (ok.length < 1) return h("div");
  const table = h("table.compare");
  const headRow = h("tr", h("th", t("measures")), ok.map((v) => h("th", t("version", { n: v.index }))));
  const row = (key, f) => h("tr", h("th", { scope: "row" }, t(key)), ok.map((v) => h("td.num", f(v))));
  const measured = shownMeasures(ok).map(([key, get, fmt]) =>
    row(key, (v) => (get(v) === undefined || get(v) === null ? "–" : fmt(get(v), v))));
  table.append(h("thead", headRow), h("tbody",
    measured,
    row("tokens", (v) => fmtNum(v.usage.prompt_tokens + v.usage.completion_tokens)),
    row("cost", (v) => fmtCost(v.cost_usd)),
    row("m_judge", (v) => (result.chosen === v.index && result.chosen_by === "judge" ? "✓" : "")),
  ));
  const section = h("section.compare-section", h("h2", t("compare")), h("div.table-wrap", table));
  if (ok.length >= 2) {
    const pick = (label, initial) => {
      const sel = h("select", ok.map((v) => h("option", { value: String(v.index), selected: v.index === initial }, t("version", { n: v.index }))));
      return { sel, el: h("label", label, " ", sel) };
    };
    const a = pick(t("diff_a"), ok[0].index);
    const b = pick(t("diff_b"), ok[1].index);
    const out = h("div.diff-out");
    const draw = () => {
      const va = ok.find((v) => v.index === Number(a.sel.value));
      const vb = ok.find((v) => v.index === Number(b.sel.value));
      fill(out, diffView(va.text, vb.text));
    };
    a.sel.addEventListener("change", draw);
    b.sel.addEventListener("change", draw);
    section.append(h("h3", t("diff")), h("div.diff-pick", a.el, b.el), out);
    draw();
  }
  const chosen = versions.find((v) => v.chosen);
  if (chosen) section.append(h("h2", t("chapter_text")), h("div.chapter-text", { "data-chosen": String(chosen.index) }, chosen.text));
  return section;
}

// -- write (again) -------------------------------------------------------------------------------

export function rewriteForm(project, chapter) {
  const outline = h("textarea", { name: "outline", rows: 3, required: true }, chapter ? chapter.outline : "");
  const versions = h("input", { type: "number", name: "versions", min: 1, max: 5, value: 3 });
  const length = h("input", { type: "number", name: "target_length", min: 100, max: 20000, step: 100, value: project.language === "en" ? 800 : 1500 });
  const index = h("input", { type: "number", name: "index", min: 1, max: 100000, value: chapter ? chapter.index : "" });
  const form = h("form.card.write-form", {
    onsubmit: async (e) => {
      e.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        const body = { outline: outline.value, versions: Number(versions.value), target_length: Number(length.value) };
        if (index.value) body.index = Number(index.value);
        const out = await api.writeChapter(project.id, body);
        sessionStorage.setItem(`storyloom.versions.${out.job.id}`, String(body.versions));
        location.hash = `#/projects/${project.id}/chapters/${out.chapter.id}`;
        window.dispatchEvent(new HashChangeEvent("hashchange"));
      } catch (err) {
        button.disabled = false;
        toast(t("error", { msg: err.message }), "error");
      }
    },
  },
  h("h2", chapter ? t("chapter_rewrite") : t("chapter_new")),
  h("label", t("chapter_outline"), outline),
  h("div.row",
    h("label", t("chapter_index"), index),
    h("label", t("chapter_versions"), versions),
    h("label", t("chapter_length"), length)),
  h("button.primary", { type: "submit" }, chapter ? t("chapter_rewrite") : t("chapter_write")));
  return form;
}
