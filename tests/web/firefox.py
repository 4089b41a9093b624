"""Debian's Firefox ESR over Marionette, shaped like the part of Playwright's Page that `Editor` uses.

Playwright drives only its own patched Firefox build, which cannot be installed here; Debian's
firefox-esr speaks Marionette, Mozilla's own remote protocol, and `marionette_driver` (Mozilla's
client) talks to it with no geckodriver. Mouse and keyboard go through WebDriver actions, which
Firefox turns into trusted DOM events, so `tests/web/editor.py` drives this page as it drives Chromium.

The page's console reaches Firefox's stdout (pref devtools.console.stdout.content), which Marionette
writes to a log file; each test reads the part of it written while it ran.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marionette_driver.errors import MarionetteException, NoSuchWindowException
from marionette_driver.keys import Keys
from marionette_driver.marionette import ActionSequence, Marionette, WebElement

FIREFOX = "/usr/bin/firefox-esr"
LAPTOP_SCREEN = (1366, 768)  # the browser window fills a common laptop screen, its toolbars included
KEYS = {"Control": Keys.CONTROL, "Shift": Keys.SHIFT, "Alt": Keys.ALT, "Meta": Keys.META, "Enter": Keys.ENTER,
        "Escape": Keys.ESCAPE, "Delete": Keys.DELETE, "Backspace": Keys.BACK_SPACE, "Tab": Keys.TAB,
        "ArrowLeft": Keys.LEFT, "ArrowRight": Keys.RIGHT, "ArrowUp": Keys.UP, "ArrowDown": Keys.DOWN}
BUTTONS = {"left": 0, "middle": 1, "right": 2}
# a log record starts with one of these; what follows up to the next one belongs to it
RECORD_START = re.compile(r"^(console\.(?P<level>\w+): |JavaScript (?P<js>error|warning): )")
# "JavaScript error: URL, line N: message"
JS_ERROR = re.compile(r"^JavaScript \w+: (?P<url>.*?), line (?P<line>\d+): (?P<message>.*)$")
# Firefox's own named loggers print "console.error: Name:" with the text on the next lines; a page's
# strings are printed quoted ("console.error: \"text\""), so the two never look alike
BROWSER_LOGGER = re.compile(r"^console\.\w+: [\w.-]+:$")


def start_firefox(log: Path, downloads: Path) -> Marionette:
    """Headless firefox-esr with a fresh profile, its window the size of a laptop screen."""
    assert Path(FIREFOX).exists(), f"{FIREFOX} is missing: install Debian's firefox-esr package (make browser)"
    prefs = {
        "devtools.console.stdout.content": True,  # the page's console.* calls, to the log
        "devtools.console.stdout.chrome": False,  # not the browser's own
        "browser.download.dir": str(downloads),  # downloads land there, no dialog
        "browser.download.folderList": 2,
        "browser.download.useDownloadDir": True,
        "browser.download.always_ask_before_handling_new_types": False,
        "browser.download.alwaysOpenPanel": False,
    }
    marionette = Marionette(bin=FIREFOX, headless=True, port=0, gecko_log=str(log), prefs=prefs,
                            startup_timeout=90)
    # the W3C default: a hidden <input type=file> still takes files, as a page's own "Open…" button does
    marionette.start_session(capabilities={"strictFileInteractability": False})
    marionette.set_window_rect(width=LAPTOP_SCREEN[0], height=LAPTOP_SCREEN[1])
    return marionette


def stop_firefox(marionette: Marionette) -> None:
    """Quit Firefox and remove its profile now, not from a destructor at interpreter exit."""
    instance = marionette.instance
    profiles = [instance.profile]
    marionette.cleanup()  # quits; closing also leaves a fresh empty profile behind in instance.profile
    profiles.append(instance.profile)
    for profile in profiles:
        if profile is not None:
            profile.cleanup()
            profile.restore = False  # nothing left for its __del__ to remove


@dataclass
class ConsoleMessage:
    """What Playwright's console event carries, as far as `Editor` reads it."""

    type: str
    text: str
    location: dict[str, str] = field(default_factory=dict)


