// The one module that talks to the server: every view calls these functions, none builds a URL.
//
// The key (when the service runs with --auth) lives in sessionStorage: it survives a reload of
// this tab and is gone when the tab closes. Every call carries it as `Authorization: Bearer`.

const KEY_STORE = "storyloom.key";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function request(method, path, body, extraHeaders = {}) {
  const init = { method, headers: headers(extraHeaders) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, String(err && err.message ? err.message : err), null);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = null;
  }
  if (!res.ok) {
    const message = (doc && (doc.message || (typeof doc.detail === "string" && doc.detail))) || res.statusText;
    throw new ApiError(res.status, message, doc);
  }
  return doc;
}

const get = (path) => request("GET", path);
const post = (path, body, h) => request("POST", path, body ?? {}, h);
const patch = (path, body) => request("PATCH", path, body);
const del = (path) => request("DELETE", path);
const q = (params) => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) u.append(k, String(one));
  }
  const s = u.toString();
  return s ? `?${s}` : "";
};
const enc = encodeURIComponent;

// -- who, and what the server offers -------------------------------------------------------------

export const me = () => get("/api/me");
export const health = () => get("/api/health");

let featureCache = null;
// Which optional routes this server has (from its OpenAPI document): a view only offers what
// works on the server it talks to.
export async function features() {
  if (!featureCache) {
    featureCache = get("/openapi.json").then((doc) => {
      const paths = Object.keys((doc && doc.paths) || {});
      const has = (p) => paths.includes(p);
      return {
        books: has("/api/books"),
        rewrite: has("/api/books/{book_id}/chapters/{number}/rewrite"),
        bible: has("/api/books/{book_id}/bible"),
        paths,
        has,
      };
    }).catch(() => ({ books: false, paths: [], has: () => false }));
  }
  return featureCache;
}

// -- projects, chapters, versions (the novel app) -------------------------------------------------

export const listProjects = () => get("/api/projects?limit=200");
export const getProject = (id) => get(`/api/projects/${enc(id)}`);
export const createProject = (fields) => post("/api/projects", fields);
export const updateProject = (id, changes) => patch(`/api/projects/${enc(id)}`, changes);
export const deleteProject = (id) => del(`/api/projects/${enc(id)}`);
export const listChapters = (pid) => get(`/api/projects/${enc(pid)}/chapters`);
export const getChapter = (pid, cid) => get(`/api/projects/${enc(pid)}/chapters/${enc(cid)}`);
export const writeChapter = (pid, body, idempotencyKey) =>
  post(`/api/projects/${enc(pid)}/chapters`, body, idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {});
export const listVersions = (pid, cid) => get(`/api/projects/${enc(pid)}/chapters/${enc(cid)}/versions`);
export const chooseVersion = (pid, cid, vid) =>
  post(`/api/projects/${enc(pid)}/chapters/${enc(cid)}/versions/${enc(vid)}/choose`);

// -- books (the novel app's book routes, when the server has them: see features().books) ------------

const book = (id) => `/api/books/${enc(id)}`;
const chapterPath = (id, n) => `${book(id)}/chapters/${enc(n)}`;
export const createBook = (fields) => post("/api/books", { generate: true, ...fields });
export const getBook = (id) => get(book(id));
export const bookChapters = (id) => get(`${book(id)}/chapters`);
export const bookChapter = (id, n) => get(chapterPath(id, n));
export const bookVersions = (id, n) => get(`${chapterPath(id, n)}/versions`);
export const chooseBookVersion = (id, n, version) => post(`${chapterPath(id, n)}/choose`, { version });
export const saveChapterText = (id, n, text) => request("PUT", `${chapterPath(id, n)}/text`, { text });
export const rewritePassage = (id, n, { start, end, instruction, candidates = 3 }) =>
  post(`${chapterPath(id, n)}/rewrite`, { start, end, instruction, candidates });
export const acceptRewrite = (id, n, jobId, candidate) =>
  post(`${chapterPath(id, n)}/rewrite/${enc(jobId)}/accept`, { candidate });
export const getBible = (id) => get(`${book(id)}/bible`);
export const saveBible = (id, bible) => request("PUT", `${book(id)}/bible`, bible);
export const saveOutlineChapter = (id, n, chapter) => request("PUT", `${book(id)}/outline/${enc(n)}`, chapter);
export const startRun = (id, body) => post(`${book(id)}/runs`, body);
export const listRuns = (id) => get(`${book(id)}/runs`);
export const getRun = (id, runId) => get(`${book(id)}/runs/${enc(runId)}`);
export const runAction = (id, runId, action) => post(`${book(id)}/runs/${enc(runId)}/${action}`);
export const staleChapters = (id) => get(`${book(id)}/stale`);
export const regenerate = (id, body) => post(`${book(id)}/regenerate`, body);

