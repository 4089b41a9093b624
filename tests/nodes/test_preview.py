"""Sampling previews: a fitted latent-to-RGB projection, and TAESD when its decoder is in models/vae_approx."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from nodes import loaders, preview
from nodes.preview import TAESD_FILES, load_taesd_decoder


def write_taesd(folder: Path, family: str = "sd1") -> Path:
    """A random TAESD decoder saved in the original layout (Sequential indices, 0 being the clamp)."""
    from diffusers.models.autoencoders.vae import DecoderTiny

    torch.manual_seed(0)
    decoder = DecoderTiny(in_channels=4, out_channels=3, num_blocks=(3, 3, 3, 1), block_out_channels=(64, 64, 64, 64),
                          upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")
    state = {}
    for key, tensor in decoder.state_dict().items():
        index, _, rest = key.removeprefix("layers.").partition(".")
        state[f"{int(index) + 1}.{rest}"] = tensor.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TAESD_FILES[family]}.safetensors"
    save_file(state, str(path))
    return path


def test_fitted_projection_previews_at_latent_size(runtime: Any) -> None:
    model, _, _ = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
    runtime.preview_method, runtime.preview_max_size = "latent2rgb", 8
    image = preview.preview_image(model, torch.randn(1, 4, 8, 8))
    assert image is not None and image.size == (8, 8)
    runtime.preview_method = "none"
    assert preview.preview_image(model, torch.randn(1, 4, 8, 8)) is None


def test_taesd_decoder_is_used_when_present(runtime: Any, tmp_path: Path) -> None:
    path = write_taesd(Path(runtime.folders.get_folder_paths("vae_approx")[0]))
    try:
        runtime.folders.invalidate()
        model, _, _ = loaders.CheckpointLoaderSimple(ckpt_name="tiny-sd1.safetensors")
        latent = torch.randn(1, 4, 8, 8)
        runtime.preview_method = "auto"
        image = preview.preview_image(model, latent)
        assert image is not None and image.size == (64, 64)  # TAESD decodes to full size
        expected = preview.taesd_image(load_taesd_decoder(str(path)), latent[0])
        assert np.array_equal(np.asarray(image), np.asarray(expected))
        runtime.preview_method, runtime.preview_max_size = "latent2rgb", 8
        assert preview.preview_image(model, latent).size == (8, 8)  # the projection ignores TAESD
    finally:
        path.unlink()
        runtime.folders.invalidate()


def test_a_file_that_is_not_taesd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "taesd_decoder.safetensors"
    save_file({"decoder.conv.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match="is not a TAESD decoder key"):
        load_taesd_decoder(str(path))
