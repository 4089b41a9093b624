"""The editor in Debian's Firefox ESR, its window the size of a laptop screen, against the real server.

Firefox is driven over Marionette (tests/web/firefox.py) by the same `Editor` as the Chromium tests,
with real mouse and keyboard input. Any console error or uncaught exception in the page fails a test;
the first test shows that such errors are caught. On a failure, screenshots of the test's key states
and of the final page go to test-results/web/firefox_<test name>/.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from marionette_driver.marionette import Marionette

from tests.web.conftest import finish_editor_test
from tests.web.editor import Editor
from tests.web.firefox import (LAPTOP_SCREEN, FirefoxPage, GeckoLog, parse_log, start_firefox, stop_firefox,
                               wait_for_download)
from tests.web.test_editor import DEFAULT_LINKS, DEFAULT_TYPES, make_small, named_links

# Where the editor's parts are on the page, and whether each is the topmost thing at its centre.
LAYOUT_JS = """() => {
  const box = (e) => { const r = e.getBoundingClientRect();
    const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
    return { name: e.id || e.className || e.textContent.trim(), left: r.left, top: r.top, right: r.right,
             bottom: r.bottom, onTop: hit === e || e.contains(hit) }; };
  const all = (selector) => [...document.querySelectorAll(selector)].filter((e) => e.checkVisibility()).map(box);
  const canvas = window.diffloom.canvasElement;
  return {
    window: [window.outerWidth, window.outerHeight], viewport: [innerWidth, innerHeight],
    scroll: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
    toolbar: box(document.getElementById('toolbar')), sidebar: box(document.getElementById('sidebar')),
    canvas: box(canvas), backing: [canvas.width, canvas.height], ratio: devicePixelRatio,
    controls: all('#toolbar .brand, #toolbar button, #batch-count, #workflow-name, #progress'),
    tabs: all('#sidebar [role=tab]'), view: all('#view-tools button'),
  };
}"""
NODES_ON_SCREEN_JS = """() => { const app = window.diffloom; const r = app.canvasElement.getBoundingClientRect();
  return app.graph.nodes.map((n) => { const [x0, y0] = app.canvas.ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - 30]);
    const [x1, y1] = app.canvas.ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
    return { id: n.id, left: r.left + x0, top: r.top + y0, right: r.left + x1, bottom: r.top + y1 }; }); }"""


@dataclass
class Firefox:
    """One Firefox for the module's tests: its driver, its log and its download folder."""

    marionette: Marionette
    log: GeckoLog
    downloads: Path


@pytest.fixture(scope="module")
def firefox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Firefox]:
    """Started while the session's server loads its models; quit when the module is done."""
    folder = tmp_path_factory.mktemp("firefox")
    downloads = folder / "downloads"
    downloads.mkdir()
    marionette = start_firefox(folder / "firefox.log", downloads)
    yield Firefox(marionette, GeckoLog(folder / "firefox.log"), downloads)
    stop_firefox(marionette)


@pytest.fixture
def fx(request: pytest.FixtureRequest, editor_server, firefox: Firefox) -> Iterator[Editor]:  # noqa: ANN001
    """The editor page in a new Firefox tab, loaded and ready; fails the test on a console error."""
    editor_server.wait_ready()
    for old in firefox.downloads.iterdir():
        old.unlink()
    page = FirefoxPage(firefox.marionette, firefox.log)
    page.new_tab()
    firefox.log.mark()
    editor = Editor(page, editor_server.url, editor_server.base)  # type: ignore[arg-type]
    editor.open()
    yield editor
    page.drain_console()
    problems = finish_editor_test(request, editor, prefix="firefox_")
    assert not problems, "console errors in the editor (Firefox):\n" + "\n".join(problems)


def inside(inner: dict, outer: dict, slack: float = 0.5) -> bool:
    """Whether box `inner` lies within box `outer` (subpixel slack)."""
    return (inner["left"] >= outer["left"] - slack and inner["top"] >= outer["top"] - slack
            and inner["right"] <= outer["right"] + slack and inner["bottom"] <= outer["bottom"] + slack)


def overlap(a: dict, b: dict) -> bool:
    """Whether two boxes share more than a subpixel edge."""
    return a["left"] < b["right"] - 0.5 and b["left"] < a["right"] - 0.5 \
        and a["top"] < b["bottom"] - 0.5 and b["top"] < a["bottom"] - 0.5


