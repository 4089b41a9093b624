"""Workers as Ray actors on a local Ray cluster (`ray.init` with two CPUs, one per module), tiny checkpoints.

The server is the only front door: the same prompt gives the same websocket events, previews,
history and image through two actors as through the in-process worker; a prompt goes to the actor
that holds its checkpoint; a killed actor's prompt runs again on the other one and every queued
prompt completes; an actor without a prompt's model file says so by name.
"""
from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import ray
import torch
from PIL import Image

from graph.registry import NodeRegistry
from graph.server import STATE, BackgroundServer, ServerOptions, create_app
from graph.server.workers import WorkerPool
from nodes import runtime as node_runtime
from nodes.folders import FolderPaths
from tests.server.server_harness import Frame, Socket, http, wait_history, wait_until

PREVIEW_SIZE = 64


def txt2img(checkpoint: str, *, seed: int = 7, steps: int = 2, prefix: str = "ray") -> dict[str, Any]:
    """A text-to-image graph on a tiny checkpoint (32 px).

    One text node feeds both guidance inputs: with two independent branches, the executor's order
    between them may differ from process to process, and the events with it.
    """
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["6", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="diffloom-tests")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def base(model_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's folders, reading the session's tiny checkpoints (tiny-sd1 and tiny-sd2: two different models)."""
    base = tmp_path_factory.mktemp("ray_base")
    (base / "models").symlink_to(model_base / "models", target_is_directory=True)
    return base


def folders_for(base: Path, output: str) -> FolderPaths:
    return FolderPaths(base, output_dir=base / output, input_dir=base / "input", temp_dir=base / "temp",
                       user_dir=base / f"user-{output}", create_dirs=True)


@pytest.fixture(scope="module")
def local_folders(base: Path) -> Iterator[FolderPaths]:
    """This process's node runtime (the in-process worker and validation) pointed at the tiny models."""
    previous = node_runtime._runtime
    folders = folders_for(base, "local-output")
    models = previous._models if previous is not None else None
    node_runtime.configure(folders, preview_method="auto", preview_max_size=PREVIEW_SIZE, models=models)
    try:
        yield folders
    finally:
        node_runtime._runtime = previous


@pytest.fixture(scope="module")
def ray_server(ray_cluster: None, base: Path, local_folders: FolderPaths, registry: NodeRegistry) -> Iterator[BackgroundServer]:
    """A server whose two workers are CPU actors on the local Ray cluster, both ready."""
    options = ServerOptions(base_directory=base, output_directory=base / "ray-output", user_directory=base / "user-ray",
                            input_directory=base / "input", temp_directory=base / "temp", ray_address="auto",
                            ray_workers=2, ray_gpus_per_worker=0.0, preview_size=PREVIEW_SIZE,
                            disable_all_custom_nodes=True)
    app = create_app(options, registry, folders_for(base, "ray-output"), worker_setup="server:build_runtime")
    with BackgroundServer(app) as running:
        pool(running).wait_ready(timeout=300)
        yield running


def pool(server: BackgroundServer) -> WorkerPool:
    worker = server.app[STATE].worker
    assert isinstance(worker, WorkerPool)
    return worker


def without_times(value: Any) -> Any:
    """Event data with its wall-clock fields dropped (they are the only thing allowed to differ)."""
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k != "timestamp"}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def run_and_record(url: str, prompt: dict[str, Any], prompt_id: str) -> tuple[list[tuple[str, Any]], list[Frame], dict]:
    """Queue a prompt with a fixed id over HTTP; its websocket events, preview frames and history entry."""
    async def scenario() -> tuple[list[tuple[str, Any]], list[Frame]]:
        async with aiohttp.ClientSession() as session:
            sock = Socket(await session.ws_connect(url.replace("http://", "ws://") + "/ws?clientId=same"))
            await sock.next_event()
            reply = http("POST", url + "/prompt", {"prompt": prompt, "prompt_id": prompt_id, "client_id": "same"})
            assert reply.status == 200, reply.body
            events = await sock.until_done(prompt_id, timeout=240)
            await sock.ws.close()
            return events, sock.frames

    events, frames = asyncio.run(scenario())
    return [(k, without_times(d)) for k, d in events], frames, wait_history(url, prompt_id, timeout=240)


def pixels(folder: Path, entry: dict) -> np.ndarray:
    image = entry["outputs"]["9"]["images"][0]
    with Image.open(folder / image["subfolder"] / image["filename"]) as img:
        return np.asarray(img.convert("RGB"))


def actor_threads(server: BackgroundServer) -> int:
    actor = pool(server).slots[0].backend.actor  # type: ignore[attr-defined]
    return int(ray.get(actor.__ray_call__.remote(lambda self: torch.get_num_threads())))


