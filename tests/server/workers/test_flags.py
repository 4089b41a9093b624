"""The scale-out flags: --devices, --ray-address (or DIFFLOOM_RAY_ADDRESS) and the Ray actor sizes,
and the environment that pins a worker process to its device."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from graph.server.options import parse_server_args
from graph.server.workers import device_environment, wants_pool


def test_devices_give_one_worker_per_entry(tmp_path: Path) -> None:
    options = parse_server_args(["--devices", "cuda:0, cuda:1"], default_base=tmp_path)
    assert options.devices == ["cuda:0", "cuda:1"] and options.ray_address is None and wants_pool(options)
    assert parse_server_args(["--devices", "cpu,cpu"], default_base=tmp_path).devices == ["cpu", "cpu"]
    assert not wants_pool(parse_server_args([], default_base=tmp_path))


def test_ray_flags_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = parse_server_args(["--ray-address", "ray://head:10001", "--ray-workers", "3",
                                 "--ray-gpus-per-worker", "0.5", "--ray-cpus-per-worker", "4"], default_base=tmp_path)
    assert (options.ray_address, options.ray_workers, options.ray_gpus_per_worker, options.ray_cpus_per_worker) == (
        "ray://head:10001", 3, 0.5, 4.0)
    assert wants_pool(options) and options.devices == []
    monkeypatch.setenv("DIFFLOOM_RAY_ADDRESS", "auto")
    assert parse_server_args([], default_base=tmp_path).ray_address == "auto"
    assert parse_server_args(["--devices", "cpu"], default_base=tmp_path).ray_address is None  # the flag wins


@pytest.mark.parametrize("argv, message", [
    (["--devices", "gpu0"], "device 'gpu0' must be cpu, mps, cuda, cuda:N or xpu:N"),
    (["--devices", ","], "--devices needs at least one device"),
    (["--devices", "cpu", "--ray-address", "auto"], "not allowed with argument"),
    (["--cpu", "--devices", "cuda:0,cpu"], "--cpu computes on the CPU only, but --devices lists cuda:0,cpu"),
    (["--ray-address", "auto", "--ray-gpus-per-worker", "-1"], "-1.0 must be >= 0"),
])
def test_bad_scale_out_flags_are_refused_with_the_reason(argv: list[str], message: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_server_args(argv, default_base=tmp_path)
    assert message in capsys.readouterr().err


def test_a_worker_process_sees_only_its_own_gpu() -> None:
    assert device_environment("cuda:1", parent={}) == {"CUDA_VISIBLE_DEVICES": "1", "DIFFLOOM_DEVICE": "cuda:0"}
    # indices count within the GPUs this server was given
    assert device_environment("cuda:1", parent={"CUDA_VISIBLE_DEVICES": "4,6"})["CUDA_VISIBLE_DEVICES"] == "6"
    with pytest.raises(ValueError, match="lists only 2 GPU"):
        device_environment("cuda:2", parent={"CUDA_VISIBLE_DEVICES": "4,6"})
    assert device_environment("mps", parent={}) == {"DIFFLOOM_DEVICE": "mps"}


def test_cpu_workers_split_the_cores() -> None:
    cores = os.cpu_count() or 1
    assert device_environment("cpu", cpu_workers=2, parent={})["DIFFLOOM_THREADS"] == str(max(1, cores // 2))
    assert device_environment("cpu", cpu_workers=cores * 2, parent={})["DIFFLOOM_THREADS"] == "1"
    assert "DIFFLOOM_THREADS" not in device_environment("cpu", cpu_workers=2, parent={"DIFFLOOM_THREADS": "3"})