def test_console_errors_and_uncaught_exceptions_of_the_page_are_caught(fx: Editor) -> None:
    page: FirefoxPage = fx.page  # type: ignore[assignment]
    # a script of the page's own (errors in scripts run by the driver are not the page's)
    fx.js("""() => { const script = document.createElement('script');
        script.textContent = "console.error('probe: a console error'); console.log('probe: only a log');"
          + " console.error(new Error('probe: an error object'));"
          + " setTimeout(() => { throw new Error('probe: thrown'); }); Promise.reject(new Error('probe: rejected'));";
        document.body.append(script); }""")
    page.wait_for_timeout(100)
    page.drain_console()
    problems = fx.unexpected_console_errors()
    assert len(problems) == 4, problems
    assert '"probe: a console error"' in problems[0]
    assert "probe: an error object" in problems[1]
    assert problems[2].startswith("uncaught: Error: probe: thrown (http://")
    assert problems[3].startswith("uncaught: Error: probe: rejected (http://")
    assert any("probe: only a log" in line for line in fx.console)
    fx.errors.clear()  # they were the point of this test


def test_the_default_graph_fits_a_laptop_screen(fx: Editor) -> None:
    page = fx.page
    fx.snap("loaded")
    graph = fx.graph()
    assert {n["id"]: n["type"] for n in graph["nodes"]} == DEFAULT_TYPES
    assert named_links(graph) == DEFAULT_LINKS
    assert fx.node(4)["widgets"]["ckpt_name"] == "tiny-sd1.safetensors"
    sampler = fx.node(3)["widgets"]
    assert sampler["steps"] == 20 and sampler["cfg"] == 8 and sampler["sampler_name"] == "euler"
    assert fx.node(6)["widgets"]["text"].startswith("beautiful scenery")
    assert page.locator("#workflow-name").inner_text() == "Default txt2img"

    layout = fx.js(LAYOUT_JS)
    assert layout["window"] == list(LAPTOP_SCREEN)
    width, height = layout["viewport"]
    assert width == LAPTOP_SCREEN[0] and 600 < height < LAPTOP_SCREEN[1]  # the browser's own bars take the rest
    assert layout["scroll"] == [width, height], "the page scrolls: something sticks out"
    screen = {"left": 0, "top": 0, "right": width, "bottom": height}
    toolbar, canvas, sidebar = layout["toolbar"], layout["canvas"], layout["sidebar"]
    # the toolbar clips what does not fit: every control must be whole, uncovered and apart from the others
    controls = layout["controls"]
    assert {"btn-queue", "btn-save", "btn-workflows", "btn-add", "progress"} <= {c["name"] for c in controls}
    for control in controls:
        assert inside(control, toolbar) and inside(control, screen) and control["onTop"], control
    for index, control in enumerate(controls):
        for other in controls[index + 1:]:
            assert not overlap(control, other), (control, other)
    # the canvas fills what the toolbar and the sidebar leave, and draws at full resolution
    assert canvas["onTop"] and inside(canvas, screen) and inside(sidebar, screen)
    assert abs(canvas["top"] - toolbar["bottom"]) <= 1 and abs(canvas["right"] - sidebar["left"]) <= 1
    assert canvas["left"] == 0 and abs(canvas["bottom"] - height) <= 1
    assert layout["backing"] == [round((canvas["right"] - canvas["left"]) * layout["ratio"]),
                                 round((canvas["bottom"] - canvas["top"]) * layout["ratio"])]
    for part in layout["tabs"]:
        assert inside(part, sidebar) and part["onTop"], part
    for part in layout["view"]:
        assert inside(part, canvas) and part["onTop"], part
    # the whole default graph is in view
    for node in fx.js(NODES_ON_SCREEN_JS):
        assert inside(node, canvas), node

    # the workflows menu opens inside the screen, its entry clickable
    page.click("#btn-workflows")
    entry = page.locator("#workflow-menu .menu-item", has_text="latent_upscale.json")
    entry.wait_for()
    menu = fx.js("() => { const r = document.getElementById('workflow-menu').getBoundingClientRect();"
                 " return { left: r.left, top: r.top, right: r.right, bottom: r.bottom }; }")
    assert inside(menu, screen), menu
    fx.snap("workflow_menu")
    page.click("#btn-workflows")
    entry.wait_for(state="hidden")
    # the canvas menu, opened near the bottom right corner, stays inside the screen too
    page.mouse.click(canvas["right"] - 30, canvas["bottom"] - 30, button="right")
    page.locator(".litecontextmenu").wait_for()
    fx.snap("canvas_menu")
    for menu in fx.js("() => [...document.querySelectorAll('.litecontextmenu')].map((m) => {"
                      " const r = m.getBoundingClientRect(); return {left: r.left, top: r.top, right: r.right,"
                      " bottom: r.bottom, fits: m.scrollHeight <= m.clientHeight,"
                      " scrollbar: m.offsetWidth - m.clientWidth}; })"):
        assert inside(menu, screen), menu
        assert not menu["fits"] or menu["scrollbar"] <= 2, f"a menu that fits shows a scrollbar: {menu}"
    page.locator(".litecontextmenu .litemenu-entry", has_text="Add Node").first.click()
    page.locator(".litecontextmenu .litemenu-entry", has_text="latent").first.click()
    page.locator(".litecontextmenu .litemenu-entry", has_text="Upscale Latent By").first.click()
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 8")
    assert fx.nodes_of_type("LatentUpscaleBy")[0]["title"] == "Upscale Latent By"


