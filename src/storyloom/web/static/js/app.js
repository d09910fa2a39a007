// The studio's shell: who is signed in, the header, and a hash router over the views.

import * as api from "./api.js";
import { clear, fill, h } from "./dom.js";
import { getLang, setLang, t } from "./i18n.js";
import { renderApp, renderApps } from "./views/apps.js";
import { renderChapter } from "./views/chapter.js";
import { renderOps } from "./views/ops.js";
import { renderProject } from "./views/project.js";
import { renderProjects } from "./views/projects.js";
import { renderSignin } from "./views/signin.js";

const main = document.getElementById("view");
const nav = document.getElementById("nav");
const user = document.getElementById("user");
let who = null;
let leave = () => {};

const ROUTES = [
  [/^#\/projects\/([^/]+)\/chapters\/([^/]+)$/, (m) => renderChapter(main, { pid: m[1], cid: m[2] })],
  [/^#\/projects\/([^/]+)$/, (m) => renderProject(main, { pid: m[1] })],
  [/^#\/apps\/([^/]+)\/jobs\/([^/]+)$/, (m) => renderApp(main, { name: m[1], job: m[2] })],
  [/^#\/apps\/([^/]+)$/, (m) => renderApp(main, { name: m[1] })],
  [/^#\/apps$/, () => renderApps(main)],
  [/^#\/ops$/, () => renderOps(main, { who })],
  [/^(#\/projects)?$/, () => renderProjects(main)],
];

function header() {
  fill(nav, ...[
    link("#/projects", t("nav_projects")),
    link("#/apps", t("nav_apps")),
    who && who.role === "admin" ? link("#/ops", t("nav_ops")) : null,
  ].filter(Boolean));
  const lang = h("button.ghost.lang", { type: "button", "aria-label": t("lang_label"), lang: getLang() === "zh" ? "en" : "zh",
    onclick: () => {
      setLang(getLang() === "zh" ? "en" : "zh");
      header();
      route();
    } }, t("lang_switch"));
  fill(user, ...[
    h("span.small.who", who ? (who.authenticated ? t("signed_as", who) : t("local_user")) : ""),
    lang,
    who && who.authenticated ? h("button.ghost", { type: "button", onclick: () => { api.setKey(""); start(); } }, t("signout")) : null,
  ].filter(Boolean));
  document.getElementById("brand").textContent = t("brand");
  document.title = t("brand");
}

function link(href, label) {
  const here = (location.hash || "#/projects").startsWith(href);
  return h("a", { href, "aria-current": here ? "page" : null }, label);
}

async function route() {
  leave();
  leave = () => {};
  header();
  const hash = location.hash;
  for (const [re, view] of ROUTES) {
    const m = re.exec(hash);
    if (!m) continue;
    fill(main, h("p.muted", { role: "status" }, t("loading")));
    try {
      const stop = await view(m);
      if (typeof stop === "function") leave = stop;
    } catch (err) {
      if (err instanceof api.ApiError && err.status === 401) return start(err.message);
      fill(main, h("p.error", { role: "alert" }, t("error", { msg: err.message })),
        h("button.ghost", { type: "button", onclick: route }, t("retry")));
    }
    main.focus({ preventScroll: true });
    return;
  }
  location.hash = "#/projects";
}

async function start(error) {
  setLang(getLang());
  try {
    who = await api.me();
  } catch (err) {
    who = null;
    header();
    if (err instanceof api.ApiError && err.status === 401) {
      renderSignin(main, { error, onSignedIn: (w) => { who = w; route(); } });
      return;
    }
    fill(main, h("p.error", t("error", { msg: err.message })));
    return;
  }
  route();
}

window.addEventListener("hashchange", route);
start();
