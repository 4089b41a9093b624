"""The device policy's thread choice: small UNets sample on one CPU thread unless a count was set."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from nodes import device, loaders, sampler_nodes as S, text_nodes as T
from nodes.latent import EmptyLatentImage


@pytest.fixture
def policy() -> Iterator[None]:
    """The process policy and thread count as they were, whatever a test configures."""
    saved, threads = device._policy, torch.get_num_threads()
    yield
    device._policy = saved
    torch.set_num_threads(threads)


def test_a_small_unet_samples_on_one_thread_and_the_count_comes_back(policy: None) -> None:
    device.configure(cpu=True)
    torch.set_num_threads(2)
    with device.sampling_threads(10 * 2**20):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with device.sampling_threads(device.SMALL_UNET_BYTES):  # a full-size UNet keeps every thread
        assert torch.get_num_threads() == 2


def test_a_thread_count_that_was_set_is_kept(policy: None) -> None:
    device.configure(cpu=True, threads=2)
    with device.sampling_threads(10 * 2**20):
        assert torch.get_num_threads() == 2


def test_ksampler_runs_the_tiny_unet_on_one_thread(runtime: Any, policy: None) -> None:
    device.configure(cpu=True)
    torch.set_num_threads(2)
    model, clip, _ = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
    seen: list[int] = []
    with model.use() as unet:
        hook = unet.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        S.KSampler(model=model, seed=1, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
                   positive=T.CLIPTextEncode(text="a red circle", clip=clip),
                   negative=T.CLIPTextEncode(text="", clip=clip),
                   latent_image=EmptyLatentImage(width=64, height=64, batch_size=1), denoise=1.0)
    finally:
        hook.remove()
    assert seen == [1, 1] and torch.get_num_threads() == 2
