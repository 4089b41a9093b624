"""The node registry: every node type the engine knows, by class_type."""
from __future__ import annotations

import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .comfy_v1 import V1Node
from .nodedef import NodeDef


class RegistryError(ValueError):
    """A node type that cannot be registered (a duplicate name, a bad declaration)."""


class NodeRegistry(Mapping[str, NodeDef]):
    """class_type -> NodeDef, with the `/object_info` rendering and where each node came from."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeDef] = {}
        self._origin: dict[str, str] = {}

    def __getitem__(self, name: str) -> NodeDef:
        return self._nodes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def origin(self, name: str) -> str:
        """Which module or plugin registered this node."""
        return self._origin.get(name, "")

    def add(self, node: NodeDef, *, origin: str = "", replace: bool = False) -> NodeDef:
        name = node.schema.name
        if name in self._nodes and not replace and self._nodes[name] is not node:
            raise RegistryError(f"node type {name!r} from {origin or '?'} is already registered by "
                                f"{self._origin.get(name) or '?'}")
        self._nodes[name] = node
        self._origin[name] = origin or node.schema.python_module
        return node

    def add_v1(self, mappings: Mapping[str, type], display_names: Mapping[str, str] | None = None, *,
               python_module: str = "custom_nodes", origin: str = "") -> list[NodeDef]:
        """Register ComfyUI V1 classes from a NODE_CLASS_MAPPINGS dict."""
        display_names = display_names or {}
        built = [V1Node(name, cls, display_name=display_names.get(name), python_module=python_module)
                 for name, cls in mappings.items()]
        for node in built:
            self.add(node, origin=origin or python_module)
        return built

    def add_module(self, module: types.ModuleType, *, origin: str = "") -> list[NodeDef]:
        """Register every node declared in a module (its `@node` functions, in definition order)."""
        found = [value for value in vars(module).values()
                 if isinstance(value, NodeDef) and value.schema.python_module == module.__name__]
        for node in found:
            self.add(node, origin=origin or module.__name__)
        return found

    def add_all(self, nodes: Iterable[NodeDef], *, origin: str = "") -> None:
        for node in nodes:
            self.add(node, origin=origin)

    def remove(self, name: str) -> None:
        self._nodes.pop(name, None)
        self._origin.pop(name, None)

    def object_info(self) -> dict[str, dict[str, Any]]:
        """All node definitions in ComfyUI's `/object_info` shape (combo file lists evaluated now)."""
        return {name: node.schema.object_info() for name, node in self._nodes.items()}
