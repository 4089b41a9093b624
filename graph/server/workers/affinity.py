"""Model affinity: which model files a prompt loads, and which of them a worker holds in memory.

A prompt's models are read from the literal inputs of its loader nodes (`ckpt_name` of the
checkpoint loaders, `unet_name` of the diffusion-model loaders, whatever their class), as keys like
`checkpoints/sd15.safetensors`. A worker reports the same keys for the files its model manager
holds, derived from the manager's real paths and the folders of each key.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

# Loader inputs that name a big model file, and the folder key they are looked up in.
MODEL_INPUTS: dict[str, str] = {"ckpt_name": "checkpoints", "unet_name": "diffusion_models"}


def model_names(prompt: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(node id, folder key, file name) of every model file the prompt's loader nodes name."""
    found: list[tuple[str, str, str]] = []
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name, folder in MODEL_INPUTS.items():
            value = inputs.get(name)
            if isinstance(value, str) and value:
                found.append((str(node_id), folder, value))
    return found


def model_keys(prompt: Mapping[str, Any]) -> frozenset[str]:
    """The prompt's model files as affinity keys (`checkpoints/<name>`)."""
    return frozenset(f"{folder}/{name}" for _, folder, name in model_names(prompt))


def held_model_keys(model_stats: Mapping[str, Any], folders: Any) -> list[str]:
    """Affinity keys of the models a model manager holds (`stats()["models"][*]["path"]`), given its folders."""
    paths = [os.path.realpath(str(m["path"])) for m in model_stats.get("models", ()) if m.get("path")]
    keys: list[str] = []
    for folder in dict.fromkeys(MODEL_INPUTS.values()):
        try:
            roots = [os.path.realpath(root) for root in folders.get_folder_paths(folder)]
        except (AttributeError, KeyError):
            continue
        for path in paths:
            for root in roots:
                if path.startswith(root.rstrip(os.sep) + os.sep):
                    keys.append(f"{folder}/{os.path.relpath(path, root).replace(os.sep, '/')}")
                    break
    return sorted(set(keys))


def holds(held: Iterable[str], wanted: frozenset[str]) -> bool:
    """True when a worker holding `held` already has every model of a prompt that wants `wanted`."""
    return bool(wanted) and wanted <= set(held)
