"""ComfyUI's `folder_paths` module for plugins, over diffloom's folder layout (`nodes.folders`).

Plugins call module-level functions (`folder_paths.get_filename_list("loras")`) and read module
attributes (`folder_paths.models_dir`); both read the process-wide `default_folder_paths()` at call
time, so they follow the folders the server configured. Names that would leave their folder are
refused (`UnsafePathError`), where ComfyUI would quietly rewrite them.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any

from nodes.folders import LEGACY_KEYS, MODEL_EXTENSIONS, FolderPaths, UnsafePathError, default_folder_paths, safe_join

__all__ = [
    "add_model_folder_path", "annotated_filepath", "exists_annotated_filepath", "filter_files_extensions",
    "folder_names_and_paths", "get_annotated_filepath", "get_directory_by_type", "get_filename_list",
    "get_folder_paths", "get_full_path", "get_full_path_or_raise", "get_input_directory",
    "get_output_directory", "get_save_image_path", "get_temp_directory", "get_user_directory", "map_legacy",
    "recursive_search", "set_input_directory", "set_output_directory", "set_temp_directory",
    "supported_pt_extensions",
]

supported_pt_extensions: set[str] = set(MODEL_EXTENSIONS)
_ANNOTATIONS = ("input", "output", "temp")


def _fp() -> FolderPaths:
    return default_folder_paths()


def __getattr__(name: str) -> Any:
    """ComfyUI's module-level directory variables, read live from the configured folders."""
    fp = _fp()
    live = {"base_path": fp.base_dir, "models_dir": fp.models_dir, "output_directory": fp.output_dir,
            "input_directory": fp.input_dir, "temp_directory": fp.temp_dir, "user_directory": fp.user_dir}
    if name in live:
        return live[name]
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r}")


def map_legacy(folder_name: str) -> str:
    """`unet` -> `diffusion_models`, `clip` -> `text_encoders`; other names unchanged."""
    return LEGACY_KEYS.get(folder_name, folder_name)


# ---- model folders -----------------------------------------------------------------------------------

def get_folder_paths(folder_name: str) -> list[str]:
    """The folders searched for a model kind, in lookup order."""
    return _fp().get_folder_paths(folder_name)


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a folder for a model kind (first when `is_default`); an unknown kind becomes a new one."""
    _fp().add_model_folder_path(folder_name, full_folder_path, is_default)


def get_filename_list(folder_name: str) -> list[str]:
    """Sorted file names (relative, '/'-separated) of a model kind; KeyError for an unknown kind."""
    return _fp().get_filename_list(folder_name)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The absolute path of a model file, or None if no folder of the kind holds it."""
    return _fp().get_full_path(folder_name, filename)


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    """Like get_full_path, but a missing file raises FileNotFoundError naming the folders searched."""
    return _fp().get_full_path_or_raise(folder_name, filename)


