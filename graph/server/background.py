"""Run a diffloom app on a loopback port in a background thread (tests, the editor's browser tests, embedding).

    with BackgroundServer(create_app(options, registry)) as server:
        requests_to(server.url + "/api/prompt")

The app gets its own event loop in a daemon thread; `stop()` shuts it down cleanly (the worker is
stopped and the store closed by the app's cleanup context).
"""
from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web


class BackgroundServer:
    """An aiohttp app served from a thread on host:port (port 0 picks a free one)."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 30.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.start_timeout = start_timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def start(self) -> BackgroundServer:
        self._thread = threading.Thread(target=self._run, name="diffloom-background-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise TimeoutError(f"the server did not start within {self.start_timeout} s")
        if self._error is not None:
            raise RuntimeError(f"the server failed to start: {self._error}") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        self._stopped = asyncio.Event()
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = runner.addresses[0][1]
        except BaseException as exc:  # noqa: BLE001 - reported to the thread that called start()
            self._error = exc
            self._ready.set()
            await runner.cleanup()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the app down (waits for the running prompt to be interrupted) and join the thread."""
        if self.loop is not None and self._stopped is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
