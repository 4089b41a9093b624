"""Fixtures for the editor tests: one real server with a tiny checkpoint, one headless Chromium, a page per test.

Every test fails on a console error or uncaught exception in the page (except the HTTP errors a test
says it expects). When a test fails, the screenshots of its key states and of the final page are
saved under test-results/web/<test name>/ (always, with DIFFLOOM_EDITOR_SCREENSHOTS=1, to look at the UI).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from bench.server_proc import ServerProcess
from tests.web.editor import Editor

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results" / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# A ComfyUI-format workflow (positional widgets_values) offered by the workflows/ listing.
LISTED_WORKFLOW = {
    "last_node_id": 2, "last_link_id": 1, "version": 0.4, "config": {}, "extra": {}, "groups": [],
    "nodes": [
        {"id": 1, "type": "EmptyLatentImage", "pos": [100, 100], "size": [315, 106], "flags": {}, "order": 0,
         "mode": 0, "inputs": [], "outputs": [{"name": "LATENT", "type": "LATENT", "links": [1], "slot_index": 0}],
         "properties": {"Node name for S&R": "EmptyLatentImage"}, "widgets_values": [96, 80, 2]},
        {"id": 2, "type": "LatentUpscaleBy", "pos": [500, 100], "size": [315, 82], "flags": {}, "order": 1,
         "mode": 0, "inputs": [{"name": "samples", "type": "LATENT", "link": 1}], "outputs": [
            {"name": "LATENT", "type": "LATENT", "links": [], "slot_index": 0}],
         "properties": {"Node name for S&R": "LatentUpscaleBy"}, "widgets_values": ["bilinear", 1.5]},
    ],
    "links": [[1, 1, 0, 2, 0, "LATENT"]],
}


BROKEN_CHECKPOINT = "zz-broken.safetensors"  # sorts after the tiny one, which stays the default


class EditorServer(ServerProcess):
    """`server.py` (through tests/web/editor_server.py) on a free loopback port, with a tiny SD1 checkpoint.

    It starts at once; the first test waits for it (`wait_ready`), so the browser starts meanwhile.
    """

    what = "the editor's server"
    script = "tests/web/editor_server.py"
    fixed_args = ("--tiny-checkpoint", "sd1", "--front-end-root", str(ROOT / "web"), "--preview-size", "64")

    def __init__(self, base: Path, *flags: str) -> None:
        super().__init__(base, *flags)
        self.spawn()


@pytest.fixture(scope="session")
def editor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EditorServer]:
    base = tmp_path_factory.mktemp("editor_base")
    workflows = tmp_path_factory.mktemp("editor_workflows")
    (workflows / "latent_upscale.json").write_text(json.dumps(LISTED_WORKFLOW))
    # a checkpoint that fails while loading (not while validating): for the execution-error test
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / BROKEN_CHECKPOINT).write_bytes(b"not a checkpoint" * 8)
    # the first editor waits for it; the browser starts meanwhile
    server = EditorServer(base, "--workflows-directory", str(workflows), "--disable-all-custom-nodes")
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}:\n{''.join(server.lines[-60:])}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium package (make browser)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def editor(request: pytest.FixtureRequest, editor_server: EditorServer, browser: Browser) -> Iterator[Editor]:
    """A fresh browser context on the editor page, loaded and ready."""
    editor_server.wait_ready()
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page: Page = context.new_page()
    page.set_default_timeout(20_000)
    ed = Editor(page, editor_server.url, editor_server.base)
    ed.open()
    yield ed
    problems = finish_editor_test(request, ed)
    context.close()
    assert not problems, "console errors in the editor:\n" + "\n".join(problems)


def finish_editor_test(request: pytest.FixtureRequest, editor: Editor, prefix: str = "") -> list[str]:
    """The page's unexpected console errors; screenshots and console saved if the test failed or had any."""
    failed = any(getattr(request.node, f"report_{when}", None) is not None
                 and getattr(request.node, f"report_{when}").failed for when in ("setup", "call"))
    problems = editor.unexpected_console_errors()
    if failed or problems or os.environ.get("DIFFLOOM_EDITOR_SCREENSHOTS") == "1":
        folder = RESULTS / (prefix + re.sub(r"[^\w.-]+", "_", request.node.name))
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for index, (name, png) in enumerate(editor.snapshots):
            (folder / f"{index:02d}_{name}.png").write_bytes(png)
        try:
            editor.page.screenshot(path=str(folder / "final.png"))
        except Exception as exc:  # noqa: BLE001 - the page may be gone; the saved states still help
            (folder / "final.txt").write_text(f"no final screenshot: {exc}")
        (folder / "console.txt").write_text("\n".join(editor.console))
    return problems
