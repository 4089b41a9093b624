"""Drive the editor page like a person does: mouse on the canvas, keyboard, buttons, files.

Positions on the canvas are read from the page (litegraph's node and slot geometry turned into
screen coordinates), then the real mouse is moved there; the graph itself is only read, never
edited from script, except where a test says so.
"""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

SCREEN_POS_JS = """([x, y]) => {
  const app = window.diffloom;
  const rect = app.canvasElement.getBoundingClientRect();
  const [sx, sy] = app.canvas.ds.convertOffsetToCanvas([x, y]);
  return [rect.left + sx, rect.top + sy];
}"""

GRAPH_JS = """() => {
  const graph = window.diffloom.graph;
  return {
    nodes: graph.nodes.map((n) => ({
      id: n.id, type: n.type, title: n.title, pos: [...n.pos], size: [...n.size], mode: n.mode,
      widgets: Object.fromEntries((n.widgets ?? []).filter((w) => w.type !== 'button').map((w) => [w.name, w.value])),
      inputs: (n.inputs ?? []).map((i) => ({ name: i.name, type: i.type, link: i.link, widget: i.widget?.name ?? null })),
      outputs: (n.outputs ?? []).map((o) => ({ name: o.name, type: o.type, links: [...(o.links ?? [])] })),
      hasErrors: !!n.has_errors, images: [...(n.imageUrls ?? [])],
    })),
    links: [...graph._links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]),
    groups: graph._groups.map((g) => ({ title: g.title, bounding: [...g._bounding] })),
  };
}"""


