// Sign in with an API key (only when the service runs with --auth).

import * as api from "../api.js";
import { clear, fill, h } from "../dom.js";
import { t } from "../i18n.js";

export function renderSignin(root, { onSignedIn, error }) {
  const key = h("input", { type: "password", name: "key", autocomplete: "off", required: true, id: "signin-key", spellcheck: "false" });
  const message = h("p.error", { role: "alert" }, error || "");
  const form = h("form.card.signin", {
    onsubmit: async (e) => {
      e.preventDefault();
      api.setKey(key.value.trim());
      try {
        const who = await api.me();
        onSignedIn(who);
      } catch (err) {
        api.setKey("");
        message.textContent = t("signin_bad", { msg: err.message });
      }
    },
  }, h("h1", t("signin_title")), h("p", t("signin_help")),
  h("label", { for: "signin-key" }, t("signin_key")), key, message,
  h("button.primary", { type: "submit" }, t("signin_go")));
  fill(root, form);
  key.focus();
}
