"""Hardening tests: the `--heavy` flag, the figures every test reports, and the servers they share.

`pytest tests/hardening` runs the quick variants (CI); `pytest tests/hardening --heavy` (or
DIFFLOOM_HEAVY=1, which also works from the project root) runs the same tests with many more cases,
faults and clients. Every test records what it tried (`figures.record(...)`); the table is printed
at the end of the run and, with DIFFLOOM_FIGURES=path.json, written as JSON for docs/reliability.md.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hardening.hardening_harness import HardServer

HEAVY_ENV = "DIFFLOOM_HEAVY"
FIGURES_ENV = "DIFFLOOM_FIGURES"
_FIGURES = pytest.StashKey[dict[str, dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    # Only loaded as an initial conftest (`pytest tests/hardening ...`) is the flag known on the command
    # line; from elsewhere the option still gets its default, and DIFFLOOM_HEAVY=1 turns it on.
    group = parser.getgroup("diffloom hardening")
    group.addoption("--heavy", action="store_true", default=False,
                    help="run the heavier hardening variants (many more fuzz cases, faults and clients)")


def is_heavy(config: pytest.Config) -> bool:
    return bool(config.getoption("heavy", default=False)) or os.environ.get(HEAVY_ENV, "") not in ("", "0")


class Figures:
    """What each test tried and found, keyed by test name; printed at the end of the session."""

    def __init__(self, store: dict[str, dict[str, Any]], test: str) -> None:
        self._store = store
        self._test = test

    def record(self, **values: Any) -> None:
        entry = self._store.setdefault(self._test, {})
        for key, value in values.items():
            if isinstance(value, (int, float)) and isinstance(entry.get(key), (int, float)) and key.endswith("_total"):
                entry[key] += value
            else:
                entry[key] = value


HEAVY_TIMEOUT = 3600


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The heavier variants run far longer than the suite's per-test timeout.
    if is_heavy(config):
        for item in items:
            if Path(str(item.fspath)).parent == Path(__file__).parent:
                item.add_marker(pytest.mark.timeout(HEAVY_TIMEOUT))


@pytest.fixture(scope="session")
def heavy(pytestconfig: pytest.Config) -> bool:
    """True when the heavier variants were asked for."""
    return is_heavy(pytestconfig)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    store = request.config.stash.setdefault(_FIGURES, {})
    name = request.node.nodeid.split("::", 1)[-1]
    module = Path(str(request.node.fspath)).stem
    return Figures(store, f"{module}::{name}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    store = config.stash.get(_FIGURES, {})
    if not store:
        return
    terminalreporter.section(f"hardening figures ({'heavy' if is_heavy(config) else 'default'} variants)")
    for test, values in sorted(store.items()):
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        terminalreporter.write_line(f"{test}: {shown}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        Path(target).write_text(json.dumps({"heavy": is_heavy(config), "figures": store}, indent=1, default=str))


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SD1 checkpoint in the real single-file layout."""
    from nodes.models.tiny import write_tiny_checkpoint  # noqa: PLC0415 - torch only for the tests that need it

    return write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoints"), "sd1", name="tiny-sd1")


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardServer]:
    """A torch-free server with the hardening and test nodes: 2 MB uploads, a 1 MB output cache."""
    proc = HardServer(tmp_path_factory.mktemp("target"), "--max-upload-size", "2",
                      "--cache-max-bytes", "1M").start()
    yield proc
    code = proc.stop()
    assert code == 0, f"server exited with {code}:\n{proc.log()[-3000:]}"
