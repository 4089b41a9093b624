"""Outputs never overwrite each other: many threads and several processes save with the same prefix at once.

Every image is a flat colour that encodes who saved it, so after the race each expected image must
be found in exactly one file, every file must decode, and no temporary or empty file may remain.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.hardening.save_worker import colour_batch
from tests.server.server_harness import ROOT


def identities(folder: Path) -> Counter[tuple[int, int]]:
    """(worker, index) of every saved PNG; fails on a file that does not decode."""
    found: Counter[tuple[int, int]] = Counter()
    for path in folder.iterdir():
        assert path.suffix == ".png" and not path.name.startswith("."), f"stray file {path.name}"
        with Image.open(path) as image:
            r, g, b = np.asarray(image.convert("RGB"))[0, 0].tolist()
        found[(r, g * 256 + b)] += 1
    return found


@pytest.fixture
def save_runtime(tmp_path: Path) -> Any:
    from nodes import runtime as node_runtime
    from nodes.folders import FolderPaths

    previous = node_runtime._runtime
    node_runtime.configure(FolderPaths(tmp_path, output_dir=tmp_path / "out"), write_metadata=False)
    yield tmp_path / "out"
    node_runtime._runtime = previous


def test_threads_saving_with_one_prefix_never_collide(save_runtime: Path, heavy: bool, figures: Any) -> None:
    from nodes.image import save_images

    threads, per_thread = (16, 60) if heavy else (8, 12)
    start = threading.Barrier(threads)
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            start.wait()
            for index in range(0, per_thread, 2):
                save_images(colour_batch(worker, index, 2), "race", "output", None, None, 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert not failures, failures
    found = identities(save_runtime)
    expected = {(w, i) for w in range(threads) for i in range(per_thread)}
    assert set(found) == expected and set(found.values()) == {1}
    assert len(os.listdir(save_runtime)) == threads * per_thread
    figures.record(threads=threads, images=threads * per_thread, overwritten=0, lost=0)


def test_processes_saving_into_one_folder_never_collide(tmp_path: Path, heavy: bool, figures: Any) -> None:
    processes, per_process = (6, 100) if heavy else (2, 16)
    output = tmp_path / "shared"
    output.mkdir()
    env = {**os.environ, "GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.hardening.save_worker", str(output), "race", str(w),
                               str(per_process)], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
             for w in range(processes)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
    found = identities(output)
    expected = {(w, i) for w in range(processes) for i in range(per_process)}
    assert set(found) == expected and set(found.values()) == {1}
    figures.record(processes=processes, images=processes * per_process, overwritten=0, lost=0)
