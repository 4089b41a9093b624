"""Plugins in the editor: failures shown, web extensions loaded through ComfyUI's module paths, each isolated.

A real `server.py` (tests/web/editor_server.py, tiny SD1 checkpoint) loads the plugins of
tests/web/plugins_fixture/ and the shipped example pack from its custom_nodes folder; the editor runs in
headless Chromium. Every test fails on a console error or an uncaught exception in the page: the
broken plugins must only ever cost a warning.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from tests.web.conftest import RESULTS, ROOT, EditorServer
from tests.web.editor import Editor

FIXTURE = Path(__file__).resolve().parent / "plugins_fixture"
PLUGINS = ("greeting_pack", "broken_import", "raises_on_import.py", "needs_extra", "throwing_web")
FAILED = {"broken_import": "missing requirement: diffloom_fixture_absent_package",
          "raises_on_import": "import raised RuntimeError: fixture plugin refuses to load"}
MARKS_JS = "() => window.fixtureMarks"


class PluginEditorServer(EditorServer):
    """`server.py` on a free loopback port, with the fixture plugins and the example pack in its custom_nodes."""

    what = "the plugin editor's server"

    def __init__(self, base: Path) -> None:
        plugins = base / "custom_nodes"
        plugins.mkdir(parents=True)
        for name in PLUGINS:
            source = FIXTURE / name
            if source.is_dir():
                shutil.copytree(source, plugins / name)
            else:
                shutil.copy(source, plugins / name)
        shutil.copytree(ROOT / "custom_nodes" / "example_pack", plugins / "example_pack",
                        ignore=shutil.ignore_patterns("__pycache__"))
        super().__init__(base)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginEditorServer]:
    server = PluginEditorServer(tmp_path_factory.mktemp("plugin_editor_base"))
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}:\n{''.join(server.lines[-60:])}"


@pytest.fixture
def editor(request: pytest.FixtureRequest, plugin_server: PluginEditorServer, browser: Browser) -> Iterator[Editor]:
    """A fresh page on the editor of the plugin server, loaded and ready; screenshots kept as conftest keeps them."""
    plugin_server.wait_ready()
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    ed = Editor(page, plugin_server.url, plugin_server.base)
    ed.open()
    yield ed
    failed = any(getattr(request.node, f"report_{when}", None) is not None
                 and getattr(request.node, f"report_{when}").failed for when in ("setup", "call"))
    problems = ed.unexpected_console_errors()
    if failed or problems or os.environ.get("DIFFLOOM_EDITOR_SCREENSHOTS") == "1":
        folder = RESULTS / re.sub(r"[^\w.-]+", "_", request.node.name)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for index, (name, png) in enumerate(ed.snapshots):
            (folder / f"{index:02d}_{name}.png").write_bytes(png)
        page.screenshot(path=str(folder / "final.png"))
        (folder / "console.txt").write_text("\n".join(ed.console))
    context.close()
    assert not problems, "console errors in the editor:\n" + "\n".join(problems)


def notice_items(editor: Editor) -> dict[str, str]:
    items = editor.page.locator("#plugin-notice li").all()
    found = {item.get_attribute("data-plugin") or "": item.inner_text() for item in items}
    assert len(found) == len(items), "one line per plugin"
    return found


def test_failed_plugins_are_named_with_their_cause_in_a_notice_and_listed_with_times(
        editor: Editor, plugin_server: PluginEditorServer) -> None:
    notice = editor.page.locator("#plugin-notice")
    assert notice.is_visible()
    assert "2 plugins failed to load" in notice.locator("header").inner_text()
    items = notice_items(editor)
    assert set(items) == {*FAILED, "needs_extra", "throwing_web"}  # the good plugins are not in it
    for plugin, cause in FAILED.items():
        assert items[plugin].startswith(plugin) and cause in items[plugin], items[plugin]
    assert "not installed: diffloom-fixture-extra-package" in items["needs_extra"]
    # five hooks of its extension threw, and a method it put on KSampler (each counted once, not once per node)
    assert "web extension: 3 scripts did not load, 6 hooks threw (first: " in items["throwing_web"]
    assert editor.page.locator("#plugin-problems").inner_text() == "4"
    editor.snap("notice")

    # every plugin, with its status and load time, in the Plugins tab
    editor.page.get_by_role("button", name="Show all plugins").click()
    panel = editor.page.locator("#panel-plugins")
    assert panel.is_visible()
    report = {p["name"]: p for p in plugin_server.get("/api/diffloom/plugins")["plugins"]}
    assert set(report) == {"greeting_pack", "broken_import", "raises_on_import", "needs_extra", "throwing_web",
                           "example_pack"}
    for name, plugin in report.items():
        row = panel.locator(f".plugin-item[data-plugin='{name}']")
        assert row.locator(".status").inner_text() == plugin["status"]
        assert re.fullmatch(r"(<0\.01|\d+\.\d\d) s", row.locator(".seconds").inner_text())
    assert panel.locator(".plugin-item").first.get_attribute("data-plugin") in FAILED  # failures come first
    assert FAILED["broken_import"] in panel.locator(".plugin-item[data-plugin='broken_import'] .cause").inner_text()
    greeting = panel.locator(".plugin-item[data-plugin='greeting_pack']")
    assert "problem" not in (greeting.get_attribute("class") or "")
    assert "1 node" in greeting.inner_text() and "web extension: 1 script loaded" in greeting.inner_text()
    throwing = panel.locator(".plugin-item[data-plugin='throwing_web']").inner_text()
    assert "web extension: 3 scripts, 3 failed" in throwing
    for detail in ("/extensions/throwing_web/syntax_error.js: SyntaxError",
                   "/extensions/throwing_web/throws_at_import.js: Error: fixture extension exploded while loading",
                   "registerExtension: an extension named 'fixture.throwing' is already registered",
                   "fixture.throwing in setup: Error: fixture hook setup exploded",
                   "fixture.throwing in nodeCreated: Error: fixture hook nodeCreated exploded (7 times)",
                   "throws_in_hooks.js in onNodeCreated of KSampler: Error: fixture patched onNodeCreated exploded"):
        assert detail in throwing, (detail, throwing)
    editor.snap("plugins_tab")

    # dismissed, it stays away for this session; the tab still lists everything
    notice.get_by_role("button", name="Dismiss").click()
    assert notice.is_hidden()
    editor.page.reload()
    editor.page.wait_for_selector("body[data-ready=true]")
    assert editor.page.locator("#plugin-notice").is_hidden()
    assert editor.page.locator("#plugin-problems").is_visible()


def test_the_good_extension_runs_every_hook_and_styles_its_node(editor: Editor) -> None:
    marks = editor.js(MARKS_JS)
    assert marks["order"] == ["init", "addCustomNodeDefs", "beforeRegisterNodeDef", "registerCustomNodes", "setup"]
    assert marks["initGotApp"] is True
    assert marks["typesAtRegistration"] > 20  # the server's node definitions, the plugin's among them
    assert marks["graphNodesAtSetup"] == 7  # setup runs once the default graph is on the canvas
    assert sorted(marks["loaded"]) == sorted(n["type"] for n in editor.graph()["nodes"])
    # /scripts/app.js and /scripts/api.js are the editor's own graph, canvas and websocket
    assert editor.js("""async () => {
        const { app } = await import('/scripts/app.js');
        const { api } = await import('/scripts/api.js');
        return app.graph === window.diffloom.graph && app.canvas === window.diffloom.canvas && app.api === api
          && api.clientId === window.diffloom.api.clientId && app.extensions.length === 3
          && typeof window.LiteGraph.createNode === 'function';
    }""")
    assert editor.js("async () => (await (await (await import('/scripts/api.js')).api.fetchApi('/object_info'))"
                     ".json()).FixtureGreeting.display_name") == "Fixture Greeting"

    node = editor.add_node("fixture greeting", "FixtureGreeting")
    styled = editor.js("(id) => { const n = window.diffloom.graph.getNodeById(id);"
                       " return [n.title, n.renderingColor, n.renderingBgColor, n.properties.fixtureStyled]; }", node)
    assert styled == ["Greeting (styled)", "#1f5f3a", "#2d7a4f", True]
    assert editor.js(MARKS_JS)["created"] == 1
    editor.snap("styled_node")


def test_a_custom_event_reaches_the_extension_and_the_default_graph_still_queues(
        editor: Editor, plugin_server: PluginEditorServer) -> None:
    greeting = editor.add_node("fixture greeting", "FixtureGreeting")
    editor.js("(id) => { window.diffloom.graph.getNodeById(id).widgets[0].value = 'plugins'; }", greeting)
    editor.set_number(5, "width", 64)
    editor.set_number(5, "height", 64)
    editor.set_number(3, "steps", 1)
    editor.queue()
    editor.page.wait_for_function("() => window.fixtureMarks.events.length > 0", timeout=60_000)
    editor.wait_idle()
    marks = editor.js(MARKS_JS)
    assert marks["events"] == [{"node": str(greeting), "greeting": "hello plugins"}]
    assert marks["executed"] == [{"node": greeting, "output": {"text": ["hello plugins"]}}]
    assert editor.node(greeting)["title"] == "Greeting: hello plugins"
    assert editor.node(9)["images"], "the default graph's SaveImage shows its image"
    assert marks["previews"] and {kind.split("/")[0] for kind in marks["previews"]} == {"image"}  # b_preview: Blobs
    assert marks["statusSeen"] == 1  # a listener removed after its first status event
    # ComfyUI's details: status is {exec_info}, executing the running node's id, then null
    assert set(marks["statusDetail"]) == {"exec_info"}
    assert str(greeting) in marks["executing"] and "3" in marks["executing"] and marks["executing"][-1] is None
    history = plugin_server.get("/api/history")
    assert [entry["status"]["status_str"] for entry in history.values()] == ["success"]
    # the throwing listeners of the other extension were reported, and only them
    failures = editor.js("() => window.diffloom.extensions.failures.filter((f) => f.hook.startsWith('listener'))")
    assert {f["hook"] for f in failures} == {"listener of 'fixture.greeting'", "listener of 'executing'"}
    assert {f["plugin"] for f in failures} == {"throwing_web"}
    editor.snap("after_run")


def test_the_example_pack_extension_titles_its_text_node_and_hears_the_countdown(editor: Editor) -> None:
    # loaded and queued through the facade, as an extension would
    editor.js("""async () => {
        const { app } = await import('/scripts/app.js');
        await app.loadGraphData({
          "1": { class_type: "ExampleCountdown", inputs: { steps: 2, seconds_per_step: 0 } },
          "2": { class_type: "ExampleShowText", inputs: { text: ["1", 0] } },
        }, true, true, "countdown");
        await app.queuePrompt(0, 1);
    }""")
    editor.page.wait_for_function("() => window.diffloom.graph.getNodeById(2)?.title.startsWith('Text: ')",
                                  timeout=60_000)
    editor.wait_idle()
    assert editor.node(2)["title"] == "Text: liftoff after 2 steps"
    assert editor.js("() => window.diffloom.graph.getNodeById(1).remaining") == 0  # drawn as "done" on the node
    editor.snap("countdown_done")
    heard = [line for line in editor.console if "[example_pack]" in line]
    assert any("1 step(s) to go" in line for line in heard) and any("0 step(s) to go" in line for line in heard)
