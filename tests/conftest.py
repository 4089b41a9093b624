"""Test-wide settings; they must be in place before torch is imported anywhere."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Spinning OpenMP threads make tiny models ~30x slower on 2 shared cores; nothing loads from a hub.
os.environ.setdefault("GOMP_SPINCOUNT", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ---- tiny models, shared by every test folder --------------------------------------------------------


@pytest.fixture(scope="session")
def model_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base directory with tiny SD1, SD2 (v-prediction) and SDXL checkpoints and the models workflows/ needs."""
    from nodes.models.tiny import write_tiny_checkpoint

    base = tmp_path_factory.mktemp("diffloom_base")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for family in ("sd1", "sd2", "sdxl"):
        write_tiny_checkpoint(checkpoints, family, name=f"tiny-{family}")
    # What the files in workflows/ point at, once tiny_version has renamed it: a LoRA, ControlNets, a depth
    # estimator and an SD 2 depth checkpoint.
    from nodes.models.tiny_control import write_tiny_control_models
    from tests.workflows.conftest import write_tiny_lora

    write_tiny_lora(base / "models")
    write_tiny_control_models(base / "models")
    return base


@pytest.fixture
def runtime(model_base: Path, tmp_path: Path) -> Iterator[Any]:
    """The process runtime pointed at the tiny models, with fresh input/output/temp folders."""
    from nodes import runtime as rt
    from nodes.folders import FolderPaths

    folders = FolderPaths(model_base, models_dir=model_base / "models", input_dir=tmp_path / "input",
                          output_dir=tmp_path / "output", temp_dir=tmp_path / "temp", create_dirs=True)
    previous = rt._runtime
    shared_models = previous._models if previous is not None else None  # keep loaded models between tests
    yield rt.configure(folders, models=shared_models)


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Any]:
    """The process-wide folder layout pointed at a fresh, empty base directory for one test."""
    from nodes.folders import FolderPaths, default_folder_paths, set_default_folder_paths

    previous = default_folder_paths()
    fresh = FolderPaths(tmp_path / "base", create_dirs=True)
    set_default_folder_paths(fresh)
    yield fresh
    set_default_folder_paths(previous)


@pytest.fixture(scope="session")
def registry() -> Any:
    import nodes
    from graph.registry import NodeRegistry

    return nodes.register_builtin_nodes(NodeRegistry())


@pytest.fixture
def executor(registry: Any, runtime: Any) -> Any:
    from graph.executor import Executor

    return Executor(registry)