@dataclass
class LogRecord:
    """One message of Firefox's stdout: its kind and its lines."""

    kind: str  # "console.<level>" or "JavaScript error" / "JavaScript warning"
    lines: list[str]


def parse_log(text: str) -> list[LogRecord]:
    """Split Firefox's stdout into console and script-error records (other lines are dropped)."""
    records: list[LogRecord] = []
    current: LogRecord | None = None
    for line in text.splitlines():
        start = RECORD_START.match(line)
        if start:
            kind = f"console.{start['level']}" if start["level"] else f"JavaScript {start['js']}"
            current = LogRecord(kind, [line])
            records.append(current)
        elif current is not None and line.strip() and len(current.lines) < 40:
            current.lines.append(line)
        elif not line.strip():
            current = None
    return records


class GeckoLog:
    """The part of Firefox's log file written since `mark`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def since_mark(self) -> str:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode("utf-8", "replace")


class Mouse:
    """Playwright's page.mouse over WebDriver pointer actions (one input source, so a press spans calls)."""

    def __init__(self, page: FirefoxPage) -> None:
        self.page = page

    def _sequence(self) -> ActionSequence:
        return ActionSequence(self.page.marionette, "pointer", "mouse", {"pointerType": "mouse"})

    def move(self, x: float, y: float) -> None:
        self._sequence().pointer_move(round(x), round(y)).perform()

    def down(self, button: str = "left") -> None:
        self._sequence().pointer_down(BUTTONS[button]).perform()

    def up(self, button: str = "left") -> None:
        self._sequence().pointer_up(BUTTONS[button]).perform()

    def click(self, x: float, y: float, button: str = "left") -> None:
        code = BUTTONS[button]
        self._sequence().pointer_move(round(x), round(y)).pointer_down(code).pointer_up(code).perform()

    def dblclick(self, x: float, y: float, delay: float = 0) -> None:
        """As Playwright's: `delay` ms between each press and its release."""
        sequence = self._sequence().pointer_move(round(x), round(y)).pointer_down(0).pause(delay).pointer_up(0)
        sequence.pointer_down(0).pause(delay).pointer_up(0).perform()


def key_chord(combo: str) -> tuple[list[str], str]:
    """'Control+z' -> ([CONTROL], 'z'); '+' alone is the plus key."""
    parts = combo.split("+") if combo != "+" else ["+"]
    return [KEYS[p] for p in parts[:-1]], KEYS.get(parts[-1], parts[-1])


class Keyboard:
    """Playwright's page.keyboard over WebDriver key actions, to the focused element."""

    def __init__(self, page: FirefoxPage) -> None:
        self.page = page

    def press(self, combo: str) -> None:
        modifiers, key = key_chord(combo)
        sequence = ActionSequence(self.page.marionette, "key", "keyboard")
        for modifier in modifiers:
            sequence.key_down(modifier)
        sequence.key_down(key).key_up(key)
        for modifier in reversed(modifiers):
            sequence.key_up(modifier)
        sequence.perform()

    def type(self, text: str) -> None:
        ActionSequence(self.page.marionette, "key", "keyboard").send_keys(text).perform()


FIND_JS = """([selector, text, index]) => {
  let found = [...document.querySelectorAll(selector)];
  if (text !== null) {
    const wanted = text.toLowerCase();
    found = found.filter((e) => e.textContent.replace(/\\s+/g, ' ').toLowerCase().includes(wanted));
  }
  return index === null ? found : found.slice(index, index + 1);
}"""
VISIBLE_JS = """(e) => { const r = e.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && e.checkVisibility({ visibilityProperty: true }); }"""


