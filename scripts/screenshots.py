"""Screenshots of the studio's main screens into docs/screenshots/ (the README shows them).

    PYTHONPATH=src python scripts/screenshots.py [--out docs/screenshots] [--lang en|zh]

Starts a real `storyloom serve` with the simulator on a temporary data dir (the bench echo app
served beside the novel), drives the system's Chromium through the same steps as tests/web, and
writes one PNG per screen. Run it again after a change to the UI to keep the README current.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SIM = {
    "seed": 3,
    "default": {"ttft_s": 0.05, "tokens_per_s": 120.0, "answer_tokens": 60},
    "chunk_interval_s": 0.03,
}


def serve(tmp: Path) -> tuple[subprocess.Popen[str], str]:
    (tmp / "sim.json").write_text(json.dumps(SIM))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORYLOOM_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    env["STORYLOOM_APPS"] = "storyloom.bench.apps:echo"
    args = ["serve", "--port", "0", "--workers", "1..1", "--data-dir", str(tmp / "data")]
    args += ["--sim-config", str(tmp / "sim.json"), "--worker-nice", "0", "--grace-s", "0.5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "storyloom.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit("storyloom serve did not start")
    return proc, url


def shoot(page: Page, out: Path, name: str, *, full: bool = False) -> None:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--lang", choices=("en", "zh"), default="en")
    ns = parser.parse_args()
    ns.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        proc, url = serve(Path(tmp_name))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                locale = "zh-CN" if ns.lang == "zh" else "en-US"
                page = browser.new_page(viewport={"width": 1360, "height": 900}, locale=locale)
                page.goto(url + "/")
                page.wait_for_selector(".new-project")
                page.fill(".new-project input[name=title]", "The Ferry" if ns.lang == "en" else "渡口")
                page.fill(
                    ".new-project textarea[name=premise]",
                    "A courier on a river ferry learns the sword."
                    if ns.lang == "en"
                    else "少年林风在渡口遇见一位老剑客，从此踏上习剑之路。",
                )
                page.select_option(".new-project select[name=language]", ns.lang)
                books = page.locator(".new-project input[name=chapters]").count() > 0
                if books:  # the book routes: the bible and an outline are generated
                    page.fill(".new-project input[name=chapters]", "6")
                page.click(".new-project button[type=submit]")
                page.wait_for_selector("form.bible")
                if books:
                    page.wait_for_selector(".outline-row[data-number='6']", timeout=120_000)
                    page.wait_for_selector(".story-bible")
                shoot(page, ns.out, "project")
                if books:
                    page.click(".chapter-row[data-index='1'] a")
                    page.wait_for_selector(".write-form")
                else:
                    page.fill(
                        ".write-form textarea[name=outline]",
                        "Lin meets the old swordsman at the ferry."
                        if ns.lang == "en"
                        else "林风在渡口遇见老剑客。",
                    )
                page.fill(".write-form input[name=versions]", "3")
                page.fill(".write-form input[name=target_length]", "400")
                page.click(".write-form button[type=submit]")
                page.wait_for_function(
                    "() => [1, 2, 3].every((n) => (document.querySelector(`.stream[data-version='${n}']`)"
                    " || {}).textContent?.length > 150)",
                    timeout=120_000,
                )
                shoot(page, ns.out, "chapter-live")
                page.wait_for_selector(".compare-section", timeout=180_000)
                page.locator("section.compare-section").scroll_into_view_if_needed()
                shoot(page, ns.out, "compare")
                if books:
                    page.wait_for_selector("textarea.chapter-edit")
                    page.locator("section.editor").scroll_into_view_if_needed()
                    shoot(page, ns.out, "edit")
                page.goto(url + "/#/apps/bench-echo")
                page.wait_for_selector("form.app-form")
                page.fill("form.app-form [name=question]", "What makes a good ferry story?")
                page.click("form.app-form button[type=submit]")
                page.wait_for_selector(".result[data-done]", timeout=60_000)
                shoot(page, ns.out, "app")
                page.goto(url + "/#/ops")
                page.wait_for_selector(".jobs table")
                page.select_option(".filters select >> nth=0", "")
                page.wait_for_timeout(500)
                shoot(page, ns.out, "operations")
                phone = browser.new_page(
                    viewport={"width": 390, "height": 844}, is_mobile=True, locale=locale
                )
                phone.goto(page.url.replace("#/ops", "#/projects"))
                phone.wait_for_selector(".project-list")
                shoot(phone, ns.out, "phone")
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
