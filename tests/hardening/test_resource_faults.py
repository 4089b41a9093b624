"""Resource faults on a real server with the built-in nodes: out of memory, a full disk, broken model files.

- Out of memory in a node (torch.OutOfMemoryError raised while a real checkpoint is loaded): the
  prompt fails with a clear message, the model manager drops its models and the output cache is
  emptied (both visible in /system_stats), and the next prompt runs.
- A full disk: the server process runs under RLIMIT_FSIZE (writes past 4 MB fail with EFBIG; Python
  ignores SIGXFSZ), so saving a 6 MB image fails; where a tmpfs can be mounted (root), the real
  SaveImage also meets ENOSPC on a 64 KB file system in-process. The prompt fails cleanly, no
  partial, temporary or reserved file is left, and the next prompt saves.
- Corrupt, truncated, unknown-family and code-carrying model files fail their prompt with an error
  that names the file; the server goes on.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.hardening.hardening_harness import TORCH_NODES, HardServer
from tests.hardening.model_files import Payload, small_safetensors, torch_zip
from tests.server.server_harness import Socket

MB = 1 << 20
FILE_SIZE_LIMIT = 4 * MB


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[HardServer]:
    """A server with the built-in nodes, a tiny SD1 checkpoint, broken model files and a 4 MB file-size limit."""
    base = tmp_path_factory.mktemp("models_server")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, checkpoints / "tiny-sd1.safetensors")
    data = tiny_checkpoint.read_bytes()
    (checkpoints / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    (checkpoints / "corrupt.safetensors").write_bytes(data[:9] + b"#" * 64 + data[73:])  # a header that is not JSON
    (checkpoints / "mystery.safetensors").write_bytes(small_safetensors({"encoder.layers.0.weight": (4, 4)}))
    (checkpoints / "code.ckpt").write_bytes(torch_zip({"state_dict": {}, "x": Payload(base / "code_ran")}))
    proc = HardServer(base, builtin_nodes=True, extra_nodes=(TORCH_NODES,), file_size_limit=FILE_SIZE_LIMIT).start()
    yield proc
    assert proc.stop() == 0, proc.log()[-3000:]


def run(server: HardServer, prompt: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Queue a prompt from a websocket client; its history entry and the events it got."""

    async def scenario() -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
        async with aiohttp.ClientSession() as session:
            sock = Socket(await session.ws_connect(server.ws_url + "?clientId=faults"))
            await sock.next_event()
            prompt_id = server.queue(prompt, client_id="faults")
            events = await sock.until_done(prompt_id, timeout=300)
            await sock.ws.close()
            return server.wait_history(prompt_id), events

    return asyncio.run(scenario())


def stats(server: HardServer) -> dict[str, Any]:
    return server.get("/system_stats").json()["diffloom"]


def model_prompt(fail: bool, ckpt: str = "tiny-sd1.safetensors") -> dict[str, Any]:
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
            "2": {"class_type": "HardOutOfMemory", "inputs": {"model": ["1", 0], "fail": fail}}}


