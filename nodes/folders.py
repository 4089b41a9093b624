"""Model and data folders laid out as ComfyUI lays them out, plus `extra_model_paths.yaml`.

A `FolderPaths` object owns one base directory: `models/<kind>` folders (with ComfyUI's keys and
legacy aliases), the input/output/temp/user directories, extra folders registered at run time or
read from `extra_model_paths.yaml`. It is an object, not module globals, so that several servers
can live in one process (tests do). Names handed out and accepted are forward-slash paths relative
to one of a key's folders; a name that would leave its folder is refused.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from graph.files import PathEscapeError, check_name_part, confined_path

__all__ = [
    "FolderPaths", "FolderSpec", "UnsafePathError", "MODEL_EXTENSIONS", "LEGACY_KEYS",
    "safe_join", "check_relative_name", "default_folder_paths", "set_default_folder_paths",
]

log = logging.getLogger(__name__)

MODEL_EXTENSIONS: frozenset[str] = frozenset(
    {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
LEGACY_KEYS: dict[str, str] = {"unet": "diffusion_models", "clip": "text_encoders"}


class UnsafePathError(PathEscapeError):
    """A file name that would resolve outside the folder it is looked up in."""


@dataclass
class FolderSpec:
    """The folders of one key and what counts as an entry in them.

    `extensions` None accepts every file; `marker` set means entries are directories holding
    that file (diffusers pipelines hold `model_index.json`, transformers models `config.json`).
    """

    paths: list[str]
    extensions: frozenset[str] | None = MODEL_EXTENSIONS
    marker: str | None = None


# key -> (sub-folders of models/, extensions, marker). Order of sub-folders = lookup order.
_MODEL_FOLDERS: dict[str, tuple[tuple[str, ...], frozenset[str] | None, str | None]] = {
    "checkpoints": (("checkpoints",), MODEL_EXTENSIONS, None),
    "configs": (("configs",), frozenset({".yaml"}), None),
    "loras": (("loras",), MODEL_EXTENSIONS, None),
    "vae": (("vae",), MODEL_EXTENSIONS, None),
    "text_encoders": (("text_encoders", "clip"), MODEL_EXTENSIONS, None),
    "diffusion_models": (("unet", "diffusion_models"), MODEL_EXTENSIONS, None),
    "clip_vision": (("clip_vision",), MODEL_EXTENSIONS, None),
    "style_models": (("style_models",), MODEL_EXTENSIONS, None),
    "embeddings": (("embeddings",), MODEL_EXTENSIONS, None),
    "diffusers": (("diffusers",), None, "model_index.json"),
    "vae_approx": (("vae_approx",), MODEL_EXTENSIONS, None),
    "controlnet": (("controlnet", "t2i_adapter"), MODEL_EXTENSIONS, None),
    "gligen": (("gligen",), MODEL_EXTENSIONS, None),
    "upscale_models": (("upscale_models",), MODEL_EXTENSIONS, None),
    "hypernetworks": (("hypernetworks",), MODEL_EXTENSIONS, None),
    "photomaker": (("photomaker",), MODEL_EXTENSIONS, None),
    "classifiers": (("classifiers",), None, None),
    "model_patches": (("model_patches",), MODEL_EXTENSIONS, None),
    "audio_encoders": (("audio_encoders",), MODEL_EXTENSIONS, None),
    # Ours: transformers depth-estimation models, one folder each.
    "depth": (("depth",), None, "config.json"),
}
# Models a workflow saved (checkpoint merges, extracted LoRAs) are offered again, as ComfyUI does.
_OUTPUT_FOLDERS: dict[str, str] = {"checkpoints": "checkpoints", "text_encoders": "clip", "vae": "vae",
                                   "diffusion_models": "diffusion_models", "loras": "loras"}


def check_relative_name(name: str, *, what: str = "name") -> str:
    """Normalise a user-supplied relative name to forward slashes; refuse one that could escape."""
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"{what} {name!r} is empty or not a string: it must be a relative file name")
    # Workflows saved on Windows name sub-folders with backslashes; everything else is graph.files' rule.
    norm = name.replace("\\", "/")
    try:
        check_name_part(norm, what)
    except PathEscapeError as exc:
        raise UnsafePathError(str(exc)) from exc
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"{what} {name!r} names no file")
    return "/".join(parts)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def safe_join(base: str | os.PathLike[str], name: str, *, what: str = "name") -> Path:
    """`base/name`, refusing a name that leaves `base` (`..`, absolute, NUL, symlinks pointing out)."""
    rel = check_relative_name(name, what=what)
    try:
        confined_path(base, rel, what=what)
    except PathEscapeError as exc:
        raise UnsafePathError(str(exc)) from exc
    return Path(os.path.join(os.path.abspath(base), rel))


class FolderPaths:
    """ComfyUI's folder layout under one base directory, with cached recursive file lists."""

    def __init__(self, base_dir: str | os.PathLike[str], *, models_dir: str | os.PathLike[str] | None = None,
                 input_dir: str | os.PathLike[str] | None = None, output_dir: str | os.PathLike[str] | None = None,
                 temp_dir: str | os.PathLike[str] | None = None, user_dir: str | os.PathLike[str] | None = None,
                 create_dirs: bool = False) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.models_dir = os.path.abspath(models_dir or os.path.join(self.base_dir, "models"))
        self.input_dir = os.path.abspath(input_dir or os.path.join(self.base_dir, "input"))
        self.output_dir = os.path.abspath(output_dir or os.path.join(self.base_dir, "output"))
        self.temp_dir = os.path.abspath(temp_dir or os.path.join(self.base_dir, "temp"))
        self.user_dir = os.path.abspath(user_dir or os.path.join(self.base_dir, "user"))
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[tuple[str, ...], dict[str, int | None], list[str]]] = {}
        self._folders: dict[str, FolderSpec] = {}
        for key, (subdirs, exts, marker) in _MODEL_FOLDERS.items():
            paths = [os.path.join(self.models_dir, d) for d in subdirs]
            if key in _OUTPUT_FOLDERS:
                paths.append(os.path.join(self.output_dir, _OUTPUT_FOLDERS[key]))
            self._folders[key] = FolderSpec(paths, exts, marker)
        self._folders["custom_nodes"] = FolderSpec([os.path.join(self.base_dir, "custom_nodes")], None, None)
        if create_dirs:
            self.create_directories()

    # ----- folders ------------------------------------------------------------------------------
    @staticmethod
    def canonical_key(key: str) -> str:
        """Map ComfyUI's legacy keys (`unet`, `clip`) to the current ones."""
        return LEGACY_KEYS.get(key, key)

    def keys(self) -> list[str]:
        return sorted(self._folders)

    def _spec(self, key: str) -> FolderSpec:
        spec = self._folders.get(self.canonical_key(key))
        if spec is None:
            raise KeyError(f"model folder key {key!r} is unknown; known keys: {', '.join(self.keys())}")
        return spec

    def get_folder_paths(self, key: str) -> list[str]:
        """The folders searched for `key`, in lookup order."""
        with self._lock:
            return list(self._spec(key).paths)

    def extensions(self, key: str) -> frozenset[str] | None:
        return self._spec(key).extensions

    def add_model_folder_path(self, key: str, path: str | os.PathLike[str], is_default: bool = False,
                              *, extensions: Iterable[str] | None = None) -> None:
        """Add a folder for `key` (first if `is_default`); an unknown key becomes a new folder kind."""
        key = self.canonical_key(key)
        full = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))
        with self._lock:
            spec = self._folders.get(key)
            if spec is None:
                exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions) \
                    if extensions is not None else None
                self._folders[key] = FolderSpec([full], exts, None)
            elif full in spec.paths:
                if is_default and spec.paths[0] != full:
                    spec.paths.remove(full)
                    spec.paths.insert(0, full)
            elif is_default:
                spec.paths.insert(0, full)
            else:
                spec.paths.append(full)
            self._cache.pop(key, None)

    def create_directories(self) -> None:
        """Create the default model folders and the input/output/temp/user directories."""
        for spec in self._folders.values():
            for p in spec.paths:
                if _inside(p, self.models_dir) or _inside(p, self.base_dir):
                    os.makedirs(p, exist_ok=True)
        for d in (self.input_dir, self.output_dir, self.temp_dir, self.user_dir):
            os.makedirs(d, exist_ok=True)

    # ----- listing ------------------------------------------------------------------------------
    def get_filename_list(self, key: str) -> list[str]:
        """Sorted names under all folders of `key` (recursive, forward slashes), cached by directory mtimes."""
        canonical = self.canonical_key(key)
        with self._lock:
            spec = self._spec(canonical)
            paths = tuple(spec.paths)
            cached = self._cache.get(canonical)
            if cached is not None and cached[0] == paths and all(
                    _mtime(d) == m for d, m in cached[1].items()):
                return list(cached[2])
            mtimes: dict[str, int | None] = {}
            names: set[str] = set()
            for folder in paths:
                names.update(_scan(folder, spec, mtimes))
            result = sorted(names)
            self._cache[canonical] = (paths, mtimes, result)
            return list(result)

    def invalidate(self, key: str | None = None) -> None:
        """Forget cached file lists (all keys, or one)."""
        with self._lock:
            if key is None:
                self._cache.clear()
            else:
                self._cache.pop(self.canonical_key(key), None)

    # ----- lookup -------------------------------------------------------------------------------
    def get_full_path(self, key: str, name: str) -> str | None:
        """The absolute path of `name` in the first folder of `key` holding it, or None.

        Raises UnsafePathError for names that leave their folder, whatever the file system holds.
        """
        spec = self._spec(key)
        rel = check_relative_name(name, what=f"{self.canonical_key(key)} name")
        for folder in self.get_folder_paths(key):
            try:
                path = safe_join(folder, rel, what=f"{self.canonical_key(key)} name")
            except UnsafePathError:
                continue  # a symlink inside this folder points out of it: not served from here
            if spec.marker is not None:
                if path.is_dir() and (path / spec.marker).is_file():
                    return str(path)
            elif path.is_file():
                return str(path)
        return None

    def get_full_path_or_raise(self, key: str, name: str) -> str:
        """Like get_full_path, but a missing file is a FileNotFoundError naming the folders searched."""
        path = self.get_full_path(key, name)
        if path is None:
            raise FileNotFoundError(
                f"{self.canonical_key(key)} {name!r} not found in {', '.join(self.get_folder_paths(key))}")
        return path

    def get_directory_by_type(self, kind: str) -> str:
        """The input, output or temp directory (the `type` of /view and LoadImage annotations)."""
        dirs = {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}
        if kind not in dirs:
            raise ValueError(f"directory type {kind!r} is not one of input, output, temp")
        return dirs[kind]

    def annotated_path(self, name: str, default_type: str = "input") -> Path:
        """Resolve ComfyUI's `file.png [output]` style annotated names inside their directory."""
        kind = default_type
        for suffix in ("input", "output", "temp"):
            tag = f" [{suffix}]"
            if name.endswith(tag):
                name, kind = name[: -len(tag)], suffix
                break
        return safe_join(self.get_directory_by_type(kind), name, what=f"{kind} file")

    # ----- extra_model_paths.yaml ---------------------------------------------------------------
    def load_extra_model_paths(self, yaml_path: str | os.PathLike[str]) -> list[tuple[str, str]]:
        """Add the folders of a ComfyUI `extra_model_paths.yaml`; returns the (key, path) pairs added."""
        yaml_path = os.path.abspath(yaml_path)
        try:
            with open(yaml_path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"extra model paths file {yaml_path!r} is not valid YAML: {exc}") from exc
        if config is None:
            return []
        if not isinstance(config, dict):
            raise ValueError(f"extra model paths file {yaml_path!r}: top level must be a mapping of sections, "
                             f"got {type(config).__name__}")
        yaml_dir = os.path.dirname(yaml_path)
        added: list[tuple[str, str]] = []
        for section, conf in config.items():
            if conf is None:
                continue
            if not isinstance(conf, dict):
                raise ValueError(f"extra model paths file {yaml_path!r}: section {section!r} must be a mapping "
                                 f"of folder keys to paths, got {type(conf).__name__}")
            conf = dict(conf)
            base_path = conf.pop("base_path", None)
            if base_path is not None:
                base_path = _expand(str(base_path))
                if not os.path.isabs(base_path):
                    base_path = os.path.join(yaml_dir, base_path)
            is_default = bool(conf.pop("is_default", False))
            for key, value in conf.items():
                if not isinstance(value, str):
                    raise ValueError(f"extra model paths file {yaml_path!r}: section {section!r} key {key!r} "
                                     f"is {value!r}; it must be a path or a block of paths, one per line")
                for line in value.split("\n"):
                    entry = line.strip()
                    if not entry:
                        continue
                    entry = _expand(entry)
                    if not os.path.isabs(entry):
                        entry = os.path.join(base_path if base_path is not None else yaml_dir, entry)
                    full = os.path.normpath(os.path.abspath(entry))
                    log.info("extra model path: %s -> %s", key, full)
                    self.add_model_folder_path(str(key), full, is_default)
                    added.append((self.canonical_key(str(key)), full))
        return added


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _scan(folder: str, spec: FolderSpec, mtimes: dict[str, int | None]) -> list[str]:
    """Entries under `folder`, following symlinks that stay inside it; records every directory's mtime."""
    mtimes[folder] = _mtime(folder)
    if mtimes[folder] is None or not os.path.isdir(folder):
        return []
    root = os.path.realpath(folder)
    found: list[str] = []

    def walk(directory: str, rel: str, ancestors: frozenset[str]) -> None:
        real = os.path.realpath(directory)
        if real in ancestors or not _inside(real, root):
            return  # a link back to an ancestor would loop forever
        ancestors = ancestors | {real}
        mtimes[directory] = _mtime(directory)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if not _inside(os.path.realpath(entry.path), root):
                continue  # symlink pointing out of the folder: never offered
            if entry.is_dir():
                if spec.marker is not None and os.path.isfile(os.path.join(entry.path, spec.marker)):
                    found.append(child_rel)
                else:
                    walk(entry.path, child_rel, ancestors)
            elif entry.is_file() and spec.marker is None:
                if spec.extensions is None or os.path.splitext(entry.name)[1].lower() in spec.extensions:
                    found.append(child_rel)

    walk(folder, "", frozenset())
    return found


_default: FolderPaths | None = None
_default_lock = threading.Lock()


def default_folder_paths() -> FolderPaths:
    """The process-wide instance for ComfyUI-style code that expects module-level folder functions."""
    global _default
    with _default_lock:
        if _default is None:
            _default = FolderPaths(Path(__file__).resolve().parent.parent)
        return _default


def set_default_folder_paths(folders: FolderPaths) -> None:
    """Make `folders` the instance `default_folder_paths()` returns (the server does, at start-up)."""
    global _default
    with _default_lock:
        _default = folders
