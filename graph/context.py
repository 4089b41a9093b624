"""What a running node can ask of the engine: report progress, send a preview, check for interrupts.

The executor sets the context for each node call (a contextvar, so async nodes get their own);
node code calls `progress(...)` and `check_interrupt()` without knowing who is listening.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

Emit = Callable[[str, dict[str, Any]], None]


class ExecutionInterrupted(Exception):
    """Raised inside a node when the user interrupted the prompt."""


class Interrupt:
    """A flag the server sets and the running prompt checks between nodes and at every progress step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise ExecutionInterrupted("interrupted by the user")


@dataclass
class NodeContext:
    """The prompt and node a piece of code runs for."""

    prompt_id: str
    node_id: str
    display_node_id: str
    class_type: str
    emit: Emit
    interrupt: Interrupt
    call_index: int = 0
    extra_data: dict[str, Any] = field(default_factory=dict)
    last_progress: float = 0.0


_current: ContextVar[NodeContext | None] = ContextVar("diffloom_node_context", default=None)


def current() -> NodeContext | None:
    """The context of the node running in this task or thread, if any."""
    return _current.get()


def set_current(ctx: NodeContext | None) -> Any:
    return _current.set(ctx)


def reset_current(token: Any) -> None:
    _current.reset(token)


def check_interrupt() -> None:
    """Raise ExecutionInterrupted if the user asked to stop."""
    ctx = _current.get()
    if ctx is not None:
        ctx.interrupt.check()


def progress(value: float, total: float, preview: Any = None, *, node_id: str | None = None) -> None:
    """Report `value` of `total` steps done for the running node, with an optional preview image."""
    ctx = _current.get()
    if ctx is None:
        return
    ctx.interrupt.check()
    node = node_id or ctx.node_id
    ctx.emit("progress", {"value": value, "max": total, "prompt_id": ctx.prompt_id, "node": node})
    if preview is not None:
        ctx.emit("preview", {"image": preview, "prompt_id": ctx.prompt_id, "node_id": node,
                             "display_node_id": ctx.display_node_id})
    ctx.last_progress = time.monotonic()


def send(event: str, data: dict[str, Any]) -> None:
    """Send a custom event to the prompt's client (what plugins do with PromptServer.send_sync)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.emit(event, data)