class Editor:
    """The editor page and what a test needs to act on it."""

    def __init__(self, page: Page, url: str, base: Path) -> None:
        self.page = page
        self.url = url
        self.base = base
        self.console: list[str] = []
        self.errors: list[tuple[str, str]] = []  # (text, url) of console errors and page exceptions
        self.allowed: list[tuple[str, int]] = []
        self.snapshots: list[tuple[str, bytes]] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append((f"uncaught: {exc}", "")))

    def _on_console(self, message: Any) -> None:
        self.console.append(f"[{message.type}] {message.text} ({message.location.get('url', '')})")
        if message.type == "error":
            self.errors.append((message.text, message.location.get("url", "")))

    def expect_http_error(self, path: str, status: int) -> None:
        """Chromium logs failed fetches as console errors; this one is expected by the test."""
        self.allowed.append((path, status))

    def unexpected_console_errors(self) -> list[str]:
        problems = []
        for text, url in self.errors:
            expected = any(path in url and f"status of {status}" in text for path, status in self.allowed)
            if not expected:
                problems.append(f"{text} ({url})")
        return problems

    def snap(self, name: str) -> None:
        """Keep a screenshot of a key state; saved to disk only if the test fails."""
        self.snapshots.append((name, self.page.screenshot()))

    # ------------------------------------------------------------------ page and server

    def open(self) -> None:
        self.page.goto(self.url + "/")
        self.page.wait_for_selector("body[data-ready=true]")
        self.page.wait_for_function("() => window.diffloom.api.connected")

    def api(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                         headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def js(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    # ------------------------------------------------------------------ reading the graph

    def graph(self) -> dict[str, Any]:
        return self.js(GRAPH_JS)

    def nodes_of_type(self, class_type: str) -> list[dict[str, Any]]:
        return [n for n in self.graph()["nodes"] if n["type"] == class_type]

    def node(self, node_id: int) -> dict[str, Any]:
        return next(n for n in self.graph()["nodes"] if n["id"] == node_id)

    def saved_form(self) -> dict[str, Any]:
        """What Save would write, minus the view position."""
        return self.js("() => window.diffloom.snapshot()")

    # ------------------------------------------------------------------ geometry

    def screen(self, x: float, y: float) -> tuple[float, float]:
        sx, sy = self.js(SCREEN_POS_JS, [x, y])
        return sx, sy

    def slot_pos(self, node_id: int, slot: int, *, output: bool) -> tuple[float, float]:
        x, y = self.js("([id, slot, output]) => { const n = window.diffloom.graph.getNodeById(id);"
                       " return output ? n.getOutputPos(slot) : n.getInputPos(slot); }", [node_id, slot, output])
        return self.screen(x, y)

    def input_index(self, node_id: int, name: str) -> int:
        return next(i for i, slot in enumerate(self.node(node_id)["inputs"]) if slot["name"] == name)

    def widget_pos(self, node_id: int, name: str, where: str = "center") -> tuple[float, float]:
        """Screen position on a widget: its centre, or its left or right arrow."""
        x, y = self.js("""([id, name, where]) => {
            const n = window.diffloom.graph.getNodeById(id);
            const w = n.widgets.find((w) => w.name === name);
            const h = w.computedHeight ? w.computedHeight - 4 : 20;
            const x = where === 'left' ? 22 : where === 'right' ? n.size[0] - 22 : n.size[0] / 2;
            return [n.pos[0] + x, n.pos[1] + w.y + h / 2];
        }""", [node_id, name, where])
        return self.screen(x, y)

    def title_pos(self, node_id: int) -> tuple[float, float]:
        x, y = self.js("(id) => { const n = window.diffloom.graph.getNodeById(id);"
                       " return [n.pos[0] + n.size[0] / 2, n.pos[1] - 15]; }", node_id)
        return self.screen(x, y)

    def empty_spot(self) -> tuple[float, float]:
        """A screen point on the canvas with no node or group under it."""
        return tuple(self.js("""() => {
            const app = window.diffloom;
            const rect = app.canvasElement.getBoundingClientRect();
            for (let fy = 0.9; fy > 0.05; fy -= 0.05) {
              for (let fx = 0.1; fx < 0.9; fx += 0.05) {
                const sx = rect.left + rect.width * fx, sy = rect.top + rect.height * fy;
                const [x, y] = app.canvas.ds.convertCanvasToOffset([sx - rect.left, sy - rect.top]);
                const near = app.graph.nodes.some((n) => x > n.pos[0] - 40 && x < n.pos[0] + n.size[0] + 40
                  && y > n.pos[1] - 70 && y < n.pos[1] + n.size[1] + 40);
                if (!near && !app.graph.getGroupOnPos(x, y)) return [sx, sy];
              }
            }
            throw new Error('no empty spot on the canvas');
        }"""))

    # ------------------------------------------------------------------ actions

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        mouse = self.page.mouse
        mouse.move(*start)
        mouse.down()
        for i in range(1, 9):
            mouse.move(start[0] + (end[0] - start[0]) * i / 8, start[1] + (end[1] - start[1]) * i / 8)
        mouse.up()
        self.page.wait_for_timeout(50)

    def connect(self, source: int, output: int, target: int, input_name: str) -> None:
        """Drag a link from an output slot to a named input slot."""
        self.drag(self.slot_pos(source, output, output=True),
                  self.slot_pos(target, self.input_index(target, input_name), output=False))

    def add_node(self, query: str, class_type: str, at: tuple[float, float] | None = None) -> int:
        """Double-click the canvas, type in the search box, pick `class_type`; returns the new node's id."""
        before = {n["id"] for n in self.graph()["nodes"]}
        x, y = at or self.empty_spot()
        # delay: litegraph takes two presses at the same timestamp (the page's clock is coarse, and scripted
        # presses can be that close) for one click; a person's double click takes 100 ms or more.
        self.page.mouse.dblclick(x, y, delay=20)
        box = self.page.locator(".litesearchbox input")
        box.wait_for()
        box.type(query, delay=10)
        item = self.page.locator(f".litesearchbox .lite-search-item[data-type='{class_type}']")
        item.wait_for()
        item.click()
        self.page.wait_for_function("(n) => window.diffloom.graph.nodes.length > n", arg=len(before))
        added = [n for n in self.graph()["nodes"] if n["id"] not in before]
        assert len(added) == 1 and added[0]["type"] == class_type, added
        return added[0]["id"]

    def set_number(self, node_id: int, name: str, value: float) -> None:
        """Click a number widget's middle and type the value in litegraph's prompt (the widget may snap it)."""
        self.page.mouse.click(*self.widget_pos(node_id, name))
        field = self.page.locator(".graphdialog input.value")
        field.wait_for()
        field.fill(str(value))
        field.press("Enter")
        field.wait_for(state="detached")

    def set_text(self, node_id: int, name: str, text: str) -> None:
        """Click a multi-line text widget and type into the textarea that opens."""
        self.page.mouse.click(*self.widget_pos(node_id, name))
        area = self.page.locator("textarea.text-editor")
        area.wait_for()
        area.fill(text)
        area.press("Escape")

    def queue(self) -> None:
        self.page.click("#btn-queue")

    def wait_idle(self, timeout: float = 60_000) -> None:
        """Wait until the server's queue is empty and the page has seen the last prompt finish."""
        self.page.wait_for_function("() => !window.diffloom.execution.executing"
                                    " && document.getElementById('progress').dataset.state === 'idle'",
                                    timeout=timeout)
        self.page.wait_for_function("async () => { const q = await window.diffloom.api.getQueue();"
                                    " return !q.queue_running.length && !q.queue_pending.length; }",
                                    timeout=timeout, polling=100)
