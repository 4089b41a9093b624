"""The settings the CPU benchmark compares compute the same step, and the opt-in ones are applied as asked."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def work() -> Any:
    from bench.bench_cpu import StepWorkload
    from bench.models import tiny_model

    return StepWorkload(tiny_model("cpu-settings"), "tiny SD1", size=32, calls=1)


def _call(variant: Any) -> torch.Tensor:
    setup, fn = variant if isinstance(variant, tuple) else (None, variant)
    if setup is not None:
        setup()
    return fn()


@pytest.mark.parametrize("title", ["autograd off", "attention", "batched cond/uncond", "threads", "channels-last",
                                   "bf16"])
def test_before_and_after_compute_the_same_step(bench_runtime: Any, work: Any, title: str) -> None:
    from bench.bench_cpu import specs

    spec = specs(work)[title]
    release = spec.prepare() if spec.prepare is not None else None
    try:
        before, after = _call(spec.before[1]), _call(spec.after[1])
    finally:
        if spec.cleanup is not None:
            spec.cleanup()
        if release is not None:
            release()
    scale = float(after.abs().max())
    tolerance = 0.03 * scale if title == "bf16" else 1e-5 * scale  # bf16 keeps 8 bits of mantissa
    assert before.shape == after.shape and torch.allclose(before.float(), after.float(), atol=tolerance, rtol=0.0), \
        (title, (before.float() - after.float()).abs().max())


def test_cfg_one_is_one_unet_call_of_the_positive_only(bench_runtime: Any, work: Any) -> None:
    from bench.bench_cpu import specs

    calls: list[int] = []
    handle = work.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        spec = specs(work)["cfg=1 skips uncond"]
        _call(spec.before[1])
        _call(spec.after[1])
    finally:
        handle.remove()
    assert calls == [2, 1]


@pytest.fixture
def policy_restored() -> Iterator[None]:
    from nodes import device

    previous = device._policy
    yield
    device._policy = previous


def test_channels_last_and_compile_are_applied_only_when_asked(bench_runtime: Any, policy_restored: None) -> None:
    from bench.models import tiny_model
    from nodes import device

    unet = tiny_model("policy").model.slot.module
    conv = unet.conv_in.weight
    device.configure(cpu=True)
    assert device.prepare_unet(unet) is unet and not conv.is_contiguous(memory_format=torch.channels_last)
    params = len(list(unet.parameters()))
    device.configure(cpu=True, channels_last=True, compile=True)
    prepared = device.prepare_unet(unet)
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    # torch.compile wraps lazily (nothing compiles until the first call); the wrapper is made once per module.
    assert prepared is not unet and prepared is device.prepare_unet(unet) and prepared.config is unet.config
    assert len(list(unet.parameters())) == params  # the wrapper is not registered as a submodule
    with pytest.raises(ValueError, match="threads is 0"):
        device.configure(cpu=True, threads=0)