class Locator:
    """Playwright's locator for a CSS selector, optionally narrowed by text and to the first match."""

    def __init__(self, page: FirefoxPage, selector: str, has_text: str | None = None, index: int | None = None):
        self.page = page
        self.selector = selector
        self.has_text = has_text
        self.index = index

    def __repr__(self) -> str:
        return f"<{self.selector!r} has_text={self.has_text!r} index={self.index}>"

    @property
    def first(self) -> Locator:
        return Locator(self.page, self.selector, self.has_text, 0)

    def elements(self) -> list[WebElement]:
        return self.page.evaluate(FIND_JS, [self.selector, self.has_text, self.index]) or []

    def count(self) -> int:
        return len(self.elements())

    def _visible(self) -> WebElement | None:
        for element in self.elements():
            if self.page.evaluate(VISIBLE_JS, element):
                return element
        return None

    def wait_for(self, state: str = "visible", timeout: float | None = None) -> None:
        """Wait until the element is attached, visible, hidden or detached."""
        checks: dict[str, Callable[[], bool]] = {
            "attached": lambda: bool(self.elements()), "detached": lambda: not self.elements(),
            "visible": lambda: self._visible() is not None, "hidden": lambda: self._visible() is None}
        self.page.poll(checks[state], f"{self} to be {state}", timeout)

    def element(self) -> WebElement:
        """The first visible match, waited for (Playwright's actions wait the same way)."""
        self.wait_for("visible")
        element = self._visible()
        assert element is not None, f"{self} vanished"
        return element

    def click(self) -> None:
        self.element().click()  # WebDriver's click: scrolled into view, and refused if covered

    def fill(self, value: str) -> None:
        """Select all and type over it, as Playwright does (WebDriver's clear() would blur the field)."""
        element = self.element()
        element.send_keys(Keys.CONTROL + "a" + Keys.NULL)  # keys after a chord in the same call get lost
        element.send_keys(value or Keys.BACK_SPACE)

    def type(self, text: str, delay: float = 0) -> None:
        self.element().send_keys(text)

    def press(self, combo: str) -> None:
        modifiers, key = key_chord(combo)
        self.element().send_keys("".join(modifiers) + key + (Keys.NULL if modifiers else ""))

    def inner_text(self) -> str:
        return self.page.evaluate("(e) => e.innerText", self.element())

    def get_attribute(self, name: str) -> str | None:
        return self.element().get_attribute(name)

    def set_input_files(self, path: str) -> None:
        elements = self.elements()
        assert elements, f"{self} not found"
        elements[0].send_keys(path)


