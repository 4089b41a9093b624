"""`comfy.model_management`: devices from nodes.device, interrupts through the node context or the server."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from graph.context import ExecutionInterrupted
from nodes import device
from nodes.compat.comfy import model_management as mm


def test_devices_and_dtypes_come_from_nodes_device() -> None:
    assert mm.get_torch_device() == device.compute_device()
    assert mm.intermediate_device() == device.offload_device() == mm.unet_offload_device()
    assert mm.text_encoder_device() == mm.vae_device() == device.compute_device()
    assert mm.unet_dtype() == device.compute_dtype() and mm.vae_dtype() == device.vae_dtype()
    assert mm.is_device_cpu(torch.device("cpu")) and mm.is_device_cpu("cpu")
    assert not mm.is_device_cuda(torch.device("cpu")) and mm.is_device_mps(torch.device("mps"))
    assert mm.cpu_mode() == (device.compute_device().type == "cpu")
    assert mm.get_torch_device_name().startswith(device.compute_device().type)
    assert mm.OOM_EXCEPTION is torch.cuda.OutOfMemoryError


def test_memory_figures() -> None:
    free, torch_free = mm.get_free_memory(torch_free_too=True)
    assert isinstance(mm.get_free_memory(), int) and free > 0 and torch_free >= 0
    assert mm.get_total_memory() >= free
    mm.soft_empty_cache(force=True)


def test_interrupt_inside_a_node(node_run: Any) -> None:
    assert mm.InterruptProcessingException is ExecutionInterrupted
    with node_run() as run:
        assert not mm.processing_interrupted()
        mm.throw_exception_if_processing_interrupted()
        mm.interrupt_current_processing()
        assert run.interrupt.is_set() and mm.processing_interrupted()
        with pytest.raises(mm.InterruptProcessingException):
            mm.throw_exception_if_processing_interrupted()
        mm.interrupt_current_processing(False)
        assert not run.interrupt.is_set()


def test_interrupt_outside_a_node_goes_to_the_server() -> None:
    calls: list[bool] = []
    mm.set_interrupt_handler(calls.append)
    try:
        mm.interrupt_current_processing()
        mm.interrupt_current_processing(False)
    finally:
        mm.set_interrupt_handler(None)
    assert calls == [True, False]
    assert not mm.processing_interrupted()
    mm.interrupt_current_processing()  # no server bound: nothing to stop, no error
