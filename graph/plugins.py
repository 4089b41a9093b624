"""Load third-party node plugins from `custom_nodes/` folders, each in isolation.

A plugin is a package (`custom_nodes/<name>/__init__.py`) or a module (`custom_nodes/<name>.py`).
It declares nodes with our `@node` (see `graph.api`), ComfyUI's V1 `NODE_CLASS_MAPPINGS` or V3 `comfy_entrypoint`.
Each plugin is imported under the module name `custom_nodes.<name>` and registered all or nothing:
one that fails to import, raises while its nodes are read, or declares a node badly is skipped with
one log line naming it and the cause, and the others load. A plugin's node may not take the name of
a node already registered (a core node, or one of an earlier plugin): that node is refused, the rest
of the plugin loads. Requirements are never installed; a missing one is reported by name.

This module imports only the standard library and the engine. ComfyUI-style plugins also need the
compatibility modules (`folder_paths`, `comfy.*`, ...) that `nodes.compat.install_compat_modules()`
provides; the server installs them before it calls `load_plugins`.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sys
import time
import tomllib
import traceback
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .aio import resolve
from .api import API_VERSION
from .comfy_v1 import DeclarationError, V1Node
from .nodedef import NodeDef
from .registry import NodeRegistry

__all__ = ["PluginReport", "PluginStatus", "PrestartupResult", "discover_plugins", "load_plugins",
           "run_prestartup_scripts"]

log = logging.getLogger(__name__)

Status = Literal["loaded", "failed", "disabled"]
PACKAGE_ROOT = "custom_nodes"
# Top-level modules of ComfyUI itself: a plugin missing one of these needs a part of ComfyUI we lack,
# which is not something the user can pip-install.
COMFY_MODULES = frozenset({"comfy", "comfy_extras", "comfy_execution", "comfy_api", "comfy_api_nodes",
                           "comfy_config", "folder_paths", "latent_preview", "node_helpers", "server",
                           "execution", "nodes"})
_SKIP_NAMES = frozenset({"__pycache__", "README.md"})


@dataclass
class PluginStatus:
    """What happened to one plugin at start-up."""

    name: str
    path: str
    status: Status
    cause: str = ""
    seconds: float = 0.0
    nodes: list[str] = field(default_factory=list)
    style: str = ""  # "diffloom", "comfyui-v1", "comfyui-v3", joined by "+" when several, or "" (no nodes)
    web_dir: str | None = None
    warnings: list[str] = field(default_factory=list)
    missing_requirements: list[str] = field(default_factory=list)
    traceback: str = ""

    @property
    def module_name(self) -> str:
        return module_name_for(self.name)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "status": self.status, "cause": self.cause,
                "seconds": round(self.seconds, 4), "nodes": list(self.nodes), "style": self.style,
                "web_dir": self.web_dir, "warnings": list(self.warnings),
                "missing_requirements": list(self.missing_requirements), "traceback": self.traceback}


@dataclass
class PrestartupResult:
    """One `prestartup_script.py` run: which plugin, how long, and the error if it raised."""

    name: str
    path: str
    seconds: float
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "seconds": round(self.seconds, 4), "error": self.error}


@dataclass
class PluginReport:
    """Every plugin found at start-up, in load order: for the log, the plugins route and the editor."""

    plugins: list[PluginStatus] = field(default_factory=list)
    prestartup: list[PrestartupResult] = field(default_factory=list)
    api_version: str = API_VERSION

    def by_status(self, status: Status) -> list[PluginStatus]:
        return [p for p in self.plugins if p.status == status]

    @property
    def loaded(self) -> list[PluginStatus]:
        return self.by_status("loaded")

    @property
    def failed(self) -> list[PluginStatus]:
        return self.by_status("failed")

    @property
    def disabled(self) -> list[PluginStatus]:
        return self.by_status("disabled")

    def get(self, name: str) -> PluginStatus | None:
        return next((p for p in self.plugins if p.name == name), None)

    def web_directories(self) -> dict[str, Path]:
        """Plugin name -> folder to serve at `/extensions/<name>/`."""
        return {p.name: Path(p.web_dir) for p in self.loaded if p.web_dir}

    def extension_scripts(self) -> list[str]:
        """URLs of every `.js` file of the loaded plugins' web folders, as `/extensions` lists them."""
        urls = []
        for name, folder in self.web_directories().items():
            root = folder.resolve()
            for path in sorted(folder.rglob("*.js")):
                # A symlink inside the web folder must not publish a file from elsewhere.
                if path.is_file() and path.resolve().is_relative_to(root):
                    urls.append(f"/extensions/{name}/{path.relative_to(folder).as_posix()}")
        return urls

    def to_json(self) -> dict[str, Any]:
        return {"api_version": self.api_version, "plugins": [p.to_json() for p in self.plugins],
                "failed": [p.name for p in self.failed], "prestartup": [r.to_json() for r in self.prestartup]}

    def timing_lines(self) -> list[str]:
        """ComfyUI's start-up table: seconds per plugin, fastest first, failures marked."""
        lines = []
        for p in sorted((p for p in self.plugins if p.status != "disabled"), key=lambda p: p.seconds):
            mark = " (IMPORT FAILED)" if p.status == "failed" else ""
            lines.append(f"{p.seconds:6.1f} seconds{mark}: {p.path}")
        return lines


