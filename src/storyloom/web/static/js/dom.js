// Small DOM helpers and the one animation-frame scheduler every live view writes through.

// h("div.card#main", {onclick, "aria-label": ...}, child, "text", [children]) -> Element
export function h(tag, attrs, ...children) {
  const [name, ...rest] = tag.split(/(?=[.#])/);
  const el = document.createElement(name || "div");
  for (const part of rest) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else if (part[0] === "#") el.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== "object" || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// Replace an element's children (null, false and nested arrays allowed, as in h()).
export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Work queued here runs once, in the next animation frame: a burst of 100 deltas across five
// columns costs one style/layout pass, not 100.
const queued = new Map();
let frame = 0;
export function onFrame(key, fn) {
  queued.set(key, fn);
  if (!frame) frame = requestAnimationFrame(flush);
}
function flush() {
  frame = 0;
  const work = [...queued.values()];
  queued.clear();
  for (const fn of work) {
    try {
      fn();
    } catch (err) {
      console.error(err);
    }
  }
}

export function fmtNum(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString();
}

export function fmtCost(usd) {
  if (usd === null || usd === undefined) return "–";
  return `$${Number(usd).toFixed(usd < 0.01 ? 5 : 4)}`;
}

export function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  return s < 10 ? `${s.toFixed(1)} s` : s < 120 ? `${Math.round(s)} s` : `${Math.floor(s / 60)} m ${Math.round(s % 60)} s`;
}

export function fmtTime(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "–";
}

// A live region for short confirmations and errors (screen readers hear them).
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = h(`div.toast.${kind}`, { role: kind === "error" ? "alert" : "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 3500);
}