class _PathList(list[str]):
    """The folder list of one kind; adding to it adds the folder to diffloom's layout too."""

    def __init__(self, key: str, paths: Iterable[str]) -> None:
        super().__init__(paths)
        self.key = key

    def append(self, path: str) -> None:
        super().append(path)
        _fp().add_model_folder_path(self.key, path)

    def insert(self, index: int, path: str) -> None:  # type: ignore[override]
        super().insert(index, path)
        _fp().add_model_folder_path(self.key, path, is_default=index == 0)

    def extend(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.append(path)


class _FolderNamesAndPaths(MutableMapping[str, tuple[list[str], set[str]]]):
    """ComfyUI's `folder_names_and_paths` dict as a live view: kind -> (folders, extensions)."""

    def __getitem__(self, key: str) -> tuple[list[str], set[str]]:
        fp = _fp()
        paths = fp.get_folder_paths(key)  # KeyError for unknown kinds, as a dict would
        extensions = fp.extensions(key)
        return _PathList(fp.canonical_key(key), paths), set(extensions) if extensions is not None else set()

    def __setitem__(self, key: str, value: tuple[Iterable[str], Iterable[str]]) -> None:
        paths, extensions = value
        fp = _fp()
        exts = set(extensions) if extensions else None
        for path in paths:
            fp.add_model_folder_path(key, path, extensions=exts)

    def __delitem__(self, key: str) -> None:
        raise TypeError("folder kinds cannot be removed from diffloom's folder layout")

    def __iter__(self) -> Iterator[str]:
        return iter(_fp().keys())

    def __len__(self) -> int:
        return len(_fp().keys())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _fp().canonical_key(key) in _fp().keys()


folder_names_and_paths = _FolderNamesAndPaths()


def filter_files_extensions(files: Iterable[str], extensions: Iterable[str]) -> list[str]:
    """The names whose extension is listed (all of them when `extensions` is empty), sorted."""
    exts = {e.lower() for e in extensions}
    return sorted(f for f in files if not exts or os.path.splitext(f)[1].lower() in exts)


def recursive_search(directory: str, excluded_dir_names: Iterable[str] | None = None) -> tuple[list[str], dict[str, float]]:
    """(relative file names, {folder: mtime}) under `directory`; hidden entries and excluded folders skipped."""
    excluded = set(excluded_dir_names or ())
    if not os.path.isdir(directory):
        return [], {}
    files: list[str] = []
    dirs: dict[str, float] = {directory: os.path.getmtime(directory)}
    for root, subdirs, names in os.walk(directory, followlinks=True):
        subdirs[:] = [d for d in subdirs if d not in excluded and not d.startswith(".")]
        for d in subdirs:
            path = os.path.join(root, d)
            dirs[path] = os.path.getmtime(path)
        for name in names:
            if not name.startswith("."):
                files.append(os.path.relpath(os.path.join(root, name), directory).replace(os.sep, "/"))
    return sorted(files), dirs


# ---- input, output and temp --------------------------------------------------------------------------

def get_input_directory() -> str:
    return _fp().input_dir


def get_output_directory() -> str:
    return _fp().output_dir


def get_temp_directory() -> str:
    return _fp().temp_dir


def get_user_directory() -> str:
    return _fp().user_dir


def set_input_directory(path: str) -> None:
    _fp().input_dir = os.path.abspath(path)


def set_output_directory(path: str) -> None:
    _fp().output_dir = os.path.abspath(path)


def set_temp_directory(path: str) -> None:
    _fp().temp_dir = os.path.abspath(path)


def get_directory_by_type(type_name: str) -> str | None:
    """The input, output or temp directory; None for another type (as ComfyUI)."""
    try:
        return _fp().get_directory_by_type(type_name)
    except ValueError:
        return None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """Split ComfyUI's `name [output]` annotation: (name, its directory) or (name, None) without one."""
    for kind in _ANNOTATIONS:
        tag = f" [{kind}]"
        if name.endswith(tag):
            return name[: -len(tag)], _fp().get_directory_by_type(kind)
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The path of an annotated name; without annotation it is looked up in default_dir (input by default)."""
    bare, base = annotated_filepath(name)
    if base is None:
        base = default_dir if default_dir is not None else get_input_directory()
    return str(safe_join(base, bare, what="file name"))


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except UnsafePathError:
        return False


def _expand_size(prefix: str, width: int, height: int) -> str:
    return prefix.replace("%width%", str(width)).replace("%height%", str(height))


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> tuple[str, str, int, str, str]:
    """(folder, file stem, next counter, subfolder, prefix) for saving `<stem>_<counter:05>_.png`, as ComfyUI.

    The prefix may hold sub-folders and `%width%`/`%height%`; one that leaves output_dir is refused.
    The counter is one past the highest `<stem>_<n>` already in the folder.
    """
    filename_prefix = _expand_size(filename_prefix, image_width, image_height)
    norm = os.path.normpath(filename_prefix.replace("\\", "/"))
    subfolder, filename = os.path.split(norm)
    try:
        folder = safe_join(output_dir, norm, what="filename_prefix").parent
    except UnsafePathError as exc:
        raise UnsafePathError(f"saving to {filename_prefix!r} is outside the output folder {output_dir!r}: "
                              f"{exc}") from exc
    pattern = re.compile(re.escape(filename) + r"_(\d+)")
    counter = 1
    if folder.is_dir():
        numbers = [int(m.group(1)) for entry in os.listdir(folder) if (m := pattern.match(entry))]
        counter = max(numbers, default=0) + 1
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder), filename, counter, subfolder, filename_prefix
