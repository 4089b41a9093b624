"""`graph/` imports without torch: a subprocess where importing torch fails loads every module."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_TORCH = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "numpy", "diffusers", "transformers") or name.startswith(("torch.", "diffusers.", "transformers.")):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import pkgutil, importlib, graph
names = [m.name for m in pkgutil.walk_packages(graph.__path__, "graph.")]
for name in names:
    importlib.import_module(name)
assert "torch" not in sys.modules
print(len(names))
"""


def test_graph_imports_without_torch() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 10