def test_actors_give_the_events_and_image_of_local_execution(ray_server: BackgroundServer, base: Path,
                                                             local_folders: FolderPaths, registry: NodeRegistry) -> None:
    prompt = txt2img("tiny-sd1.safetensors", steps=3, prefix="same")
    prompt_id = str(uuid.uuid4())
    ray_events, ray_frames, ray_entry = run_and_record(ray_server.url, prompt, prompt_id)

    # the same prompt, same id, through the default in-process worker, with the actors' thread count
    options = ServerOptions(base_directory=base, user_directory=base / "user-local", preview_size=PREVIEW_SIZE)
    app = create_app(options, registry, local_folders)
    threads = torch.get_num_threads()
    torch.set_num_threads(actor_threads(ray_server))
    try:
        with BackgroundServer(app) as local:
            local_events, local_frames, local_entry = run_and_record(local.url, prompt, prompt_id)
    finally:
        torch.set_num_threads(threads)

    assert [k for k, _ in ray_events] == [k for k, _ in local_events]
    assert "progress" in [k for k, _ in ray_events] and "executed" in [k for k, _ in ray_events]
    assert ray_events == local_events
    assert len(ray_frames) == len(local_frames) == 3
    assert [f.image for f in ray_frames] == [f.image for f in local_frames]
    assert ray_entry["outputs"] == local_entry["outputs"] and ray_entry["meta"] == local_entry["meta"]
    assert [m[0] for m in ray_entry["status"]["messages"]] == [m[0] for m in local_entry["status"]["messages"]]
    assert np.array_equal(pixels(base / "ray-output", ray_entry), pixels(base / "local-output", local_entry))
    image = ray_entry["outputs"]["9"]["images"][0]
    view = http("GET", f"{ray_server.url}/view?filename={image['filename']}&type=output")
    assert view.status == 200 and view.body == (base / "ray-output" / image["filename"]).read_bytes()


def test_a_prompt_goes_to_the_actor_that_holds_its_checkpoint(ray_server: BackgroundServer) -> None:
    store = ray_server.app[STATE].store

    def run(checkpoint: str) -> str:
        prompt_id = http("POST", ray_server.url + "/prompt", {"prompt": txt2img(checkpoint)}).json()["prompt_id"]
        return prompt_id

    def worker_of(prompt_id: str) -> str:
        assert wait_history(ray_server.url, prompt_id, timeout=240)["status"]["status_str"] == "success"
        return str(store.get(prompt_id).worker_id)

    on_a = worker_of(run("tiny-sd1.safetensors"))
    on_b = worker_of(run("tiny-sd2.safetensors"))
    assert on_a != on_b  # nobody held tiny-sd2: it went to the worker idle the longest
    held = {w["worker_id"]: w["held_models"] for w in pool(ray_server).status()["workers"]}
    assert "checkpoints/tiny-sd1.safetensors" in held[on_a] and "checkpoints/tiny-sd2.safetensors" in held[on_b]
    # both idle; the worker idle longest (on_a) is passed over for the prompt whose model on_b holds
    second_b, second_a = run("tiny-sd2.safetensors"), run("tiny-sd1.safetensors")
    assert worker_of(second_b) == on_b and worker_of(second_a) == on_a


def test_an_actor_without_the_model_file_says_so(ray_server: BackgroundServer) -> None:
    # straight into the queue, as a prompt accepted by a server that has the file would be
    item = ray_server.app[STATE].store.add(txt2img("only-on-the-server.safetensors"), outputs_to_execute=["9"])
    entry = wait_history(ray_server.url, item.prompt_id, timeout=120)
    error = entry["status"]["messages"][-1][1]
    assert error["exception_type"] == "ModelNotOnWorker" and error["node_id"] == "4"
    message = error["exception_message"]
    assert "has no checkpoints file 'only-on-the-server.safetensors'" in message
    assert error["worker_id"] in message and "storage all nodes share" in message


def test_killing_an_actor_mid_prompt_still_completes_every_prompt(ray_server: BackgroundServer) -> None:
    workers = pool(ray_server)
    store = ray_server.app[STATE].store
    long_id = http("POST", ray_server.url + "/prompt",
                   {"prompt": txt2img("tiny-sd1.safetensors", steps=60, prefix="long")}).json()["prompt_id"]
    victim = wait_until(lambda: next((s for s in workers.slots if s.item is not None and s.item.prompt_id == long_id
                                      and s.node == "3"), None), 240, "the long prompt sampling on an actor")
    victim_id, victim_pid = victim.worker_id, victim.info["pid"]
    queued = [http("POST", ray_server.url + "/prompt", {"prompt": txt2img("tiny-sd2.safetensors", seed=s)}).json()["prompt_id"]
              for s in (1, 2, 3)]
    os.kill(victim_pid, signal.SIGKILL)

    entry = wait_history(ray_server.url, long_id, timeout=240)
    assert entry["status"]["status_str"] == "success"
    name, note = entry["status"]["messages"][0]
    assert name == "execution_requeued" and note["previous_worker"] == victim_id and "died" in note["reason"]
    assert store.get(long_id).worker_id != victim_id and store.get(long_id).retries == 1
    assert all(wait_history(ray_server.url, pid, timeout=240)["status"]["status_str"] == "success" for pid in queued)
    # a new actor takes the killed one's place and runs prompts again
    wait_until(lambda: victim.restarts == 1 and victim.state == "ready", 240, "the killed actor back")
    assert victim.info["pid"] != victim_pid
    before = victim.prompts_run
    pair = [http("POST", ray_server.url + "/prompt", {"prompt": txt2img("tiny-sd1.safetensors", seed=s, steps=6)}).json()["prompt_id"]
            for s in (4, 5)]
    assert all(wait_history(ray_server.url, pid, timeout=240)["status"]["status_str"] == "success" for pid in pair)
    assert victim.prompts_run == before + 1