def test_set_widgets_queue_and_the_image_arrives_with_progress(fx: Editor) -> None:
    page = fx.page
    make_small(fx, 5, 3, steps=3)
    fx.set_text(6, "text", "a red bottle, in firefox")
    page.mouse.click(*fx.widget_pos(3, "control_after_generate"))
    page.locator(".litecontextmenu .litemenu-entry", has_text="fixed").first.click()
    page.mouse.click(*fx.widget_pos(3, "seed", "right"))  # one step up by its arrow
    widgets = fx.node(3)["widgets"]
    assert widgets["steps"] == 3 and widgets["control_after_generate"] == "fixed" and widgets["seed"] == 156680208700287
    assert (fx.node(5)["widgets"]["width"], fx.node(5)["widgets"]["height"]) == (64, 64)
    assert fx.node(6)["widgets"]["text"] == "a red bottle, in firefox"
    fx.snap("widgets_set")
    fx.js("""() => { window.__seen = {progress: [], executing: []};
        const api = window.diffloom.api;
        api.addEventListener('progress', (e) => window.__seen.progress.push([e.detail.value, e.detail.max,
            document.querySelector('#progress .label').textContent]));
        api.addEventListener('executing', (e) => window.__seen.executing.push(e.detail.node)); }""")
    fx.queue()
    page.wait_for_function("() => window.diffloom.graph.getNodeById(9).imageUrls?.length", timeout=90_000)
    fx.wait_idle()
    fx.snap("finished")
    seen = fx.js("() => window.__seen")
    assert [p[:2] for p in seen["progress"]] == [[1, 3], [2, 3], [3, 3]]
    assert all("KSampler" in p[2] for p in seen["progress"])
    assert "3" in seen["executing"] and "9" in seen["executing"]
    image_url = fx.node(9)["images"][0]
    assert "/api/view?" in image_url and "type=output" in image_url
    size = fx.js("""async (url) => { const img = new Image(); img.src = url; await img.decode();
        return [img.naturalWidth, img.naturalHeight]; }""", image_url)
    assert size == [64, 64]
    assert fx.node(3)["widgets"]["seed"] == 156680208700287  # fixed: not moved on
    # what the server ran is what the widgets said
    (prompt,) = [entry["prompt"][2] for entry in fx.api("/api/history").values()
                 if entry["prompt"][2].get("6", {}).get("inputs", {}).get("text") == "a red bottle, in firefox"]
    assert prompt["3"]["inputs"]["steps"] == 3 and prompt["3"]["inputs"]["seed"] == 156680208700287
    assert prompt["5"]["inputs"]["width"] == 64 and prompt["6"]["inputs"]["text"] == "a red bottle, in firefox"
    page.click("#sidebar [aria-controls=panel-gallery]")
    page.locator("#gallery .gallery-item img").wait_for()
    assert page.locator("#gallery .gallery-item img").count() == 1


def test_add_nodes_by_search_connect_sockets_and_refuse_wrong_types(fx: Editor) -> None:
    page = fx.page
    links_before = fx.graph()["links"]
    # wrong types: MODEL onto CLIP and VAE inputs, LATENT onto an INT widget socket
    fx.connect(4, 0, 6, "clip")
    fx.connect(4, 0, 8, "vae")
    fx.connect(5, 0, 3, "steps")
    assert fx.graph()["links"] == links_before
    # double-click the canvas, search, pick; then link it
    upscale = fx.add_node("upscale latent by", "LatentUpscaleBy")
    fx.connect(5, 0, upscale, "samples")
    assert (5, 0, upscale, "samples") in named_links(fx.graph())
    # the keyboard opens the search box too; Enter takes the first hit
    page.keyboard.press("/")
    box = page.locator(".litesearchbox input")
    box.wait_for()
    box.type("primitive")
    box.press("Enter")
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 9")
    primitive = max(n["id"] for n in fx.graph()["nodes"])
    assert fx.node(primitive)["type"] == "PrimitiveNode"
    fx.connect(primitive, 0, 3, "model")  # a widget value cannot feed a MODEL socket
    assert not fx.node(primitive)["outputs"][0]["links"]
    fx.connect(primitive, 0, 3, "seed")
    assert fx.node(primitive)["outputs"][0]["type"] == "INT"
    assert next(i for i in fx.node(3)["inputs"] if i["name"] == "seed")["link"] is not None
    fx.snap("linked")
    # the right type on an input replaces its old link
    fx.connect(4, 2, 8, "vae")
    assert (4, 2, 8, "vae") in named_links(fx.graph())
    assert len(fx.graph()["links"]) == len(links_before) + 2


