"""Where `interrupt_current_processing` goes outside a node: the server's worker (torch-free, so the server binds it cheaply)."""
from __future__ import annotations

from collections.abc import Callable

_handler: Callable[[bool], None] | None = None


def set_interrupt_handler(handler: Callable[[bool], None] | None) -> None:
    """What `interrupt_current_processing(value)` does outside a node (the server binds its worker's interrupt)."""
    global _handler
    _handler = handler


def interrupt_outside_node(value: bool) -> None:
    if _handler is not None:
        _handler(value)
