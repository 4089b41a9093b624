"""Textual-inversion embeddings (`embedding:name` in a prompt), loaded safely and cached.

Layouts: A1111 `.pt` (`string_to_param` -> `*`), A1111 `.safetensors` (`emb_params`), SDXL files
with `clip_l` / `clip_g` tensors, diffusers `learned_embeds.bin` (`{token: vector}`), a bare tensor.
Pickled files go through torch's weights-only unpickler.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch

from nodes import device as devices
from nodes.folders import FolderPaths, UnsafePathError

__all__ = ["EMBEDDING_PREFIX", "load_embedding_file", "embedding_vectors", "find_embedding", "folder_lookup"]

log = logging.getLogger(__name__)

EMBEDDING_PREFIX = "embedding:"
_EXTENSIONS = ("", ".safetensors", ".pt", ".bin")
_cache: OrderedDict[tuple[str, int, int], Any] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 64


def folder_lookup(folders: FolderPaths) -> Callable[[str], str | None]:
    """An embedding lookup over the `embeddings` folders of `folders` (for ClipWrapper.embedding_lookup)."""

    def lookup(name: str) -> str | None:
        return folders.get_full_path("embeddings", name)

    return lookup


def load_embedding_file(path: str) -> Any:
    """The raw content of an embedding file (cached by path, mtime and size)."""
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file  # noqa: PLC0415

        data: Any = load_file(path, device=str(devices.offload_device()))
    else:
        from nodes.models.safe_pickle import load_torch_file  # noqa: PLC0415

        data = load_torch_file(path)  # weights-only unpickling; refuses files that would run code
    with _cache_lock:
        _cache[key] = data
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return data


def embedding_vectors(data: Any, encoder: str) -> torch.Tensor | None:
    """The [n, dim] vectors for `encoder` ("clip_l", "clip_g", ...) in a loaded embedding file."""
    tensor: Any = None
    if isinstance(data, torch.Tensor):
        tensor = data
    elif isinstance(data, Mapping):
        if "string_to_param" in data and isinstance(data["string_to_param"], Mapping):
            tensor = next(iter(data["string_to_param"].values()), None)
        elif encoder in data:
            tensor = data[encoder]
        elif "emb_params" in data:
            tensor = data["emb_params"]
        elif any(k in data for k in ("clip_l", "clip_g", "clip_h")):
            return None  # made for other encoders only
        else:
            tensor = next((v for v in data.values() if isinstance(v, torch.Tensor)), None)
    if not isinstance(tensor, torch.Tensor):
        return None
    tensor = tensor.detach().float()
    return tensor.unsqueeze(0) if tensor.ndim == 1 else tensor.reshape(-1, tensor.shape[-1])


def find_embedding(lookup: Callable[[str], str | None], name: str) -> tuple[str | None, str]:
    """(path, leftover): the file for `name` (extensions tried), trailing commas split off if needed."""
    for candidate in (name, name.rstrip(",")):
        if not candidate:
            continue
        for ext in _EXTENSIONS:
            try:
                path = lookup(candidate + ext)
            except UnsafePathError as exc:
                log.warning("embedding name %r refused: %s", name, exc)
                return None, ""
            if path is not None:
                return path, name[len(candidate):]
    return None, name[len(name.rstrip(",")):]
