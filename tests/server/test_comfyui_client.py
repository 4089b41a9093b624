"""A client written the way scripts for ComfyUI's API are written runs unchanged against diffloom.

The script below only uses what ComfyUI documents: open `/ws?clientId=<uuid>`, POST the API-format
graph to `/prompt` with that client id, read messages until `executing` with `node: null` for the
prompt, then `GET /history/<id>` and fetch every output image with `GET /view`. The server is a real
`python server.py` with the built-in nodes, on a tiny random-weight SD1 checkpoint.
"""
from __future__ import annotations

import asyncio
import io
import json
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.server.server_harness import ServerProcess

CHECKPOINT = "tiny-sd1.safetensors"

# ComfyUI's default graph in API format (contract §2.4), at the tiny model's size and with few steps.
DEFAULT_GRAPH: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 2, "cfg": 8, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                                               "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass bottle on a beach", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


class ComfyClient:
    """What a typical ComfyUI API script does, as a class."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client_id = str(uuid.uuid4())

    def queue_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode("utf-8")
        request = urllib.request.Request(f"http://{self.address}/prompt", data=data)
        return json.loads(urllib.request.urlopen(request).read())

    def get_history(self, prompt_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.address}/history/{prompt_id}") as response:
            return json.loads(response.read())

    def get_image(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        with urllib.request.urlopen(f"http://{self.address}/view?{query}") as response:
            return response.read()

    async def generate(self, prompt: dict[str, Any]) -> tuple[dict[str, list[bytes]], list[str]]:
        """Queue the prompt, wait on the websocket until it is done, then download every output image."""
        seen: list[str] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://{self.address}/ws?clientId={self.client_id}") as ws:
                prompt_id = self.queue_prompt(prompt)["prompt_id"]
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue  # binary previews
                    message = json.loads(msg.data)
                    seen.append(message["type"])
                    if message["type"] == "executing":
                        data = message["data"]
                        if data["node"] is None and data["prompt_id"] == prompt_id:
                            break
        history = self.get_history(prompt_id)[prompt_id]
        images: dict[str, list[bytes]] = {}
        for node_id, node_output in history["outputs"].items():
            images[node_id] = [self.get_image(i["filename"], i["subfolder"], i["type"])
                               for i in node_output.get("images", [])]
        return images, seen


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory, model_base: Path) -> Iterator[ServerProcess]:
    """The tiny checkpoints of the test-wide `model_base`, reached through an extra_model_paths.yaml."""
    base = tmp_path_factory.mktemp("comfy_client")
    config = base / "elsewhere.yaml"
    config.write_text(f"shared:\n  base_path: {model_base}\n  checkpoints: models/checkpoints\n")
    proc = ServerProcess(base, "--cpu", "--extra-model-paths-config", str(config),
                         builtin_nodes=True).start(timeout=300)
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


def test_comfyui_style_script_works_unchanged(real_server: ServerProcess) -> None:
    assert CHECKPOINT in real_server.get("/models/checkpoints").json()
    client = ComfyClient(real_server.url.removeprefix("http://"))
    images, seen = asyncio.run(client.generate(DEFAULT_GRAPH))
    assert seen[0] == "status" and "execution_start" in seen and "execution_success" in seen
    assert seen[-1] == "executing" and seen.count("progress") >= 2
    (png,) = images["9"]
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (64, 64)
    assert json.loads(image.text["prompt"])["3"]["class_type"] == "KSampler"
    # the same graph again is served from the cache, and the script still works
    again, seen_again = asyncio.run(client.generate(DEFAULT_GRAPH))
    assert "execution_cached" in seen_again and len(again["9"]) == 1
