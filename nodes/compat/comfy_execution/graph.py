"""`from comfy_execution.graph import ExecutionBlocker, DynamicPrompt`: the engine's own classes."""
from __future__ import annotations

from graph.dynamic_prompt import DynamicPrompt, NodeNotFoundError
from graph.nodedef import ExecutionBlocker

__all__ = ["DynamicPrompt", "ExecutionBlocker", "NodeNotFoundError"]
