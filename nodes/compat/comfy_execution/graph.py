"""`from comfy_execution.graph import ExecutionBlocker`: the engine's own blocker."""
from __future__ import annotations

from graph.nodedef import ExecutionBlocker

__all__ = ["ExecutionBlocker"]
