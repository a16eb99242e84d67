"""The near-duplicates page in a real browser (Debian's chromium, headless) against a real API
process serving a real bundle of the CIFAR slice, with keys set: a copy of an item added through
the API is shown beside its original, every thumbnail loads, at desktop and phone width."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.conftest import CIFAR_SLICE, V1
from tests.console.browser import Watch, launch, screenshot_dir
from tests.processes import start_api
from trainer.bundle import set_current, write_bundle

pytestmark = pytest.mark.slow

READ_KEY = "console-read-key-0123456789"
ADMIN_KEY = "console-admin-key-0123456789"
COPY = "copies/a-long-folder-name/cat-copy.jpg"


@pytest.fixture(scope="module")
def base(tmp_path_factory, trained_runs) -> Iterator[str]:
    root = tmp_path_factory.mktemp("duplicates-page")
    write_bundle(trained_runs[V1], root / "models", dataset="cifar-slice", version=V1,
                 extra={"job_id": None})
    set_current(root / "models", V1)
    with zipfile.ZipFile(CIFAR_SLICE) as z:
        z.extractall(root / "data" / "cifar-slice")
    env = {**os.environ, "DATA_ROOT": str(root / "data"), "MODELS_ROOT": str(root / "models"),
           "STATE_ROOT": str(root / "state"), "ADMIN_API_KEY": ADMIN_KEY,
           "READ_API_KEY": READ_KEY, "ENVIRONMENT": "development", "MODEL_POLL_S": "0.3",
           "DUPLICATE_THRESHOLD": "0.9999", "PYTHONUNBUFFERED": "1"}
    env.pop("BROKER_URL", None)
    api, url = start_api(env, root / "api.log")
    try:
        with zipfile.ZipFile(CIFAR_SLICE) as z:
            cat = z.read("cifar10/train/cat/0000.jpg")
        r = httpx.post(f"{url}/items", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                       data={"ids": [COPY]}, files=[("files", ("c.jpg", cat, "image/jpeg"))],
                       timeout=120)
        assert r.status_code == 201, r.text
        yield url
    finally:
        api.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.mark.timeout(900)
def test_pairs_side_by_side_at_desktop_and_phone_width(base: str, browser: Browser) -> None:
    shots = screenshot_dir()
    for name, viewport in (("wide", {"width": 1280, "height": 800}),
                           ("phone", {"width": 390, "height": 844})):
        watch = Watch()
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(60_000)
        page = watch.attach(context.new_page())
        page.add_init_script(f"sessionStorage.setItem('and.readKey', '{READ_KEY}');"
                             f"sessionStorage.setItem('and.adminKey', '{ADMIN_KEY}')")
        page.goto(f"{base}/#/models")
        page.locator(f"#models-table tr[data-version='{V1}'] a", has_text="Duplicates").click()
        page.wait_for_url("**/#/duplicates?*")
        expect(page.locator("nav a[data-page=models]")).to_have_attribute("aria-current", "page")
        page.fill("#dup-threshold", "0.9999")
        page.click("#dup-submit")
        first = page.locator("#dup-pairs > li").first
        expect(first.locator(".dup-item")).to_have_count(2)
        ids = first.locator(".dup-item").evaluate_all("els => els.map(e => e.dataset.id)")
        assert sorted(ids) == sorted([COPY, "train/cat/0000.jpg"])
        expect(page.locator("#dup-status")).to_contain_text("1 pair at cosine ≥ 0.9999")
        count = page.locator("#dup-pairs img").count()
        assert count == 2 * page.locator("#dup-pairs > li").count()
        page.wait_for_function(
            """n => { const imgs = [...document.querySelectorAll('#dup-pairs img')];
                return imgs.length === n && imgs.every(i => i.src.startsWith('blob:')
                    && i.complete && i.naturalWidth > 1); }""", arg=count)
        wide = page.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= viewport["width"], f"the page scrolls sideways at {viewport['width']} px"
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(Path(shots) / f"duplicates-{name}.png"), full_page=True)
        assert not watch.errors and not watch.failed, (watch.errors, watch.failed)
        assert not [a for a in watch.answers if a[0] >= 400], watch.answers
        context.close()
