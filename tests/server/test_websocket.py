"""The /ws websocket: greeting, client ids, feature flags, per-client routing, binary preview frames."""
from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import aiohttp
from PIL import Image

from tests.server.server_harness import ServerProcess, Socket, image_prompt


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def open_socket(session: aiohttp.ClientSession, server: ServerProcess, client_id: str | None = None,
                      path: str = "/ws") -> tuple[Socket, dict[str, Any]]:
    url = server.url.replace("http://", "ws://") + path + (f"?clientId={client_id}" if client_id else "")
    sock = Socket(await session.ws_connect(url))
    kind, data = await sock.next_event()
    assert kind == "status"
    return sock, data


def test_greeting_carries_sid_and_queue(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, data = await open_socket(session, server)
            assert len(data["sid"]) == 32 and data["status"] == {"exec_info": {"queue_remaining": 0}}
            named, named_data = await open_socket(session, server, "my-client", path="/api/ws")
            assert named_data["sid"] == "my-client"
            await sock.ws.close()
            await named.ws.close()

    run(scenario())


def test_same_client_id_replaces_the_old_socket(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            old, _ = await open_socket(session, server, "twice")
            new, data = await open_socket(session, server, "twice")
            assert data["sid"] == "twice"
            msg = await asyncio.wait_for(old.ws.receive(), 10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            prompt_id = server.queue(image_prompt(value=0.81), client_id="twice")
            events = await new.until_done(prompt_id)
            assert "execution_success" in [k for k, _ in events]
            await new.ws.close()

    run(scenario())


def test_feature_flags_reply(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, _ = await open_socket(session, server)
            await sock.ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            kind, data = await sock.next_event()
            assert kind == "feature_flags"
            assert data == {"supports_preview_metadata": True, "max_upload_size": 1024 * 1024}
            # junk from a client is ignored, the socket stays usable
            await sock.ws.send_str("not json")
            await sock.ws.send_str(json.dumps([1, 2]))
            await sock.ws.send_str(json.dumps({"type": "feature_flags", "data": {}}))
            assert (await sock.next_event())[0] == "feature_flags"
            await sock.ws.close()

    run(scenario())


def test_events_go_to_the_prompts_client_only(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            owner, owner_data = await open_socket(session, server)
            other, _ = await open_socket(session, server)
            prompt_id = server.queue(image_prompt(value=0.82, steps=2), client_id=owner_data["sid"])
            await owner.until_done(prompt_id)
            seen = await other.quiet(0.5)
            assert {k for k, _ in seen} <= {"status"}
            assert not other.frames
            assert any(k == "status" for k, _ in seen)
            # without a client_id, every socket gets the events
            public = server.queue(image_prompt(value=0.83, steps=2))
            for sock in (owner, other):
                events = await sock.until_done(public)
                assert [k for k, _ in events][:2] == ["execution_start", "execution_cached"]
            await owner.ws.close()
            await other.ws.close()

    run(scenario())


def test_preview_frames_type_1_and_type_4(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            plain, _ = await open_socket(session, server)
            rich, _ = await open_socket(session, server)
            await rich.ws.send_str(json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}}))
            assert (await rich.next_event())[0] == "feature_flags"
            prompt_id = server.queue(image_prompt(value=0.84, steps=3, size=16))  # no client: both get it
            await plain.until_done(prompt_id)
            await rich.until_done(prompt_id)
            assert len(plain.frames) == 3 and {f.event_type for f in plain.frames} == {1}
            assert {f.image_format for f in plain.frames} == {1}
            image = Image.open(io.BytesIO(plain.frames[0].image))
            assert image.format == "JPEG" and image.size == (16, 16)
            assert abs(image.getpixel((8, 8))[0] - 214) <= 3
            assert len(rich.frames) == 3 and {f.event_type for f in rich.frames} == {4}
            meta = rich.frames[0].metadata
            assert meta is not None
            assert meta["node_id"] == "2" and meta["prompt_id"] == prompt_id and meta["image_type"] == "image/jpeg"
            assert meta["display_node_id"] == "2" and meta["real_node_id"] == "2"
            assert Image.open(io.BytesIO(rich.frames[0].image)).size == (16, 16)
            await plain.ws.close()
            await rich.ws.close()

    run(scenario())


def test_reconnecting_owner_is_told_the_running_node(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            sock, _ = await open_socket(session, server, "comeback")
            prompt_id = server.queue(image_prompt(value=0.85, steps=400, delay=0.05), client_id="comeback")
            await sock.until(lambda k, d: k == "progress" and d.get("prompt_id") == prompt_id)
            await sock.ws.close()
            again, greeting = await open_socket(session, server, "comeback")
            assert greeting["status"]["exec_info"]["queue_remaining"] == 1
            kind, data = await again.next_event()
            assert (kind, data["node"], data["prompt_id"]) == ("executing", "2", prompt_id)
            server.post("/interrupt", {"prompt_id": prompt_id})
            events = await again.until_done(prompt_id)
            assert any(k == "execution_interrupted" for k, _ in events)
            await again.ws.close()

    run(scenario())
