"""Scale-out: prompts per minute through one server with one and with two worker processes (`--devices`).

A real `server.py` per configuration, with the built-in nodes and a tiny SD1 checkpoint written
once. Each worker first runs one prompt (model loaded, caches warm); then `--prompts` prompts with
distinct seeds (so nothing comes from the cache but the loader and the text encoding) are queued at
once and timed from the first POST to the last finished history entry. The in-process worker (no
`--devices`) is measured too, as the single-process reference. On a CPU machine two workers share
the cores (each gets half of the threads), so the ratio shows the gain of running prompts side by
side, not of more hardware.

    python bench/bench_workers.py [--prompts 16] [--steps 10] [--size 96] [--rounds 1] [--json out.json]

`measure(...)` returns the figures as a dict; `report(figures)` renders them as Markdown lines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.server_proc import ServerProcess  # noqa: E402

CONFIGS: dict[str, list[str]] = {"in-process": [], "1 worker": ["--devices", "cpu"], "2 workers": ["--devices", "cpu,cpu"]}
CHECKPOINT = "bench-workers-tiny-sd1.safetensors"


def _http(method: str, url: str, body: Any = None, timeout: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def prompt(seed: int, *, steps: int, size: int) -> dict[str, Any]:
    """Text to image on the tiny checkpoint; PreviewImage keeps the output folder small."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


class Server(ServerProcess):
    """`python server.py` with the built-in nodes on a free loopback port, asked about its workers."""

    def __init__(self, base: Path, args: list[str]) -> None:
        super().__init__(base, "--preview-method", "none", *args)

    def __enter__(self) -> Server:
        self.start(timeout=300.0)  # with --devices the worker processes import torch before it listens
        return self

    def workers(self) -> list[dict[str, Any]]:
        worker = _http("GET", self.url + "/system_stats")["diffloom"]["worker"]
        return worker.get("workers", [worker])

    def wait_workers_ready(self) -> None:
        deadline = time.monotonic() + 600
        while not all(w.get("state", "ready") in ("ready", "busy") for w in self.workers()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers not ready: {self.workers()}")
            time.sleep(0.2)

    def run_all(self, prompts: list[dict[str, Any]]) -> float:
        """Queue every prompt at once; seconds until the last one is in the history."""
        started = time.perf_counter()
        ids = [_http("POST", self.url + "/prompt", {"prompt": p})["prompt_id"] for p in prompts]
        for prompt_id in ids:
            while True:
                entry = _http("GET", f"{self.url}/history/{prompt_id}").get(prompt_id)
                if entry is not None:
                    if entry["status"]["status_str"] != "success":
                        raise RuntimeError(f"prompt {prompt_id} failed: {entry['status']['messages'][-1]}")
                    break
                time.sleep(0.02)
        return time.perf_counter() - started


def write_checkpoint(base: Path) -> None:
    from nodes.models.tiny import write_tiny_checkpoint  # noqa: PLC0415 - torch, only in this process

    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / CHECKPOINT).is_file():
        write_tiny_checkpoint(folder, "sd1", name=CHECKPOINT.removesuffix(".safetensors"))


def measure(*, prompts: int = 16, steps: int = 10, size: int = 96, rounds: int = 1,
            configs: dict[str, list[str]] | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Prompts per minute of each configuration (median over rounds), and the 2-worker/1-worker ratio."""
    configs = configs or CONFIGS
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        figures: dict[str, Any] = {"prompts": prompts, "steps": steps, "size": size, "rounds": rounds,
                                   "cpu_count": os.cpu_count(), "configs": {}}
        base = Path(tmp)
        write_checkpoint(base)
        seed = 1000
        for name, args in configs.items():
            rates = []
            with Server(base, args) as server:
                server.wait_workers_ready()
                workers = len(server.workers())
                server.run_all([prompt(seed + i, steps=steps, size=size) for i in range(workers * 2)])  # warm-up
                seed += workers * 2
                for _ in range(rounds):
                    seconds = server.run_all([prompt(seed + i, steps=steps, size=size) for i in range(prompts)])
                    seed += prompts
                    rates.append(prompts / seconds * 60.0)
                used = [w.get("prompts_run", 0) for w in server.workers()]
            rates.sort()
            figures["configs"][name] = {"args": args, "workers": workers, "prompts_per_minute": rates[len(rates) // 2],
                                        "all_rounds": rates, "prompts_per_worker": used}
            print(f"{name:>11}: {rates[len(rates) // 2]:7.1f} prompts/min ({workers} worker(s); prompts run "
                  f"per worker {used})", flush=True)
        one, two = figures["configs"].get("1 worker"), figures["configs"].get("2 workers")
        if one and two:
            figures["two_over_one"] = two["prompts_per_minute"] / one["prompts_per_minute"]
        return figures


def report(figures: dict[str, Any]) -> list[str]:
    """Markdown lines for bench/results.md."""
    lines = [f"Prompts per minute, tiny SD1 at {figures['size']} px, {figures['steps']} steps, {figures['prompts']} "
             f"prompts queued at once, {figures['cpu_count']} CPU cores (median of {figures['rounds']} round(s)):", "",
             "| configuration | workers | prompts/min |", "|---|---|---|"]
    for name, data in figures["configs"].items():
        lines.append(f"| {name} | {data['workers']} | {data['prompts_per_minute']:.1f} |")
    if "two_over_one" in figures:
        lines += ["", f"Two workers / one worker: {figures['two_over_one']:.2f}x."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    figures = measure(prompts=args.prompts, steps=args.steps, size=args.size, rounds=args.rounds)
    print("\n".join(report(figures)))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
