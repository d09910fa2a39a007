// The operator's panel: workers, queue by priority, jobs by app and state (with a list, filters,
// errors and a retry button), deployments' breakers and limits, tokens and cost per tenant per day.
// Live: it reads again every 3 s while the page is visible.

import * as api from "../api.js";
import { clear, fill, fmtCost, fmtNum, fmtTime, h, toast } from "../dom.js";
import { t } from "../i18n.js";

const STATES = ["pending", "running", "retrying", "completed", "failed", "cancelled"];

export async function renderOps(root, { who }) {
  if (who && who.role !== "admin") {
    fill(root, h("p.error", t("ops_admin_only")));
    return () => {};
  }
  const filters = { status: "failed", kind: "" };
  const updated = h("span.small.muted");
  const top = h("div.cards");
  const queue = h("section.card");
  const counts = h("section.card");
  const jobs = h("section.card.jobs");
  const limits = h("section.card");
  const usage = h("section.card");
  fill(root, h("div.page-head", h("h1", t("ops_title")), updated), top, h("div.two", queue, counts), jobs, h("div.two", limits, usage));

  const load = async () => {
    try {
      const [ov, lim, use, list] = await Promise.all([
        api.opsOverview(), api.opsLimits(), api.opsUsage(7),
        api.listJobs({ status: filters.status || undefined, kind: filters.kind || undefined, limit: 50 }),
      ]);
      drawTop(top, ov);
      drawQueue(queue, ov);
      drawCounts(counts, ov);
      drawJobs(jobs, list, ov, filters, load, who);
      drawLimits(limits, lim);
      drawUsage(usage, use);
      updated.textContent = t("ops_updated", { t: new Date().toLocaleTimeString() });
    } catch (err) {
      updated.textContent = t("error", { msg: err.message });
    }
  };
  await load();
  const timer = setInterval(() => {
    if (document.visibilityState === "visible") load();
  }, 3000);
  return () => clearInterval(timer);
}

function drawTop(el, ov) {
  fill(el, 
    h("div.card.stat", h("span.big", String(ov.live_workers)), h("span", t("ops_live_workers")),
      h("ul.small", ov.workers.map((w) => h("li", `${w.worker}: ${t("ops_busy", { n: w.running_jobs })}`)))),
    h("div.card.stat", h("span.big", String(ov.queued)), h("span", t("ops_queued"))),
    h("div.card.stat", h("span.big", String(ov.running)), h("span", t("ops_running"))));
}

function drawQueue(el, ov) {
  const max = Math.max(1, ...ov.queue.map((q) => q.queued));
  fill(el, h("h2", t("ops_queue")), h("table.bars", h("tbody", ov.queue.map((q) =>
    h("tr", h("th", { scope: "row" }, `P${q.priority}`),
      h("td", h("span.bar", { style: `--w:${(100 * q.queued) / max}%` })), h("td.num", String(q.queued)))))));
}

function drawCounts(el, ov) {
  const apps = [...new Set(ov.jobs.map((j) => j.app || j.kind))];
  const cell = (app, st) => ov.jobs.filter((j) => (j.app || j.kind) === app && j.status === st).reduce((a, j) => a + j.count, 0);
  fill(el, h("h2", t("ops_jobs")), h("div.table-wrap", h("table",
    h("thead", h("tr", h("th", t("col_kind")), STATES.map((s) => h("th", t(`st_${s === "pending" ? "pending" : s}`))))),
    h("tbody", apps.length ? apps.map((a) => h("tr", h("th", { scope: "row" }, a), STATES.map((s) => h("td.num", String(cell(a, s) || ""))))) : h("tr", h("td", t("ops_none")))))));
}