def test_save_export_api_and_reopen_give_the_same_graph(fx: Editor, firefox: Firefox) -> None:
    page = fx.page
    fx.set_number(3, "steps", 7)
    fx.set_text(7, "text", "blurry")
    before = fx.saved_form()
    page.click("#btn-save")
    page.locator(".dialog input.text").fill("my graph")
    page.locator(".dialog button.primary").click()
    saved = wait_for_download(firefox.downloads, "my graph.json")
    data = json.loads(saved.read_text())
    assert data["version"] == 0.4
    sampler = next(n for n in data["nodes"] if n["id"] == 3)
    assert sampler["widgets_values"]["steps"] == 7 and sampler["widgets_values"]["sampler_name"] == "euler"
    page.click("#btn-export")
    exported_file = wait_for_download(firefox.downloads, "my_graph_api.json")
    exported = json.loads(exported_file.read_text())
    assert exported["3"]["inputs"]["steps"] == 7 and exported["7"]["inputs"]["text"] == "blurry"
    assert exported["3"]["inputs"]["model"] == ["4", 0]
    # open the saved file into an empty canvas: the same graph, by the page's own file input
    page.click("#btn-new")
    assert fx.graph()["nodes"] == []
    page.set_input_files("#file-input", str(saved))
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")
    fx.snap("reopened")
    assert fx.saved_form() == before
    assert page.locator("#workflow-name").inner_text() == "my graph"
    # a reload of the page keeps it
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert fx.saved_form() == before
    # the API file opens too and makes the same prompt
    page.click("#btn-new")
    page.set_input_files("#file-input", str(exported_file))
    page.wait_for_function("() => window.diffloom.graph.nodes.length === 7")
    assert named_links(fx.graph()) == DEFAULT_LINKS
    again = fx.js("async () => window.diffloom.api.convertWorkflow(window.diffloom.snapshot())")
    assert again == exported


FIREFOX_LOG_SAMPLE = """console.error: RSLoader:
  Failed to retrieve recipes from Remote Settings
  Message: Error: Could not sync nimbus-desktop-experiments: get-exception
  Stack:
    RemoteSettingsSyncError@resource://nimbus/lib/RemoteSettingsExperimentLoader.sys.mjs:1570:5
getRecipesFromCollection@resource://nimbus/lib/RemoteSettingsExperimentLoader.sys.mjs:824:13

JavaScript error: resource:///modules/backup/BackupService.sys.mjs, line 4408: NotAllowedError: PathUtils.join: no
[Parent 1, Main Thread] WARNING: g_object_get: assertion 'G_IS_OBJECT (object)' failed
console.error: "a page error:" "boom"
JavaScript error: http://127.0.0.1:5000/js/app.js, line 3: TypeError: x is undefined
JavaScript warning: http://127.0.0.1:5000/vendor/litegraph/litegraph.es.js, line 9: Script terminated by timeout at:
renderFrame@http://127.0.0.1:5000/vendor/litegraph/litegraph.es.js:9:25

console.warn: "queue refresh failed:" "offline"
"""


def test_the_log_reader_tells_the_page_from_the_browser(tmp_path: Path) -> None:
    """Firefox's stdout mixes the page's console with the browser's own; only the page's errors count."""
    page = FirefoxPage(None, GeckoLog(tmp_path / "unused.log"))  # type: ignore[arg-type] - no browser needed
    page.origin = "http://127.0.0.1:5000"
    editor = Editor(page, page.origin, tmp_path)  # type: ignore[arg-type]
    for record in parse_log(FIREFOX_LOG_SAMPLE):
        page.dispatch(record)
    assert editor.unexpected_console_errors() == [
        '"a page error:" "boom" (http://127.0.0.1:5000)',
        "uncaught: TypeError: x is undefined (http://127.0.0.1:5000/js/app.js:3) ()",
        "uncaught: Script terminated by timeout at: (http://127.0.0.1:5000/vendor/litegraph/litegraph.es.js:9) ()"]
    kinds = [line.split("]")[0] for line in editor.console]
    assert kinds == ["[browser", "[browser", "[error", "[warning"]
