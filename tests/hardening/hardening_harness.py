"""What the hardening tests share: a server process with resource limits, memory sampling, strict JSON.

`HardServer` is the server harness of tests/server with the hardening nodes loaded too, an optional
RLIMIT_FSIZE (writes beyond it fail with EFBIG: an honest full disk that needs no root) and RSS
figures of the server process read with psutil. `strict_json` parses as a browser's JSON.parse
would (no NaN or Infinity), because that is what the editor does with every answer.
"""
from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.server.server_harness import TEST_NODES, ServerProcess

HARDENING_NODES = "tests.hardening.hardening_nodes"
TORCH_NODES = str(Path(__file__).with_name("hardening_torch_nodes.py"))


class HardServer(ServerProcess):
    """`python server.py` with the test and hardening nodes; optionally a file-size limit."""

    def __init__(self, base: Path, *args: str, env: dict[str, str] | None = None, builtin_nodes: bool = False,
                 extra_nodes: tuple[str, ...] = (), file_size_limit: int | None = None) -> None:
        super().__init__(base, *args, env=env, builtin_nodes=builtin_nodes)
        self.extra_nodes = (TEST_NODES, HARDENING_NODES, *extra_nodes)
        self.file_size_limit = file_size_limit

    def spawned(self, proc: subprocess.Popen[str]) -> None:
        if self.file_size_limit is not None:
            # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG instead of killing it.
            psutil.Process(proc.pid).rlimit(psutil.RLIMIT_FSIZE, (self.file_size_limit, self.file_size_limit))

    def rss(self) -> int:
        """Resident memory of the server process now, in bytes."""
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss

    def errors_logged(self) -> list[str]:
        """Log lines of unexpected failures: 500s, tracebacks the server did not expect."""
        return [line for line in self.lines if "Traceback" in line or ("ERROR" in line and " failed" in line)]


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread; `peak` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                self.samples += 1
            except psutil.NoSuchProcess:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (a browser's JSON.parse refuses it)")


def strict_json(body: bytes | str) -> Any:
    """Parse as JSON.parse does: NaN, Infinity and -Infinity are errors."""
    return json.loads(body, parse_constant=_no_constant)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start
