// Every installed app: a form made from its input JSON Schema, a run, its steps and result live.

import * as api from "../api.js";
import { clear, fill, fmtCost, fmtNum, fmtSecs, h, onFrame, toast } from "../dom.js";
import { t } from "../i18n.js";
import { track } from "../live.js";

export async function renderApps(root) {
  const apps = await api.listApps();
  fill(root, h("div.page-head", h("h1", t("apps_title"))), h("p.muted", t("apps_help")),
    h("ul.app-list", apps.map((a) => h("li.card", h("a", { href: `#/apps/${a.name}` }, h("h2", a.title || a.name)),
      h("p", a.description || ""), h("p.small.muted", a.model)))));
}

export async function renderApp(root, { name, job }) {
  const app = await api.getApp(name);
  clear(root);
  const out = h("div.app-run");
  const form = schemaForm(app.input_schema, async (input, priority) => {
    try {
      const submitted = await api.submitAppJob(app.name, input, priority);
      location.hash = `#/apps/${app.name}/jobs/${submitted.id}`;
    } catch (err) {
      toast(t("error", { msg: err.message }), "error");
    }
  });
  root.append(h("div.page-head", h("a.back", { href: "#/apps" }, `← ${t("apps_title")}`), h("h1", app.title || app.name)),
    h("p.muted", app.description || ""), h("div.two", form, out));
  if (job) return runView(out, job);
  return () => {};
}

// -- a form from JSON Schema ---------------------------------------------------------------------

function resolve(schema, root) {
  if (schema && schema.$ref) {
    const path = schema.$ref.replace(/^#\//, "").split("/");
    let node = root;
    for (const p of path) node = node && node[p];
    return { ...(node || {}), ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== "$ref")) };
  }
  if (schema && schema.anyOf) {
    const real = schema.anyOf.filter((s) => s.type !== "null");
    if (real.length === 1) return { ...resolve(real[0], root), default: schema.default, title: schema.title, description: schema.description };
  }
  return schema || {};
}

function schemaForm(schema, onRun) {
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  const readers = [];
  const fields = [];
  for (const [key, raw] of Object.entries(props)) {
    const s = resolve(raw, schema);
    const label = s.title || key;
    const id = `in-${key}`;
    const help = s.description ? h("small.muted", s.description) : null;
    let el;
    let read;
    if (s.enum) {
      el = h("select", { id, name: key }, s.enum.map((v) => h("option", { value: String(v), selected: v === s.default }, String(v))));
      read = () => el.value;
    } else if (s.type === "boolean") {
      el = h("input", { id, name: key, type: "checkbox", checked: Boolean(s.default) });
      read = () => el.checked;
    } else if (s.type === "integer" || s.type === "number") {
      el = h("input", { id, name: key, type: "number", step: s.type === "integer" ? 1 : "any", min: s.minimum, max: s.maximum, required: required.has(key) });
      if (s.default !== undefined && s.default !== null) el.value = String(s.default);
      read = () => (el.value === "" ? undefined : Number(el.value));
    } else if (s.type === "string") {
      const long = (s.maxLength || 0) > 200 || /outline|text|premise|prompt|question|content|topic/i.test(key);
      el = h(long ? "textarea" : "input", { id, name: key, rows: long ? 4 : undefined, maxlength: s.maxLength, minlength: s.minLength, required: required.has(key) });
      if (s.default !== undefined && s.default !== null) el.value = String(s.default);
      read = () => (el.value === "" && !required.has(key) ? undefined : el.value);
    } else if (s.type === "array" && resolve(s.items, schema).type === "string") {
      el = h("textarea", { id, name: key, rows: 3, placeholder: "one per line" });
      if (Array.isArray(s.default)) el.value = s.default.join("\n");
      read = () => el.value.split("\n").map((x) => x.trim()).filter(Boolean);
    } else {
      el = h("textarea.code", { id, name: key, rows: 4, spellcheck: "false" });
      if (s.default !== undefined) el.value = JSON.stringify(s.default, null, 2);
      read = () => {
        if (!el.value.trim()) return undefined;
        try {
          return JSON.parse(el.value);
        } catch {
          throw new Error(t("app_bad_json", { field: label }));
        }
      };
    }
    readers.push([key, read]);
    fields.push(h("label", { for: id }, label + (required.has(key) ? " *" : ""), el, help));
  }
  const priority = h("input", { type: "number", name: "priority", min: 0, max: 9, value: 5, id: "in-priority" });
  const form = h("form.card.app-form", {
    onsubmit: (e) => {
      e.preventDefault();
      const input = {};
      try {
        for (const [key, read] of readers) {
          const v = read();
          if (v !== undefined) input[key] = v;
        }
      } catch (err) {
        toast(err.message, "error");
        return;
      }
      onRun(input, Number(priority.value));
    },
  }, fields, h("label", { for: "in-priority" }, t("app_priority"), priority), h("button.primary", { type: "submit" }, t("app_run")));
  return form;
}

// -- a run: steps (a timeline) and streamed text, then the result -------------------------------

function runView(out, jobId) {
  const status = h("span.badge", t("st_pending"));
  const steps = h("ol.timeline.steps", { "aria-label": t("app_steps") });
  const result = h("div.result");
  const rows = new Map();
  fill(out, h("section.card", h("h2", t("app_steps"), " ", status), steps), h("section.card", h("h2", t("app_result")), result));
  let state = null;
  const render = () => {
    status.textContent = t(`st_${state.status}`);
    status.dataset.state = state.status;
    for (const path of state.order) {
      const s = state.steps[path];
      let row = rows.get(path);
      if (!row) {
        const text = h("pre.step-text");
        row = { el: h("li.agent.step", { "data-step": path }, h("span.dot"), h("span.name", path), h("span.st"), h("span.num.elapsed"), text), text, shown: 0 };
        rows.set(path, row);
        steps.append(row.el);
      }
      row.el.dataset.state = s.status;
      row.el.querySelector(".st").textContent = t(`st_${s.status}`);
      row.el.querySelector(".elapsed").textContent = fmtSecs(s.elapsed ?? (s.start ? Date.now() / 1000 - s.start : null));
      if (s.text.length > row.shown) {
        row.text.append(s.text.slice(row.shown));
        row.shown = s.text.length;
      }
    }
  };
  const stop = track(jobId, (s) => {
    state = s;
    onFrame("app.render", render);
  }, {
    onEnd: async () => {
      const job = await api.getJob(jobId);
      fill(result, 
        job.error ? h("p.error", job.error) : null,
        job.text ? h("div.result-text", job.text) : null,
        h("p.small", `${fmtNum(job.usage.total_tokens)} ${t("tokens")} · ${fmtCost(job.cost_usd)}`),
        job.degraded && job.degraded.length ? h("p.warn", `${t("st_degraded")}: ${job.degraded.map((d) => d.step || d).join(", ")}`) : null,
        h("details", h("summary", "JSON"), h("pre.code", JSON.stringify(job.result, null, 2))));
      result.dataset.done = job.status;
    },
  });
  return stop;
}
