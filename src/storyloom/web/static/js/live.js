// A job's live state, built from its event log, saved in localStorage so a reload continues
// from the last applied event (Last-Event-ID) instead of starting over.
//
// The saved snapshot is the state and the seq it reflects, written together in one setItem, so
// after a reload the stream resumes exactly after what the text on screen already contains: no
// gap, no repeat. Another device has no snapshot and replays the log from the start, which ends
// in the same state.

import { followJob } from "./api.js";

const PREFIX = "storyloom.job.";
const MAX_SAVED = 30; // snapshots kept; the oldest are dropped

export function emptyState() {
  return { seq: 0, status: "pending", steps: {}, order: [], ended: false, startedAt: null, endedAt: null };
}

function load(jobId) {
  try {
    const doc = JSON.parse(localStorage.getItem(PREFIX + jobId) || "null");
    if (doc && typeof doc.seq === "number" && doc.steps) return doc;
  } catch {
    /* a broken snapshot: replay from the start */
  }
  return null;
}

function save(jobId, state) {
  const text = JSON.stringify({ ...state, savedAt: Date.now() });
  try {
    localStorage.setItem(PREFIX + jobId, text);
  } catch {
    prune(0);
    try {
      localStorage.setItem(PREFIX + jobId, text);
    } catch {
      /* storage full even so: the next load replays from the server */
    }
  }
  prune(MAX_SAVED);
}

function prune(keep) {
  const saved = [];
  for (let i = 0; i < localStorage.length; i++) {
    const k = localStorage.key(i);
    if (k && k.startsWith(PREFIX)) {
      let at = 0;
      try {
        at = JSON.parse(localStorage.getItem(k)).savedAt || 0;
      } catch {
        at = 0;
      }
      saved.push([at, k]);
    }
  }
  saved.sort((a, b) => b[0] - a[0]);
  for (const [, k] of saved.slice(keep)) localStorage.removeItem(k);
}

function step(state, path, ts) {
  let s = state.steps[path];
  if (!s) {
    s = state.steps[path] = { status: "waiting", start: null, end: null, elapsed: null, text: "", error: null, degraded: null };
    state.order.push(path);
  }
  if (ts && s.start === null && s.status === "waiting") s.start = ts;
  return s;
}

// Apply one event; returns what changed: {path, kind, text?} or null for an event already seen.
export function apply(state, ev) {
  if (ev.seq <= state.seq) return null;
  const change = { kind: ev.kind, path: ev.step, gap: ev.seq !== state.seq + 1 };
  state.seq = ev.seq;
  const d = ev.data || {};
  switch (ev.kind) {
    case "job.started":
      state.status = "running";
      state.startedAt = state.startedAt || ev.ts;
      break;
    case "job.retrying":
    case "job.released":
      state.status = "retrying";
      break;
    case "job.completed":
    case "job.failed":
    case "job.cancelled":
      state.status = ev.kind.slice(4);
      state.ended = true;
      state.endedAt = ev.ts;
      if (d.error) state.error = d.error;
      for (const s of Object.values(state.steps)) if (s.status === "running") s.status = state.status === "completed" ? "done" : "failed";
      break;
    case "step.started": {
      const s = step(state, ev.step, ev.ts);
      s.status = "running";
      s.start = ev.ts;
      // A step run again (a retried job) streams its text again from the start.
      s.text = "";
      break;
    }
    case "step.delta": {
      const s = step(state, ev.step, ev.ts);
      if (s.status === "waiting") s.status = "running";
      s.text += d.text || "";
      change.text = d.text || "";
      break;
    }
    case "step.finished":
    case "step.restored": {
      const s = step(state, ev.step, ev.ts);
      s.status = s.degraded ? "degraded" : "done";
      s.end = ev.ts;
      s.elapsed = typeof d.elapsed_s === "number" ? d.elapsed_s : s.start ? ev.ts - s.start : null;
      break;
    }
    case "step.failed": {
      const s = step(state, ev.step, ev.ts);
      s.status = d.policy === "fallback" || d.policy === "skip" ? "degraded" : "failed";
      s.error = d.error || null;
      s.end = ev.ts;
      break;
    }
    case "step.skipped": {
      const s = step(state, ev.step, ev.ts);
      s.status = "degraded";
      s.degraded = s.degraded || "skipped";
      break;
    }
    case "step.degraded": {
      const s = step(state, ev.step, ev.ts);
      s.degraded = d.reason || "degraded";
      if (s.status === "done") s.status = "degraded";
      break;
    }
    case "book.progress":
      state.progress = d;
      break;
    case "book.waiting":
    case "book.stopped":
      state[ev.kind.slice(5)] = d;
      break;
    default:
      break;
  }
  return change;
}

// Follow a job: restore its snapshot, resume the stream after it, call `onChange(state, change)`
// for each new event (and once with change null after restoring). Returns `stop()`.
export function track(jobId, onChange, { onEnd } = {}) {
  const state = load(jobId) || emptyState();
  const stats = { restoredSeq: state.seq, firstSeq: null, applied: 0, gaps: 0, repeats: 0, state };
  registerStats(jobId, stats);
  onChange(state, null);
  let dirty = false;
  const flush = () => {
    if (dirty) save(jobId, state);
    dirty = false;
  };
  const timer = setInterval(flush, 500);
  const onHide = () => flush();
  window.addEventListener("pagehide", onHide);
  const finish = () => {
    flush();
    onEnd && onEnd(state);
  };
  let close = () => {};
  if (state.ended) {
    setTimeout(finish, 0);
  } else {
    close = followJob(jobId, {
      after: state.seq,
      onEvent: (ev) => {
        if (stats.firstSeq === null) stats.firstSeq = ev.seq;
        const change = apply(state, ev);
        if (!change) {
          stats.repeats += 1;
          return;
        }
        if (change.gap) stats.gaps += 1;
        stats.applied += 1;
        dirty = true;
        onChange(state, change);
      },
      onEnd: finish,
    });
  }
  return () => {
    flush();
    clearInterval(timer);
    window.removeEventListener("pagehide", onHide);
    close();
  };
}

// What the browser tests read: per job, where this page's first stream of it resumed and whether
// anything was skipped or repeated (a view shown again later in the same page keeps the first).
function registerStats(jobId, stats) {
  window.__studio = window.__studio || { streams: {} };
  if (!window.__studio.streams[jobId]) window.__studio.streams[jobId] = stats;
}
