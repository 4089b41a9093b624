"""Bridging sync and async: V1 plugins may make IS_CHANGED, VALIDATE_INPUTS or their function async,
and a prompt may be run from code that already has an event loop running (a notebook, Playwright)."""
from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


def run_coroutine(awaitable: Awaitable[T]) -> T:
    """Run to completion on a fresh loop: in this thread, or on a helper thread if a loop runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_new_loop(awaitable)
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = _run_on_new_loop(awaitable)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=runner, name="diffloom-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _run_on_new_loop(awaitable: Awaitable[T]) -> T:
    # A plain loop, not asyncio.run: that one installs a SIGINT handler in the main thread (slow to set
    # up on big prompts), and signals belong to whoever owns the process.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_await(awaitable))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def resolve(value: Any) -> Any:
    """Return value, or what it resolves to if it is awaitable."""
    return run_coroutine(value) if inspect.isawaitable(value) else value


async def _await(value: Awaitable[T]) -> T:
    return await value
