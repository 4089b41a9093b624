"""Read `.ckpt` / `.pt` / `.pth` / `.bin` files without ever running code from them.

A pickle can name any importable function and have the loader call it (`os.system`, `eval`, ...).
We only unpickle with torch's weights-only unpickler, which builds tensors, containers and
primitives and nothing else. Before that, the file's imports are listed statically and refused
unless they are known inert metadata (PyTorch Lightning callbacks, numpy scalars), which are
rebuilt as empty placeholders: their code never runs either.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from nodes.models.detect import CheckpointError

# Metadata objects that old training checkpoints pickle next to the weights. None is needed for
# inference, so each is replaced by an `InertObject` instead of being imported.
INERT_GLOBALS = (
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "lightning_fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "__builtin__.set",
    "builtins.set",
)


class UnsafePickleError(CheckpointError):
    """A pickle that asks to import or call something other than tensors and plain data."""


class InertObject:
    """Stands in for an allowed metadata object: accepts any arguments and state, does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert placeholder {type(self).__name__}>"


def _placeholders() -> list[tuple[type, str]]:
    """One InertObject subclass per allowed name (torch maps a pickled name to the object we pair it with)."""
    return [(type(name.rpartition(".")[2], (InertObject,), {}), name) for name in INERT_GLOBALS]


def imported_names(path: str | Path) -> list[str] | None:
    """Globals a torch zip checkpoint would import beyond torch's weights-only allowlist (None: not a zip)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception as err:  # noqa: BLE001 - any failure to parse is a broken file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err


def load_torch_file(path: str | Path) -> Any:
    """Unpickle a torch-saved file onto the CPU with the weights-only unpickler; never runs code from it."""
    path = Path(path)
    names = imported_names(path)
    if names is not None:
        forbidden = [n for n in names if n not in INERT_GLOBALS]
        if forbidden:
            raise UnsafePickleError(f"{path}: refusing to unpickle: the file asks to import {forbidden}, which "
                                    "could run code; only tensors and plain data are loaded (convert the file to "
                                    ".safetensors with a tool you trust)")
    try:
        with torch.serialization.safe_globals(_placeholders()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=names is not None)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafePickleError(f"{path}: refusing to unpickle: {reason}; only tensors and plain data are "
                                "loaded (convert the file to .safetensors with a tool you trust)") from err
    except Exception as err:  # noqa: BLE001 - torch's loader fails on damaged files with asserts, TypeErrors...
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {err})") from err