@dataclass(frozen=True)
class _Candidate:
    name: str
    path: Path  # the package folder or the module file
    is_package: bool

    @property
    def entry(self) -> Path:
        return self.path / "__init__.py" if self.is_package else self.path


def module_name_for(plugin: str) -> str:
    """The `sys.modules` name a plugin is imported under (dots would make it look like a sub-module)."""
    return f"{PACKAGE_ROOT}.{plugin.replace('.', '_')}"


def discover_plugins(paths: Iterable[str | os.PathLike[str]]) -> list[_Candidate | PluginStatus]:
    """The plugins in the given folders, in order (a folder's entries sorted by name).

    Skipped silently: dot-files, `__pycache__`, names ending `.disabled`, `README.md` and other
    non-Python files. A folder without `__init__.py` and a name already taken by an earlier folder
    come back as failed statuses, so the user learns why they did not load.
    """
    seen_dirs: set[str] = set()
    taken: dict[str, Path] = {}
    found: list[_Candidate | PluginStatus] = []
    for raw in paths:
        folder = Path(raw).expanduser().absolute()
        real = os.path.realpath(folder)
        if real in seen_dirs:
            continue
        seen_dirs.add(real)
        if not folder.is_dir():
            log.debug("plugin folder %s does not exist; nothing to load from it", folder)
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            name = entry.name
            if name.startswith(".") or name in _SKIP_NAMES or name.endswith(".disabled"):
                continue
            if entry.is_dir():
                candidate = _Candidate(name, entry, True)
                if not (entry / "__init__.py").is_file():
                    found.append(PluginStatus(name, str(entry), "failed",
                                              cause="not a plugin: the folder has no __init__.py"))
                    continue
            elif entry.is_file() and name.endswith(".py"):
                candidate = _Candidate(name[:-3], entry, False)
            else:
                continue
            if candidate.name in taken:
                found.append(PluginStatus(candidate.name, str(entry), "failed",
                                          cause=f"a plugin named {candidate.name!r} was already loaded from "
                                                f"{taken[candidate.name]}"))
                continue
            taken[candidate.name] = entry
            found.append(candidate)
    return found


def _disabled_cause(name: str, allow: set[str] | None, deny: set[str] | None, disabled: bool) -> str:
    if deny and name in deny:
        return "in the deny list"
    if allow is not None:
        return "" if name in allow else "not in the allow list"
    if disabled:
        return "all plugins are disabled (--disable-all-custom-nodes)"
    return ""


