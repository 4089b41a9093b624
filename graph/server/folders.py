"""What the server needs to know about folders: where outputs, inputs, temp files and user data live,
and which model files exist.

The server only talks to the `Folders` protocol; `server.py` hands it the runtime's
`nodes.folders.FolderPaths` (model folders, extra_model_paths.yaml), so the nodes and the server
agree on every directory. Names that clients send are confined with `graph.files.confined_path`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

# Listed by /models but never offered: plugin source trees are not model files.
HIDDEN_MODEL_KEYS = frozenset({"custom_nodes"})


@runtime_checkable
class Folders(Protocol):
    """The folder layout the server serves files from and lists models of (`nodes.folders.FolderPaths`)."""

    user_dir: str

    def get_directory_by_type(self, kind: str) -> str:
        """The input, output or temp directory."""
        ...

    def keys(self) -> list[str]:
        """Model folder keys (checkpoints, loras, vae, ...)."""
        ...

    def get_filename_list(self, key: str) -> list[str]:
        """Files of one model folder key, relative, '/'-separated; KeyError for an unknown key."""
        ...

    def get_full_path(self, key: str, name: str) -> str | None:
        """The absolute path of a listed model file, or None."""
        ...


def directory_for(folders: Folders, kind: str) -> Path:
    """The folder of a /view or /upload `type` (output, input or temp)."""
    return Path(folders.get_directory_by_type(kind))


def model_keys(folders: Folders) -> list[str]:
    """The model folder keys /models lists."""
    return [key for key in folders.keys() if key not in HIDDEN_MODEL_KEYS]


def list_files(root: Path, extensions: frozenset[str] | None = None) -> list[str]:
    """Files under root, relative and '/'-separated, hidden files and folders skipped, sorted."""
    found: list[str] = []
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or (extensions is not None and Path(name).suffix.lower() not in extensions):
                continue
            found.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(found)


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The `__metadata__` of a .safetensors file (only its header is read), {} if it has none, None if unreadable."""
    from safetensors import SafetensorError, safe_open  # noqa: PLC0415 - only this route needs it

    try:
        # framework="numpy": the header is all we read, and the server process stays free of torch.
        with safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except (OSError, SafetensorError):
        return None
