"""ComfyUI's import names for V1 plugins, implemented on diffloom, and the server's plugin start-up.

`install_compat_modules()` makes these imports work for plugins:

    import folder_paths                                   -> nodes.compat.folder_paths
    import comfy.utils, comfy.model_management            -> nodes.compat.comfy.*
    from comfy.comfy_types import IO, ComfyNodeABC        -> nodes.compat.comfy.comfy_types
    from comfy_execution.graph_utils import GraphBuilder  -> nodes.compat.comfy_execution.*
    from comfy_api.latest import ComfyExtension, io, ui  -> nodes.compat.comfy_api.latest (V3 nodes)
    from server import PromptServer                       -> nodes.compat.server

Each alias is the same module object as its `nodes.compat` original (one set of globals), and is
imported only when a plugin asks for it, so torch loads only if a plugin needs `comfy.utils`.
A plugin importing a part of ComfyUI not provided here fails to load with a message naming it.

`server` means the PromptServer facade, not diffloom's `server.py`: run as a script, that file is
`__main__`, and a plugin's `import server` must not execute the whole door a second time. A
process that already imported `server.py` as `server` keeps it (it re-exports PromptServer).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from graph.plugins import PluginReport, load_plugins, run_prestartup_scripts

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from graph.registry import NodeRegistry
    from nodes.folders import FolderPaths

__all__ = ["bind_server", "install_compat_modules", "load_custom_nodes", "plugin_paths", "uninstall_compat_modules"]

# Top-level names that mean our compat modules once installed (nothing in diffloom imports them).
ALIASED_ROOTS = ("folder_paths", "comfy", "comfy_execution", "comfy_api", "server")
_PACKAGE = __name__


class _AliasLoader(importlib.abc.Loader):
    """Hands out the already imported `nodes.compat` module instead of executing a copy."""

    def __init__(self, real_name: str) -> None:
        self.real_name = real_name
        self._real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = importlib.import_module(self.real_name)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The import system stamped the alias spec on the shared module; the original keeps its own.
        module.__spec__ = self._real_spec


class _CompatFinder(importlib.abc.MetaPathFinder):
    """Maps `<root>[.sub]` to `nodes.compat.<root>[.sub]` for the configured roots."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = frozenset(roots)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", 1)[0] not in self.roots:
            return None
        real_name = f"{_PACKAGE}.{fullname}"
        try:
            real = importlib.util.find_spec(real_name)
        except ModuleNotFoundError:
            return None
        if real is None:
            return None  # e.g. comfy.sd: ModuleNotFoundError names what the plugin wanted
        return importlib.util.spec_from_loader(fullname, _AliasLoader(real_name),
                                               is_package=real.submodule_search_locations is not None)


def _installed() -> list[_CompatFinder]:
    return [f for f in sys.meta_path if isinstance(f, _CompatFinder)]


def install_compat_modules() -> None:
    """Make ComfyUI's import names resolve to diffloom's implementations (idempotent)."""
    if not _installed():
        # First, so a `comfy` or `server.py` elsewhere on sys.path never shadows ours.
        sys.meta_path.insert(0, _CompatFinder(ALIASED_ROOTS))


def uninstall_compat_modules() -> None:
    """Remove the import aliases (tests); modules already imported stay importable by their real names."""
    for finder in _installed():
        sys.meta_path.remove(finder)
    for name in [n for n in sys.modules if n.split(".", 1)[0] in ALIASED_ROOTS]:
        if getattr(sys.modules[name], "__name__", "").startswith(_PACKAGE + "."):
            del sys.modules[name]


def bind_server(*, app: web.Application | None = None, loop: asyncio.AbstractEventLoop | None = None,
                broadcast: Callable[[str, Any, str | None], None] | None = None,
                interrupt: Callable[[], Any] | None = None) -> None:
    """Connect the facades to a running server: PromptServer's app/loop/broadcast, the interrupt outside nodes."""
    from .interrupts import set_interrupt_handler  # noqa: PLC0415
    from .server import PromptServer  # noqa: PLC0415

    PromptServer.instance.bind(app=app, loop=loop, broadcast=broadcast)
    set_interrupt_handler(
        (lambda value: interrupt() if value else None) if interrupt is not None else None)


def plugin_paths(folders: FolderPaths | None = None) -> list[str]:
    """The plugin folders: `<base>/custom_nodes` and every `custom_nodes` entry of extra_model_paths.yaml."""
    from nodes.folders import default_folder_paths  # noqa: PLC0415

    fp = folders or default_folder_paths()
    return [os.path.abspath(p) for p in fp.get_folder_paths("custom_nodes")]


def load_custom_nodes(registry: NodeRegistry, *, folders: FolderPaths | None = None,
                      paths: Iterable[str] | None = None, allow: set[str] | None = None,
                      deny: set[str] | None = None, disabled: bool = False,
                      prestartup: bool = True) -> PluginReport:
    """The server's start-up step: install the compat modules, run prestartup scripts, load every plugin."""
    install_compat_modules()
    where = list(paths) if paths is not None else plugin_paths(folders)
    scripts = run_prestartup_scripts(where, allow=allow, deny=deny, disabled=disabled) if prestartup else []
    return load_plugins(where, registry, allow=allow, deny=deny, disabled=disabled, prestartup=scripts)
