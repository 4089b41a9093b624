"""diffloom's public plugin API: the only names a plugin may rely on.

    from graph.api import node, Int, In, Result

    @node(category="example", outputs="INT")
    def Double(value: int = Int(1, min=0, max=1000)) -> int:
        \"\"\"Double a number.\"\"\"
        return 2 * value

Everything here is kept stable within a major `API_VERSION`; everything else in `graph` and
`nodes` is private and may change without notice. A plugin may state the version it was written
for with a module-level `DIFFLOOM_API = "1"`; the loader refuses a plugin written for another major
version, with a message saying so. `custom_nodes/README.md` is the guide.
"""
from __future__ import annotations

import os
from pathlib import Path

from .context import ExecutionInterrupted, check_interrupt, progress, send
from .declare import Boolean, Combo, Float, Hidden, In, Int, String, node
from .nodedef import ExecutionBlocker, Result
from .schema import MAX_RESOLUTION, Output

API_VERSION = "1.0"

__all__ = [
    "API_VERSION", "Boolean", "Combo", "ExecutionBlocker", "ExecutionInterrupted", "Float", "Hidden", "In",
    "Int", "MAX_RESOLUTION", "Output", "Result", "String", "check_interrupt", "file_path", "files", "node",
    "progress", "send",
]

_DIRECTORIES = ("input", "output", "temp")


def _folders():  # noqa: ANN202 - the FolderPaths type is private
    # Imported on use: the folder layout lives with the built-in nodes, and graph must import alone.
    from nodes.folders import default_folder_paths  # noqa: PLC0415

    return default_folder_paths()


def _walk(root: str) -> list[str]:
    if not os.path.isdir(root):
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if not name.startswith("."):
                found.append(name if rel == "." else f"{Path(rel).as_posix()}/{name}")
    return sorted(found)


def files(kind: str) -> list[str]:
    """Names of the files in a folder kind: "input", "output", "temp", or a model kind ("loras", ...).

    Names are relative, '/'-separated, sorted; pass one back to `file_path`. Use it as a Combo's
    choices (`Combo(lambda: files("input"))`) so the list stays current.
    """
    folders = _folders()
    if kind in _DIRECTORIES:
        return _walk(folders.get_directory_by_type(kind))
    return folders.get_filename_list(kind)


def file_path(kind: str, name: str) -> Path:
    """The absolute path of `name` in a folder kind; refuses names that leave the folder, raises if missing."""
    folders = _folders()
    if kind in _DIRECTORIES:
        path = folders.annotated_path(name, kind)
        if not path.is_file():
            raise FileNotFoundError(f"{kind} file {name!r} not found in {folders.get_directory_by_type(kind)}")
        return path
    return Path(folders.get_full_path_or_raise(kind, name))
