"""Bridging sync and async: V1 plugins may make IS_CHANGED, VALIDATE_INPUTS or their function async."""
from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any


def resolve(value: Any) -> Any:
    """Return value, or what it resolves to if it is awaitable (also from inside a running loop)."""
    if not inspect.isawaitable(value):
        return value
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(value))
    # A loop runs in this thread: finish the coroutine on a helper thread with its own loop.
    box: dict[str, Any] = {}

    def runner() -> None:
        try:
            box["value"] = asyncio.run(_await(value))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=runner, name="diffloom-resolve")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _await(value: Any) -> Any:
    return await value
