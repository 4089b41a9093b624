"""The worker package loads without torch and without ray: both arrive only in the workers that need them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_workers_import_without_torch_or_ray() -> None:
    code = ("import sys\n"
            "import graph.server, graph.server.workers, graph.server.workers.host, graph.server.workers.ray_actor\n"
            "heavy = sorted(m for m in ('torch', 'ray', 'diffusers', 'numpy') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
