"""server.py starts without importing the model libraries; its worker imports them before the first prompt."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.server.server_harness import ROOT

PROBE = """
import json, sys
import server
from graph.server import parse_server_args
registry, folders, runtime, report = server.build_runtime(
    parse_server_args(["--base-directory", sys.argv[1], "--disable-all-custom-nodes"]))
heavy = ("diffusers", "transformers", "scipy.stats", "torch._dynamo")
at_start = [m for m in heavy if m in sys.modules]
runtime.warm_up()
print(json.dumps({"nodes": len(registry), "at_start": at_start, "after_warm_up": [m for m in heavy if m in sys.modules]}))
"""


def test_the_built_in_nodes_load_without_diffusers_and_the_warm_up_imports_it(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={"GOMP_SPINCOUNT": "0", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["nodes"] > 50  # every built-in node is registered
    assert found["at_start"] == []  # seconds of imports the server does not wait for
    assert {"diffusers", "transformers"} <= set(found["after_warm_up"])