def save_prompt(size: int, prefix: str, batch: int = 1, seed: int = 0) -> dict[str, Any]:
    return {"1": {"class_type": "HardNoise", "inputs": {"width": size, "height": size, "batch_size": batch,
                                                          "seed": seed, "flat_first": False}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}


def error_of(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return next(data for kind, data in events if kind == "execution_error")


def test_out_of_memory_frees_models_and_cache_and_the_next_prompt_runs(model_server: HardServer,
                                                                        figures: Any) -> None:
    entry, _ = run(model_server, model_prompt(fail=False))
    assert entry["status"]["status_str"] == "success"
    before = stats(model_server)
    assert before["models"]["held_bytes"] > 0 and before["models"]["models"]
    assert before["cache"]["entries"] > 0

    entry, events = run(model_server, model_prompt(fail=True))
    assert entry["status"]["status_str"] == "error"
    error = error_of(events)
    assert error["node_type"] == "HardOutOfMemory" and error["exception_type"] == "torch.OutOfMemoryError"
    assert "out of memory" in error["exception_message"] and "freed its models and caches" in error["exception_message"]
    after = stats(model_server)
    assert after["models"]["held_bytes"] == 0 and after["models"]["models"] == []
    assert after["cache"]["entries"] == 0 and after["cache"]["bytes"] == 0

    entry, _ = run(model_server, model_prompt(fail=False))
    assert entry["status"]["status_str"] == "success"
    again = stats(model_server)
    assert again["models"]["loads"] == before["models"]["loads"] + 1  # loaded again from its file
    figures.record(faults_injected=1, prompts_lost=0,
                   model_bytes_before=before["models"]["held_bytes"], model_bytes_after=after["models"]["held_bytes"],
                   cache_entries_before=before["cache"]["entries"], cache_entries_after=after["cache"]["entries"],
                   next_prompt="success")


def test_memory_error_in_a_pure_node_empties_the_cache(target: HardServer, figures: Any) -> None:
    values = {"count": 2, "scale": 1.0, "text": "m", "flag": True, "mode": "plain"}
    ok = {"1": {"class_type": "HardValues", "inputs": values},
          "2": {"class_type": "HardMemory", "inputs": {"source": ["1", 0], "fail": False}}}
    target.wait_history(target.queue(ok))
    assert target.get("/system_stats").json()["diffloom"]["cache"]["entries"] > 0
    failing = {**ok, "2": {"class_type": "HardMemory", "inputs": {"source": ["1", 0], "fail": True}}}
    entry = target.wait_history(target.queue(failing))
    assert entry["status"]["status_str"] == "error"
    error = next(d for k, d in entry["status"]["messages"] if k == "execution_error")
    assert error["exception_type"] == "MemoryError" and "freed its models and caches" in error["exception_message"]
    assert target.get("/system_stats").json()["diffloom"]["cache"]["entries"] == 0
    assert target.wait_history(target.queue(ok))["status"]["status_str"] == "success"
    figures.record(faults_injected=1, next_prompt="success")


def output_files(server: HardServer) -> list[str]:
    folder = server.base / "output"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_full_disk_fails_the_prompt_and_leaves_no_file(model_server: HardServer, figures: Any) -> None:
    before = output_files(model_server)
    entry, events = run(model_server, save_prompt(1280, "full"))  # 1280 x 1280 x 3 bytes of noise: ~4.9 MB of PNG
    assert entry["status"]["status_str"] == "error"
    error = error_of(events)
    assert error["node_type"] == "SaveImage"
    assert "File too large" in error["exception_message"] and "full_00001_.png" in error["exception_message"]
    assert output_files(model_server) == before  # no partial file, no temporary .part, no reserved name
    entry, _ = run(model_server, save_prompt(64, "after_full"))
    assert entry["status"]["status_str"] == "success"
    saved = entry["outputs"]["2"]["images"][0]["filename"]
    with Image.open(model_server.base / "output" / saved) as image:
        image.load()
    figures.record(mechanism=f"RLIMIT_FSIZE {FILE_SIZE_LIMIT // MB} MB (EFBIG)", faults_injected=1,
                   files_left=len(output_files(model_server)) - len(before) - 1, next_prompt="success")


def test_full_disk_in_the_middle_of_a_batch_leaves_none_of_it(model_server: HardServer, figures: Any) -> None:
    before = output_files(model_server)
    prompt = save_prompt(1280, "batch", batch=3, seed=1)
    prompt["1"]["inputs"]["flat_first"] = True  # the first image compresses to a few KB and is written
    entry, events = run(model_server, prompt)
    assert entry["status"]["status_str"] == "error"
    assert "batch_00002_.png" in error_of(events)["exception_message"]
    assert output_files(model_server) == before  # the image written before the failure is gone too
    figures.record(faults_injected=1, files_left=0)


@pytest.mark.parametrize("ckpt, reason", [
    ("truncated.safetensors", "truncated"),
    ("corrupt.safetensors", "corrupt safetensors header"),
    ("mystery.safetensors", "not a Stable Diffusion checkpoint"),
    ("code.ckpt", "refusing to unpickle"),
])
def test_broken_model_files_fail_the_prompt_naming_the_file(model_server: HardServer, ckpt: str, reason: str,
                                                            figures: Any) -> None:
    entry, events = run(model_server, model_prompt(fail=False, ckpt=ckpt))
    assert entry["status"]["status_str"] == "error"
    error = error_of(events)
    assert error["node_type"] == "CheckpointLoaderSimple"
    assert ckpt in error["exception_message"] and reason in error["exception_message"], error["exception_message"]
    assert not (model_server.base / "code_ran").exists()
    entry, _ = run(model_server, model_prompt(fail=False))
    assert entry["status"]["status_str"] == "success"
    figures.record(file=ckpt, message=error["exception_message"][:120])


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path("/tmp") / f"diffloom-tmpfs-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                          capture_output=True).returncode != 0:
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    finally:
        probe.rmdir()


if _can_mount_tmpfs():  # a second, independent way to fill a disk, where this machine allows it

    def test_full_tmpfs_fails_save_image_cleanly(tmp_path: Path, figures: Any) -> None:
        import nodes.image
        from graph.executor import Executor
        from graph.registry import NodeRegistry
        from nodes import runtime as node_runtime
        from nodes.folders import FolderPaths
        from tests.hardening import hardening_torch_nodes

        small = tmp_path / "small"
        small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
        previous = node_runtime._runtime
        try:
            node_runtime.configure(FolderPaths(tmp_path, output_dir=small, input_dir=tmp_path / "in",
                                               temp_dir=tmp_path / "temp"))
            registry = NodeRegistry()
            registry.add_module(nodes.image)
            registry.add_module(hardening_torch_nodes)
            executor = Executor(registry)
            result = executor.execute(save_prompt(256, "tmpfs"), "full-tmpfs")  # ~197 KB of PNG into 64 KB
            assert result.status == "error"
            assert "No space left on device" in result.error["exception_message"]
            assert "tmpfs_00001_.png" in result.error["exception_message"]
            assert os.listdir(small) == []  # no partial, temporary or reserved file
            result = executor.execute(save_prompt(16, "fits"), "fits")
            assert result.ok and os.listdir(small) == ["fits_00001_.png"]
        finally:
            node_runtime._runtime = previous
            subprocess.run(["umount", str(small)], check=True)
        figures.record(mechanism="tmpfs of 64 KB (ENOSPC)", faults_injected=1, files_left=0, next_prompt="success")
