// A word-level diff of two texts (longest common subsequence), shown inline: removed words struck
// through, added ones highlighted. CJK text has no spaces: each character is a token there.

import { h } from "./dom.js";

const TOKEN = /[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]|\s+|[^\s\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]+/g;
const MAX_CELLS = 4_000_000; // beyond this, compare paragraphs instead of words

export function tokens(text) {
  return text.match(TOKEN) || [];
}

// [[op, text]] with op "=", "-", "+".
export function diff(a, b) {
  let ta = tokens(a);
  let tb = tokens(b);
  if (ta.length * tb.length > MAX_CELLS) {
    ta = a.split(/(?<=\n)/);
    tb = b.split(/(?<=\n)/);
  }
  // Common prefix and suffix first: versions of one plan often share them.
  let start = 0;
  while (start < ta.length && start < tb.length && ta[start] === tb[start]) start++;
  let endA = ta.length;
  let endB = tb.length;
  while (endA > start && endB > start && ta[endA - 1] === tb[endB - 1]) {
    endA--;
    endB--;
  }
  const A = ta.slice(start, endA);
  const B = tb.slice(start, endB);
  const n = A.length;
  const m = B.length;
  const L = new Array(n + 1);
  for (let i = 0; i <= n; i++) L[i] = new Uint32Array(m + 1);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      L[i][j] = A[i] === B[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
    }
  }
  const out = [];
  const push = (op, s) => {
    const last = out[out.length - 1];
    if (last && last[0] === op) last[1] += s;
    else out.push([op, s]);
  };
  if (start) push("=", ta.slice(0, start).join(""));
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (A[i] === B[j]) {
      push("=", A[i]);
      i++;
      j++;
    } else if (L[i + 1][j] >= L[i][j + 1]) push("-", A[i++]);
    else push("+", B[j++]);
  }
  while (i < n) push("-", A[i++]);
  while (j < m) push("+", B[j++]);
  if (endA < ta.length) push("=", ta.slice(endA).join(""));
  return out;
}

export function diffView(a, b) {
  const parts = diff(a, b);
  let added = 0;
  let removed = 0;
  const body = h("div.diff", { tabindex: "0" });
  for (const [op, s] of parts) {
    if (op === "=") body.append(s);
    else if (op === "-") {
      removed += s.length;
      body.append(h("del", s));
    } else {
      added += s.length;
      body.append(h("ins", s));
    }
  }
  return h("div", h("p.diff-stats", h("ins", `+${added}`), " ", h("del", `−${removed}`)), body);
}