function drawJobs(el, list, ov, filters, reload, who) {
  // An admin key reads every tenant's jobs but may run again only its own tenant's (api/auth.py).
  const mine = (j) => !who || !who.authenticated || j.tenant === who.tenant;
  const kinds = [...new Set(ov.jobs.map((j) => j.kind))];
  const status = h("select", { "aria-label": t("ops_filter_status"), onchange: (e) => { filters.status = e.target.value; reload(); } },
    h("option", { value: "" }, t("ops_any")), STATES.map((s) => h("option", { value: s, selected: filters.status === s }, t(`st_${s}`))));
  const kind = h("select", { "aria-label": t("ops_filter_kind"), onchange: (e) => { filters.kind = e.target.value; reload(); } },
    h("option", { value: "" }, t("ops_any")), kinds.map((k) => h("option", { value: k, selected: filters.kind === k }, k)));
  const rows = list.jobs.map((j) => h("tr", { "data-job": j.id },
    h("td.mono", j.id.slice(0, 12)), h("td", j.app || j.kind), h("td", h("span.badge", { "data-state": j.status }, t(`st_${j.status}`))),
    h("td", j.tenant), h("td", fmtTime(j.created_at)), h("td.num", fmtCost(j.cost_usd)),
    h("td.error-cell", j.error || ""),
    h("td", (j.status === "failed" || j.status === "cancelled") && mine(j) ? h("button.ghost", { type: "button", "data-retry": j.id, onclick: async (e) => {
      e.target.disabled = true;
      try {
        await api.retryJob(j.id);
        toast(t("ops_retried", { id: j.id.slice(0, 12) }));
        reload();
      } catch (err) {
        e.target.disabled = false;
        toast(t("error", { msg: err.message }), "error");
      }
    } }, t("ops_retry")) : "")));
  fill(el, h("h2", t("ops_job_list"), h("span.small.muted", ` (${list.total})`)),
    h("div.row.filters", h("label", t("ops_filter_status"), status), h("label", t("ops_filter_kind"), kind)),
    h("div.table-wrap", h("table",
      h("thead", h("tr", ["col_id", "col_kind", "col_state", "col_tenant", "col_created", "col_cost", "ops_error", ""].map((k) => h("th", k ? t(k) : "")))),
      h("tbody", rows.length ? rows : h("tr", h("td", { colspan: 8 }, t("ops_none")))))));
}

function drawLimits(el, lim) {
  const fmt = (v) => (v === null || v === undefined ? "∞" : fmtNum(v));
  fill(el, h("h2", t("ops_limits")), h("div.table-wrap", h("table",
    h("thead", h("tr", ["name", "model", "rpm", "tpm", "max_concurrency"].map((k) => h("th", k)), h("th", t("ops_breaker")), h("th", "in flight"))),
    h("tbody", lim.deployments.map((d) => h("tr",
      h("td", d.name), h("td", d.model), h("td.num", fmt(d.rpm)), h("td.num", fmt(d.tpm)), h("td.num", fmt(d.max_concurrency)),
      h("td", d.shared ? h("span.badge", { "data-state": d.breaker }, d.breaker) : h("span.small.muted", t("ops_not_shared"))),
      h("td.num", d.in_flight ?? "–")))))),
  h("h3", t("ops_tenant_limits")),
  Object.keys(lim.tenant_limits).length
    ? h("ul", Object.entries(lim.tenant_limits).map(([k, v]) => h("li", `${k}: ${Object.entries(v).map(([a, b]) => `${a}=${fmt(b)}`).join(", ")}`)))
    : h("p.muted", t("ops_none")));
}

function drawUsage(el, rows) {
  fill(el, h("h2", t("ops_usage")), h("div.table-wrap", h("table",
    h("thead", h("tr", h("th", t("ops_day")), h("th", t("ops_tenant")), h("th", t("ops_calls")), h("th", t("tokens")), h("th", t("cost")))),
    h("tbody", rows.length ? rows.map((u) => h("tr", h("td", u.day), h("td", u.tenant), h("td.num", fmtNum(u.calls)),
      h("td.num", fmtNum(u.prompt_tokens + u.completion_tokens)), h("td.num", fmtCost(u.cost_usd)))) : h("tr", h("td", { colspan: 5 }, t("ops_none")))))));
}