class FirefoxPage:
    """The subset of Playwright's Page that `Editor` and the Firefox tests use, over Marionette."""

    def __init__(self, marionette: Marionette, log: GeckoLog) -> None:
        self.marionette = marionette
        self.log = log
        self.mouse = Mouse(self)
        self.keyboard = Keyboard(self)
        self.timeout = 20.0
        self.origin = ""
        self.handlers: dict[str, list[Callable[[Any], None]]] = {}
        self.log_records: list[LogRecord] = []

    # ------------------------------------------------------------------ Playwright's surface

    def on(self, event: str, handler: Callable[[Any], None]) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def set_default_timeout(self, milliseconds: float) -> None:
        self.timeout = milliseconds / 1000

    def goto(self, url: str) -> None:
        self.origin = re.match(r"^\w+://[^/]+", url)[0]
        self.marionette.navigate(url)

    def reload(self) -> None:
        self.marionette.refresh()

    def evaluate(self, script: str, arg: Any = None) -> Any:
        """Call a JavaScript function expression with `arg` in the page; a returned promise is awaited."""
        return self.marionette.execute_script(f"return ({script})(arguments[0]);", script_args=[arg],
                                              sandbox=None)  # the page's own globals, not an Xray view

    def wait_for_function(self, script: str, arg: Any = None, timeout: float | None = None,
                          polling: float | None = None) -> Any:
        result: list[Any] = []

        def check() -> bool:
            result[:] = [self.evaluate(script, arg)]
            return bool(result[0])

        self.poll(check, script, None if timeout is None else timeout / 1000, (polling or 50) / 1000)
        return result[0]

    def wait_for_selector(self, selector: str, state: str = "visible") -> None:
        self.locator(selector).wait_for(state)

    def wait_for_timeout(self, milliseconds: float) -> None:
        time.sleep(milliseconds / 1000)

    def locator(self, selector: str, has_text: str | None = None) -> Locator:
        return Locator(self, selector, has_text)

    def click(self, selector: str) -> None:
        self.locator(selector).click()

    def fill(self, selector: str, value: str) -> None:
        self.locator(selector).fill(value)

    def set_input_files(self, selector: str, path: str) -> None:
        self.locator(selector).set_input_files(path)

    def screenshot(self, path: str | None = None) -> bytes:
        png = self.marionette.screenshot(format="binary", full=False)
        if path:
            Path(path).write_bytes(png)
        return png

    # ------------------------------------------------------------------ helpers of our own

    def poll(self, check: Callable[[], bool], what: str, timeout: float | None = None,
             interval: float = 0.05) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Firefox: waited {self.timeout if timeout is None else timeout:.0f} s for {what}")
            time.sleep(interval)

    def new_tab(self) -> None:
        """Leave the current tab for a new one: a fresh sessionStorage, as a new browser context has."""
        # unload the page first: closing a tab interrupts a running script (litegraph's render loop),
        # which Firefox reports as "Script terminated by timeout"
        self.marionette.navigate("about:blank")
        old = self.marionette.current_window_handle
        new = self.marionette.open(type="tab", focus=True)["handle"]
        self.marionette.switch_to_window(old)
        self.marionette.close()
        self.marionette.switch_to_window(new)

    def drain_console(self) -> None:
        """Hand the page's console lines since the log mark to the `console`/`pageerror` handlers.

        A marker logged last from the page shows that everything it printed before is in the file.
        """
        marker = f"diffloom-console-flush-{time.monotonic_ns()}"
        try:
            self.evaluate("(marker) => console.log(marker)", marker)
            self.poll(lambda: marker in self.log.since_mark(), "Firefox's console log to flush", 10)
        except (MarionetteException, NoSuchWindowException, TimeoutError):
            pass  # a page that is gone or hung: report what the log has
        for record in parse_log(self.log.since_mark()):
            if marker in record.lines[0]:
                continue
            self.log_records.append(record)
            self.dispatch(record)
        self.log.mark()

    def dispatch(self, record: LogRecord) -> None:
        """One log record to the `console` or `pageerror` handlers; the browser's own lines as type "browser"."""
        text = "\n".join(record.lines)
        terminated = record.kind == "JavaScript warning" and "Script terminated" in record.lines[0]
        if record.kind == "JavaScript error" or terminated:  # a page script killed as too slow is an error too
            match = JS_ERROR.match(record.lines[0])
            if match and self.origin and match["url"].startswith(self.origin):
                for handler in self.handlers.get("pageerror", []):
                    handler(f"{match['message']} ({match['url']}:{match['line']})")
                return
            message = ConsoleMessage("browser", text)  # the browser's own scripts, not the page's
        elif record.kind.startswith("console.") and not BROWSER_LOGGER.match(record.lines[0]):
            level = record.kind.removeprefix("console.")
            message = ConsoleMessage("warning" if level == "warn" else level,
                                     text.removeprefix(f"{record.kind}: "), {"url": self.origin})
        else:
            message = ConsoleMessage("browser", text)
        for handler in self.handlers.get("console", []):
            handler(message)


def wait_for_download(folder: Path, name: str, timeout: float = 20.0) -> Path:
    """The file Firefox downloaded into `folder`, once complete (no .part file left)."""
    target = folder / name
    deadline = time.monotonic() + timeout
    while not (target.exists() and target.stat().st_size and not list(folder.glob("*.part"))):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no download {name!r} in {folder} after {timeout} s: {sorted(folder.iterdir())}")
        time.sleep(0.05)
    return target
