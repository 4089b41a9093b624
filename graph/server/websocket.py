"""The `/ws` websocket: connected clients, per-client routing of events, binary preview frames.

Every client has an outbound queue drained by one sender task, so events reach each socket in the
order they were sent (the worker thread hands them over with `call_threadsafe`). An event with a
client id goes to that client only; without one it goes to everyone, as ComfyUI does.

Binary frames follow ComfyUI: a big-endian uint32 event type, then the payload. Type 1
(PREVIEW_IMAGE) carries a uint32 image format (1 JPEG, 2 PNG) and the encoded image; type 4
(PREVIEW_IMAGE_WITH_METADATA) carries a uint32 length, that much JSON metadata, and the image. A
client gets type 4 only after announcing `supports_preview_metadata` in its `feature_flags`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ..untrusted_json import UntrustedJSONError, loads_untrusted

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_FORMATS = {"image/jpeg": 1, "image/png": 2}
# A client this far behind loses previews (never events): a slow browser must not hold the server's memory.
MAX_QUEUED_PREVIEWS = 64


def preview_frame(image: bytes, mime: str) -> bytes:
    """A type-1 frame: event type, image format, image bytes."""
    return struct.pack(">II", PREVIEW_IMAGE, IMAGE_FORMATS.get(mime, 1)) + image


def preview_frame_with_metadata(image: bytes, metadata: dict[str, Any]) -> bytes:
    """A type-4 frame: event type, metadata length, metadata JSON, image bytes."""
    meta = json.dumps(metadata, separators=(",", ":")).encode()
    return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(meta)) + meta + image


def _json(event: str, data: Any) -> str:
    return json.dumps({"type": event, "data": data}, default=str, separators=(",", ":"))


@dataclass(eq=False)
class Client:
    """One connected socket and what it told us it supports."""

    sid: str
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str | bytes | None] = field(default_factory=asyncio.Queue)
    features: dict[str, Any] = field(default_factory=dict)
    queued_previews: int = 0
    sender: asyncio.Task[None] | None = None

    def put(self, message: str | bytes, *, droppable: bool = False) -> None:
        if droppable:
            if self.queued_previews >= MAX_QUEUED_PREVIEWS:
                return
            self.queued_previews += 1
        self.queue.put_nowait(message)

    async def drain(self) -> None:
        """Send queued messages in order until the socket closes or None arrives."""
        while True:
            message = await self.queue.get()
            if message is None or self.ws.closed:
                return
            try:
                if isinstance(message, bytes):
                    self.queued_previews = max(0, self.queued_previews - 1)
                    await self.ws.send_bytes(message)
                else:
                    await self.ws.send_str(message)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("websocket %s: send failed (%s); dropping the client", self.sid, exc)
                return


class ClientHub:
    """All connected websocket clients of one server."""

    def __init__(self, *, server_features: dict[str, Any]) -> None:
        self.clients: dict[str, Client] = {}
        self.server_features = server_features
        self.loop: asyncio.AbstractEventLoop | None = None
        # Set by the app: how many prompts are queued, and (prompt_id, node, client_id) now running.
        self.queue_remaining: Callable[[], int] = lambda: 0
        self.now_executing: Callable[[], tuple[str | None, str | None, str | None]] = lambda: (None, None, None)

    # ---- from any thread ----------------------------------------------------------------------------

    def call_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the server's loop (the worker thread's way in); dropped once the loop is gone."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    # ---- on the loop ----------------------------------------------------------------------------------

    def _targets(self, sid: str | None) -> list[Client]:
        if sid is None:
            return list(self.clients.values())
        client = self.clients.get(sid)
        return [client] if client is not None else []

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a JSON event for one client (or all when sid is None)."""
        targets = self._targets(sid)
        if not targets:
            return
        message = _json(event, data)
        for client in targets:
            client.put(message)

    def send_preview(self, image: bytes, mime: str, metadata: dict[str, Any], sid: str | None = None) -> None:
        """Queue a preview image: type 4 for clients that support metadata, type 1 for the rest."""
        plain: bytes | None = None
        rich: bytes | None = None
        for client in self._targets(sid):
            if client.features.get("supports_preview_metadata"):
                rich = rich or preview_frame_with_metadata(image, {**metadata, "image_type": mime})
                client.put(rich, droppable=True)
            else:
                plain = plain or preview_frame(image, mime)
                client.put(plain, droppable=True)

    def status_message(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}

    def send_status(self) -> None:
        """Tell every client how many prompts remain (after every queue change)."""
        if self.clients:
            self.send("status", self.status_message())

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=...: register the socket, greet it with its sid, read its messages."""
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        old = self.clients.pop(sid, None)
        if old is not None:  # the same client reconnected: the new socket replaces the old one
            old.queue.put_nowait(None)
            await old.ws.close()
        client = Client(sid, ws)
        self.clients[sid] = client
        client.sender = asyncio.ensure_future(client.drain())
        try:
            client.put(_json("status", {**self.status_message(), "sid": sid}))
            prompt_id, node, owner = self.now_executing()
            if prompt_id is not None and owner == sid and node is not None:
                client.put(_json("executing", {"node": node, "display_node": node, "prompt_id": prompt_id}))
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_message(client, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    log.debug("websocket %s: %s", sid, ws.exception())
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            client.queue.put_nowait(None)
            if client.sender is not None:
                try:
                    await asyncio.wait_for(client.sender, timeout=1.0)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    client.sender.cancel()
        return ws

    def _on_message(self, client: Client, text: str) -> None:
        try:
            message = loads_untrusted(text)
        except UntrustedJSONError as exc:
            log.debug("websocket %s: ignoring a message that is not JSON (%s)", client.sid, exc)
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "feature_flags" and isinstance(message.get("data"), dict):
            client.features = dict(message["data"])
            client.put(_json("feature_flags", self.server_features))

    async def close_all(self) -> None:
        """Close every socket (server shutdown)."""
        for client in list(self.clients.values()):
            client.queue.put_nowait(None)
            await client.ws.close(code=1001, message=b"server shutdown")
        self.clients.clear()