// The export as a file the browser saves (a plain link could not carry the key).
export async function downloadExport(id, format) {
  const res = await fetch(`${book(id)}/export?format=${enc(format)}`, { headers: headers({ Accept: "*/*" }) });
  if (!res.ok) {
    let message = res.statusText;
    try {
      message = (await res.json()).message || message;
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, message, null);
  }
  const disposition = res.headers.get("Content-Disposition") || "";
  const named = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(disposition);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = named ? decodeURIComponent(named[1]) : `book.${format}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// -- apps and jobs -------------------------------------------------------------------------------

export const listApps = () => get("/api/apps");
export const getApp = (name) => get(`/api/apps/${enc(name)}`);
export const submitAppJob = (name, input, priority = 5) => post(`/api/apps/${enc(name)}/jobs`, { input, priority });
export const getJob = (id) => get(`/api/jobs/${enc(id)}`);
export const jobSteps = (id) => get(`/api/jobs/${enc(id)}/usage`);
export const listJobs = ({ status, kind, limit = 50, offset = 0 } = {}) =>
  get(`/api/jobs${q({ status, kind, limit, offset })}`);
export const cancelJob = (id) => del(`/api/jobs/${enc(id)}`);
export const retryJob = (id) => post(`/api/jobs/${enc(id)}/retry`);

// -- operations (admin) ----------------------------------------------------------------------------

export const opsOverview = () => get("/api/ops/overview");
export const opsLimits = () => get("/api/ops/limits");
export const opsUsage = (days = 7) => get(`/api/ops/usage${q({ days })}`);

// -- a job's events ------------------------------------------------------------------------------

const TERMINAL = new Set(["job.completed", "job.failed", "job.cancelled"]);

// Follow a job's events after `after` (the last seq already applied). `onEvent(ev)` gets each
// event once, in order; `onEnd()` once the job has ended (its terminal event, or a 204: nothing
// more to send). Returns `close()`.
//
// Without a key it is the browser's EventSource, which reconnects by itself with Last-Event-ID.
// With a key it is a fetch reader doing the same (EventSource cannot send an Authorization
// header, and a key in a URL would end up in logs).
export function followJob(jobId, { after = 0, onEvent, onEnd, onState }) {
  const url = `/api/jobs/${enc(jobId)}/events`;
  return getKey()
    ? fetchStream(url, after, onEvent, onEnd, onState)
    : eventSourceStream(url, after, onEvent, onEnd, onState);
}

const KINDS = [
  "job.submitted", "job.started", "job.retrying", "job.released", "job.completed", "job.failed",
  "job.cancelled", "run.started", "run.finished", "run.failed", "run.cancelled", "step.started",
  "step.delta", "step.finished", "step.failed", "step.skipped", "step.restored", "step.degraded",
  "book.progress", "book.waiting", "book.stopped", "book.chapters", "book.chapter_done", "book.planned",
  "outline.coverage",
];

function eventSourceStream(url, after, onEvent, onEnd, onState) {
  const source = new EventSource(`${url}?after=${after}`);
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    source.close();
    onEnd && onEnd();
  };
  const handle = (e) => {
    let ev;
    try {
      ev = JSON.parse(e.data);
    } catch {
      return;
    }
    onEvent(ev);
    if (TERMINAL.has(ev.kind)) end();
  };
  // Every frame is named by its kind; kinds an app adds are heard through the generic list below.
  for (const kind of KINDS) source.addEventListener(kind, handle);
  source.onmessage = handle;
  source.onopen = () => onState && onState("open");
  source.onerror = () => {
    // CLOSED: the server answered 204 (the job has ended and we have everything) or refused.
    if (source.readyState === EventSource.CLOSED) end();
    else onState && onState("reconnecting");
  };
  return () => {
    ended = true;
    source.close();
  };
}

function fetchStream(url, after, onEvent, onEnd, onState) {
  let last = after;
  let stopped = false;
  let controller = null;
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const res = await fetch(url, {
          headers: { ...headers({ Accept: "text/event-stream" }), "Last-Event-ID": String(last) },
          signal: controller.signal,
        });
        if (res.status === 204) break;
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        onState && onState("open");
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        let terminal = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const frame = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
            if (!data.length) continue;
            let ev;
            try {
              ev = JSON.parse(data.join("\n"));
            } catch {
              continue;
            }
            if (typeof ev.seq === "number") last = ev.seq;
            onEvent(ev);
            if (TERMINAL.has(ev.kind)) terminal = true;
          }
          if (terminal) break;
        }
        if (terminal) break;
      } catch (err) {
        if (stopped) return;
      }
      if (stopped) return;
      onState && onState("reconnecting");
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (!stopped) onEnd && onEnd();
  };
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