# ---- importing ---------------------------------------------------------------------------------------

def _forget_modules(module_name: str) -> None:
    """Drop a plugin's modules, so a re-load (a second server in one process) imports fresh code."""
    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]


def _package_root() -> types.ModuleType:
    root = sys.modules.get(PACKAGE_ROOT)
    if root is None:
        # A parent module lets `import custom_nodes.<name>` and pickling by module name work; its empty
        # __path__ means plugins are only ever reached through the loader, never found on disk by name.
        root = types.ModuleType(PACKAGE_ROOT, "Third-party plugins loaded by graph.plugins.")
        root.__path__ = []
        sys.modules[PACKAGE_ROOT] = root
    return root


def _import(candidate: _Candidate) -> types.ModuleType:
    module_name = module_name_for(candidate.name)
    _forget_modules(module_name)
    if candidate.is_package:
        spec = importlib.util.spec_from_file_location(module_name, candidate.entry,
                                                      submodule_search_locations=[str(candidate.path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, candidate.entry)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot build an import spec for {candidate.entry}")
    module = importlib.util.module_from_spec(spec)
    root = _package_root()
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget_modules(module_name)
        raise
    setattr(root, module_name.rpartition(".")[2], module)
    return module


def _plugin_frame(exc: BaseException, candidate: _Candidate) -> str:
    """`file:line` of the deepest traceback frame inside the plugin, so the cause points at its code."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    inside = (lambda f: f.startswith(str(candidate.path) + os.sep)) if candidate.is_package \
        else (lambda f: f == str(candidate.path))
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if inside(os.path.abspath(frame.filename)):
            where = f"{frame.filename}:{frame.lineno}"
    return where


def _requirements(candidate: _Candidate) -> list[str]:
    """Distributions named in the plugin's requirements.txt that are not installed (never installed by us)."""
    if not candidate.is_package:
        return []
    req = candidate.path / "requirements.txt"
    if not req.is_file():
        return []
    missing = []
    try:
        lines = req.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-") or "://" in line:
            continue
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match is None:
            continue
        marker = line.split(";", 1)[1] if ";" in line else ""
        if marker and not _marker_applies(marker):
            continue
        try:
            importlib.metadata.distribution(match.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(match.group(0))
    return missing


def _marker_applies(marker: str) -> bool:
    """The common platform markers (`sys_platform`, `platform_system`); anything else counts as applying."""
    m = re.fullmatch(r"\s*(sys_platform|platform_system)\s*(==|!=)\s*['\"]([^'\"]+)['\"]\s*", marker)
    if m is None:
        return True
    import platform  # noqa: PLC0415

    actual = sys.platform if m.group(1) == "sys_platform" else platform.system()
    return (actual == m.group(3)) == (m.group(2) == "==")


def _import_failure(exc: BaseException, candidate: _Candidate, missing_reqs: list[str]) -> str:
    """One sentence saying why a plugin did not import."""
    where = _plugin_frame(exc, candidate)
    at = f" (at {where})" if where else ""
    module_name = module_name_for(candidate.name)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        missing = exc.name
        top = missing.split(".")[0]
        if missing == module_name or missing.startswith(module_name + "."):
            return f"import failed: its own module {missing!r} is missing{at}"
        if top in COMFY_MODULES:
            return (f"needs ComfyUI module {missing!r}, which diffloom does not provide{at}")
        listed = f"; requirements.txt lists missing packages: {', '.join(missing_reqs)}" if missing_reqs else ""
        return (f"missing requirement: {missing} (diffloom never installs plugin requirements; "
                f"install it into diffloom's environment yourself){listed}{at}")
    if isinstance(exc, ImportError):
        extra = (" (diffloom's ComfyUI compatibility layer does not provide it)"
                 if exc.name and exc.name.split(".")[0] in COMFY_MODULES else "")
        return f"import failed: ImportError: {exc}{extra}{at}"
    if isinstance(exc, SystemExit):
        return f"import failed: the plugin called sys.exit({exc.code!r}){at}"
    return f"import raised {type(exc).__name__}: {exc}{at}"


# ---- collecting nodes --------------------------------------------------------------------------------

def _own_nodes(module_name: str) -> list[NodeDef]:
    """Every `@node` declaration defined in the plugin's package (its __init__ and the sub-modules it imported)."""
    modules = [sys.modules[module_name]] + [m for n, m in list(sys.modules.items())
                                            if n.startswith(module_name + ".") and m is not None]
    found: list[NodeDef] = []
    for module in modules:
        for value in list(vars(module).values()):
            if (isinstance(value, NodeDef) and not isinstance(value, V1Node) and value not in found
                    and (value.schema.python_module == module_name
                         or value.schema.python_module.startswith(module_name + "."))):
                found.append(value)
    return found


def _v1_nodes(module: types.ModuleType, plugin: str) -> list[NodeDef]:
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is None:
        return []
    if not isinstance(mappings, dict):
        raise DeclarationError(f"NODE_CLASS_MAPPINGS must be a dict of class_type -> class, "
                               f"got {type(mappings).__name__}")
    names = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {}
    if not isinstance(names, dict):
        raise DeclarationError(f"NODE_DISPLAY_NAME_MAPPINGS must be a dict of class_type -> title, "
                               f"got {type(names).__name__}")
    built: list[NodeDef] = []
    for class_type, cls in mappings.items():
        if not isinstance(class_type, str) or not class_type:
            raise DeclarationError(f"NODE_CLASS_MAPPINGS key {class_type!r} must be a non-empty string")
        if not isinstance(cls, type):
            raise DeclarationError(f"{class_type}: NODE_CLASS_MAPPINGS value must be a class, got {cls!r}")
        try:
            node = V1Node(class_type, cls, display_name=names.get(class_type),
                          python_module=f"{PACKAGE_ROOT}.{plugin}")
        except DeclarationError:
            raise
        except Exception as exc:  # a class attribute that is not what its name promises
            raise DeclarationError(f"{class_type}: {type(exc).__name__}: {exc}") from exc
        # ComfyUI sets this on every plugin class; some plugins read it back.
        try:
            cls.RELATIVE_PYTHON_MODULE = f"{PACKAGE_ROOT}.{plugin}"
        except (AttributeError, TypeError):
            pass
        built.append(node)
    return built


def _v3_nodes(module: types.ModuleType, plugin: str) -> list[NodeDef]:
    """ComfyUI V3: `comfy_entrypoint()` -> ComfyExtension -> `get_node_list()` of io.ComfyNode classes.

    Those classes also answer V1's questions (nodes.compat.comfy_api.latest.io.ComfyNode), so each
    registers through the V1 adapter under its schema's node_id.
    """
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if entrypoint is None:
        return []
    if not callable(entrypoint):
        raise DeclarationError(f"comfy_entrypoint must be a function, got {type(entrypoint).__name__}")
    extension = resolve(entrypoint())
    if callable(getattr(extension, "on_load", None)):
        resolve(extension.on_load())
    classes = resolve(extension.get_node_list())
    if not isinstance(classes, (list, tuple)):
        raise DeclarationError(f"get_node_list() must return a list of node classes, got {type(classes).__name__}")
    built: list[NodeDef] = []
    for cls in classes:
        if not isinstance(cls, type) or not callable(getattr(cls, "GET_SCHEMA", None)):
            raise DeclarationError(f"get_node_list() gave {cls!r}, which is not an io.ComfyNode class")
        schema = cls.GET_SCHEMA()
        if not isinstance(schema.node_id, str) or not schema.node_id:
            raise DeclarationError(f"{cls.__name__}: its schema's node_id must be a non-empty string")
        built.append(V1Node(schema.node_id, cls, display_name=schema.display_name,
                            python_module=f"{PACKAGE_ROOT}.{plugin}"))
    return built


def _check_renders(node: NodeDef) -> None:
    """A node whose /object_info entry cannot be built or is not JSON would break the editor for everyone."""
    try:
        json.dumps(node.schema.object_info())
    except Exception as exc:
        raise DeclarationError(f"{node.name}: its definition cannot be sent to the editor: "
                               f"{type(exc).__name__}: {exc}") from exc


def _api_mismatch(module: types.ModuleType) -> str:
    wanted = getattr(module, "DIFFLOOM_API", None)
    if wanted is None:
        return ""
    major = str(wanted).split(".")[0].strip()
    if major != API_VERSION.split(".")[0]:
        return (f"written for diffloom plugin API {wanted}; this diffloom provides API {API_VERSION} "
                f"(update the plugin or diffloom)")
    return ""


def _web_dir(module: types.ModuleType, candidate: _Candidate, status: PluginStatus) -> str | None:
    """WEB_DIRECTORY (or pyproject's [tool.comfy] web) as an absolute folder inside the plugin."""
    declared = getattr(module, "WEB_DIRECTORY", None)
    source = "WEB_DIRECTORY"
    if declared is None and candidate.is_package and (candidate.path / "pyproject.toml").is_file():
        try:
            with open(candidate.path / "pyproject.toml", "rb") as handle:
                declared = tomllib.load(handle).get("tool", {}).get("comfy", {}).get("web")
            source = "pyproject.toml [tool.comfy] web"
        except (OSError, tomllib.TOMLDecodeError) as exc:
            status.warnings.append(f"pyproject.toml could not be read: {exc}")
    if declared is None:
        return None
    if not isinstance(declared, (str, os.PathLike)):
        status.warnings.append(f"{source} must be a folder name, got {declared!r}; nothing is served")
        return None
    if not candidate.is_package:
        status.warnings.append(f"{source} is ignored: a single-file plugin has no folder of its own to serve")
        return None
    root = os.path.realpath(candidate.path)
    full = os.path.realpath(os.path.join(root, os.fspath(declared)))
    if full != root and not full.startswith(root + os.sep):
        status.warnings.append(f"{source} {declared!r} leads outside the plugin folder ({full}); nothing is served")
        return None
    if not os.path.isdir(full):
        status.warnings.append(f"{source} {declared!r} is not a folder ({full}); nothing is served")
        return None
    return full


def _load_one(candidate: _Candidate, registry: NodeRegistry) -> PluginStatus:
    status = PluginStatus(candidate.name, str(candidate.path), "loaded")
    module_name = module_name_for(candidate.name)
    status.missing_requirements = _requirements(candidate)
    started = time.perf_counter()
    try:
        try:
            module = _import(candidate)
        except (Exception, SystemExit) as exc:  # a plugin may raise anything while importing
            status.status = "failed"
            status.cause = _import_failure(exc, candidate, status.missing_requirements)
            status.traceback = "".join(traceback.format_exception(exc))
            return status
        mismatch = _api_mismatch(module)
        if mismatch:
            _forget_modules(module_name)
            status.status, status.cause = "failed", mismatch
            return status
        try:
            ours = _own_nodes(module_name)
            for node in ours:
                # Nodes from a plugin's sub-modules are named after the plugin, as ComfyUI names them.
                node.schema.python_module = f"{PACKAGE_ROOT}.{candidate.name}"
            v1 = _v1_nodes(module, candidate.name)
            # As in ComfyUI, a module's NODE_CLASS_MAPPINGS win over its comfy_entrypoint.
            v3 = [] if hasattr(module, "NODE_CLASS_MAPPINGS") else _v3_nodes(module, candidate.name)
            for node in (*ours, *v1, *v3):
                _check_renders(node)
        except (Exception, SystemExit) as exc:
            _forget_modules(module_name)
            status.status = "failed"
            detail = str(exc) if isinstance(exc, DeclarationError) else f"{type(exc).__name__}: {exc}"
            status.cause = f"bad node declaration: {detail}"
            status.traceback = "".join(traceback.format_exception(exc))
            return status
        status.style = "+".join(s for s, group in (("diffloom", ours), ("comfyui-v1", v1), ("comfyui-v3", v3))
                                if group)
        origin = f"{PACKAGE_ROOT}.{candidate.name}"
        for node in (*ours, *v1, *v3):
            if node.name in registry:
                by = registry.origin(node.name) or "?"
                what = (f"plugin {by.split('.', 1)[1]!r}" if by.startswith(PACKAGE_ROOT + ".")
                        else f"a core node ({by})")
                status.warnings.append(f"node {node.name!r} was not registered: {what} already has that name, "
                                       f"and plugins cannot replace existing nodes")
                continue
            registry.add(node, origin=origin)
            status.nodes.append(node.name)
        status.web_dir = _web_dir(module, candidate, status)
        if status.missing_requirements:
            status.warnings.append("requirements.txt lists packages that are not installed: "
                                   + ", ".join(status.missing_requirements))
        return status
    finally:
        status.seconds = time.perf_counter() - started


def load_plugins(paths: Iterable[str | os.PathLike[str]], registry: NodeRegistry, *, allow: set[str] | None = None,
                 deny: set[str] | None = None, disabled: bool = False,
                 prestartup: list[PrestartupResult] | None = None) -> PluginReport:
    """Import every plugin in `paths` into `registry`, each in isolation; never raises for a plugin's fault.

    `deny` names never load. `allow`, when given, is the only names that load (even with
    `disabled`, as ComfyUI's whitelist). `disabled` alone loads none. Skipped plugins are reported
    as "disabled" with the reason.
    """
    report = PluginReport(prestartup=list(prestartup or []))
    for found in discover_plugins(paths):
        why = _disabled_cause(found.name, allow, deny, disabled)
        if why:
            log.info("plugin %s is disabled: %s", found.name, why)
            report.plugins.append(PluginStatus(found.name, str(found.path), "disabled", cause=why))
            continue
        if isinstance(found, PluginStatus):
            log.error("plugin %s (%s) was not loaded: %s", found.name, found.path, found.cause)
            report.plugins.append(found)
            continue
        status = _load_one(found, registry)
        if status.status == "failed":
            log.error("plugin %s (%s) failed to load, skipped: %s", status.name, status.path, status.cause)
            if status.traceback:
                log.debug("plugin %s traceback:\n%s", status.name, status.traceback)
        else:
            log.info("plugin %s loaded: %d node(s) in %.2f s", status.name, len(status.nodes), status.seconds)
        for warning in status.warnings:
            log.warning("plugin %s: %s", status.name, warning)
        report.plugins.append(status)
    lines = report.timing_lines()
    if lines:
        log.info("Import times for plugins:\n%s", "\n".join(lines))
    return report


def run_prestartup_scripts(paths: Iterable[str | os.PathLike[str]], *, allow: set[str] | None = None,
                           deny: set[str] | None = None, disabled: bool = False) -> list[PrestartupResult]:
    """Run each plugin's `prestartup_script.py` (ComfyUI runs them before heavy imports); failures are reported."""
    results = []
    for found in discover_plugins(paths):
        if isinstance(found, PluginStatus) or not found.is_package or _disabled_cause(found.name, allow, deny, disabled):
            continue
        script = found.path / "prestartup_script.py"
        if not script.is_file():
            continue
        started = time.perf_counter()
        error = ""
        try:
            spec = importlib.util.spec_from_file_location(f"{module_name_for(found.name)}_prestartup", script)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot build an import spec for {script}")
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        except (Exception, SystemExit) as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.error("plugin %s: prestartup script failed (PRESTARTUP FAILED): %s", found.name, error)
        results.append(PrestartupResult(found.name, str(script), time.perf_counter() - started, error))
    return results
