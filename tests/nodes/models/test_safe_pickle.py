"""Pickled checkpoints load only as data: code inside them never runs."""
from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from nodes.models.checkpoint import load_checkpoint, read_state_dict
from nodes.models.detect import CheckpointError
from nodes.models.safe_pickle import InertObject, UnsafePickleError, load_torch_file


class RunsShell:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "pwned"
    assert not path.exists()
    return path


def _payload(marker: Path) -> dict:
    return {"state_dict": {"w": torch.ones(2)}, "evil": RunsShell(marker)}


def test_zip_checkpoint_with_os_system_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save(_payload(marker), path)
    with pytest.raises(UnsafePickleError) as err:
        load_torch_file(path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


def test_legacy_torch_format_with_os_system_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil_legacy.pt"
    torch.save(_payload(marker), path, _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafePickleError, match="evil_legacy.pt"):
        load_torch_file(path)
    assert not marker.exists()


def test_raw_pickle_with_os_system_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil_raw.ckpt"
    path.write_bytes(pickle.dumps(_payload(marker), protocol=2))
    with pytest.raises(UnsafePickleError, match="evil_raw.ckpt"):
        load_torch_file(path)
    assert not marker.exists()


def test_load_checkpoint_refuses_it_too(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "model.ckpt"
    torch.save(_payload(marker), path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_checkpoint(path)
    assert not marker.exists()
    # The refusal happens before anything is unpickled, also when only reading the state dict.
    with pytest.raises(UnsafePickleError):
        read_state_dict(path)
    assert not marker.exists()


def test_plain_tensor_checkpoint_loads(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"a": torch.arange(4.0)}, "global_step": 7, "epoch": 1}, path)
    data = load_torch_file(path)
    assert data["global_step"] == 7
    assert torch.equal(data["state_dict"]["a"], torch.arange(4.0))


def test_lightning_metadata_becomes_inert_and_its_code_never_runs(tmp_path: Path, marker: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for pytorch_lightning's ModelCheckpoint, pickled under that module name.
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        def __init__(self) -> None:
            self.best = 0.5

        def __setstate__(self, state: dict) -> None:
            marker.write_text("setstate ran")

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint  # type: ignore[attr-defined]
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "callbacks": {"ModelCheckpoint": ModelCheckpoint()}}, path)

    data = load_torch_file(path)
    callback = data["callbacks"]["ModelCheckpoint"]
    assert isinstance(callback, InertObject) and not isinstance(callback, ModelCheckpoint)
    assert callback.state == {"best": 0.5}
    assert torch.equal(data["state_dict"]["w"], torch.ones(3))
    assert not marker.exists()


def test_corrupt_torch_file_names_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(1000)}, good)
    bad = tmp_path / "cut.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_torch_file(bad)
