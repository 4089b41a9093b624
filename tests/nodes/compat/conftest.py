"""Fixtures for the ComfyUI compatibility modules: the import aliases and a node context.

`folders` (a fresh process-wide folder layout) is in tests/conftest.py.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from graph import context


@pytest.fixture
def compat() -> Iterator[None]:
    """`import folder_paths`, `comfy.*`, `comfy_execution.*` and `server` resolve for one test."""
    from nodes.compat import install_compat_modules, uninstall_compat_modules

    install_compat_modules()
    yield
    uninstall_compat_modules()


class NodeRun:
    """A node context as the executor makes one, recording what the node emits."""

    def __init__(self, node_id: str = "5", call_index: int = 0, client_id: str | None = "client-1") -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.interrupt = context.Interrupt()
        self.ctx = context.NodeContext("prompt-1", node_id, node_id, "TestNode",
                                       lambda e, d: self.events.append((e, d)), self.interrupt, call_index,
                                       {"client_id": client_id} if client_id else {})
        self._token: Any = None

    def __enter__(self) -> NodeRun:
        self._token = context.set_current(self.ctx)
        return self

    def __exit__(self, *exc: Any) -> None:
        context.reset_current(self._token)


@pytest.fixture
def node_run() -> type[NodeRun]:
    return NodeRun
