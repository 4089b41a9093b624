"""ControlNet and depth nodes: load ControlNets, apply them to conditioning, make control images, drive SD 2 depth models.

ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced and Canny keep
ComfyUI's names, inputs and ranges. DepthEstimator (a transformers depth model from models/depth)
and DepthModelConditioning (the depth input of stable-diffusion-2-depth) are ours.
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import torch

from graph.declare import Combo, Float, In, node
from graph.schema import Output

from .controlnet import ControlNet, apply_controlnet
from .controlnet_images import canny, depth_concat, depth_folder_fingerprint, load_depth_estimator
from .models.wrappers import ModelWrapper
from .runtime import runtime

Conditioning = list[list[Any]]

_loaded: weakref.WeakValueDictionary[tuple[Any, ...], ControlNet] = weakref.WeakValueDictionary()
_load_lock = threading.Lock()


def _files(key: str) -> Any:
    """Combo choices that follow the folder's contents at request time."""
    return lambda: runtime().folders.get_filename_list(key)


def _path(key: str, name: str) -> str:
    return runtime().folders.get_full_path_or_raise(key, name)


def _file_fingerprint(key: str, input_name: str) -> Any:
    """Re-run a loader when its file changes on disk (same name, new content)."""
    def fingerprint(**literals: Any) -> Any:
        path = runtime().folders.get_full_path(key, literals.get(input_name) or "")
        if path is None:
            return None
        if os.path.isdir(path):
            return depth_folder_fingerprint(path)
        st = os.stat(path)
        return [st.st_mtime_ns, st.st_size]
    return fingerprint


def load_controlnet(path: str, *, name: str = "", model: ModelWrapper | None = None) -> ControlNet:
    """A CONTROL_NET for a file, loading it only if no wrapper of the same file (and base model) is alive."""
    from .models.controlnet_format import load_controlnet_file  # noqa: PLC0415

    st = os.stat(path)
    base_key = (model.slot.name, id(model.slot), model.patch_id) if model is not None else None
    key = (os.path.realpath(path), st.st_mtime_ns, st.st_size, base_key)
    with _load_lock:
        found = _loaded.get(key)
        if found is not None:
            return found.copy()
        def base_unet() -> dict[str, torch.Tensor]:
            """The model's UNet weights in the original layout (read only for a difference file)."""
            from .models.ldm_export import unet_to_ldm  # noqa: PLC0415

            assert model is not None
            with model.use() as unet:
                return {k: v.detach().to("cpu", copy=True) for k, v in unet_to_ldm(unet.state_dict()).items()}

        loaded = load_controlnet_file(path, base_unet=base_unet if model is not None else None)
        controlnet = ControlNet.from_loaded(loaded, name or os.path.basename(path))
        _loaded[key] = controlnet
        return controlnet.copy()


@node(category="loaders", outputs="CONTROL_NET", display_name="Load ControlNet Model",
      fingerprint=_file_fingerprint("controlnet", "control_net_name"))
def ControlNetLoader(control_net_name: str = Combo(_files("controlnet"), tooltip="The ControlNet file to load.")
                     ) -> ControlNet:
    """Load a ControlNet (SD1.x, SD2.x, SDXL; original or diffusers layout; from models/controlnet)."""
    return load_controlnet(_path("controlnet", control_net_name), name=control_net_name)


@node(category="loaders", outputs="CONTROL_NET", display_name="Load ControlNet Model (diff)",
      fingerprint=_file_fingerprint("controlnet", "control_net_name"))
def DiffControlNetLoader(model: ModelWrapper = In("MODEL", tooltip="The model the difference ControlNet was made from."),
                         control_net_name: str = Combo(_files("controlnet"))) -> ControlNet:
    """Load a ControlNet stored as differences to a model's weights (plain ControlNets load as they are)."""
    return load_controlnet(_path("controlnet", control_net_name), name=control_net_name, model=model)


STRENGTH = dict(min=0.0, max=10.0, step=0.01)


@node(category="conditioning/controlnet", outputs="CONDITIONING", display_name="Apply ControlNet (OLD)",
      deprecated=True)
def ControlNetApply(conditioning: Conditioning = In("CONDITIONING"), control_net: ControlNet = In("CONTROL_NET"),
                    image: torch.Tensor = In("IMAGE"), strength: float = Float(1.0, **STRENGTH)) -> Conditioning:
    """Apply a ControlNet to one conditioning for every step (the negative gets it too when it has none)."""
    if strength == 0:
        return conditioning
    return apply_controlnet(conditioning, control_net, image, strength, to_uncond=True)


@node(category="conditioning/controlnet", display_name="Apply ControlNet",
      outputs=(Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative")))
def ControlNetApplyAdvanced(positive: Conditioning = In("CONDITIONING"), negative: Conditioning = In("CONDITIONING"),
                            control_net: ControlNet = In("CONTROL_NET"), image: torch.Tensor = In("IMAGE"),
                            strength: float = Float(1.0, **STRENGTH),
                            start_percent: float = Float(0.0, min=0.0, max=1.0, step=0.001),
                            end_percent: float = Float(1.0, min=0.0, max=1.0, step=0.001),
                            vae: Any = In("VAE", optional=True)) -> tuple[Conditioning, Conditioning]:
    """Apply a ControlNet to positive and negative between two fractions of the sampling; stacks on earlier ones."""
    if strength == 0:
        return positive, negative
    if start_percent > end_percent:
        raise ValueError(f"input 'start_percent' is {start_percent}, must be <= end_percent ({end_percent})")
    shared: dict[int, ControlNet] = {}
    options = dict(start_percent=start_percent, end_percent=end_percent, vae=vae, shared=shared, to_uncond=False)
    return (apply_controlnet(positive, control_net, image, strength, **options),
            apply_controlnet(negative, control_net, image, strength, **options))


@node(category="image/preprocessors", outputs="IMAGE")
def Canny(image: torch.Tensor = In("IMAGE"),
          low_threshold: float = Float(0.4, min=0.01, max=0.99, step=0.01,
                                       tooltip="Weaker edges than this are dropped."),
          high_threshold: float = Float(0.8, min=0.01, max=0.99, step=0.01,
                                        tooltip="Edges at least this strong start an edge line.")) -> torch.Tensor:
    """Canny edge map of an image (white edges on black), for edge ControlNets."""
    return canny(image, low_threshold, high_threshold)


@node(category="image/preprocessors", outputs="IMAGE", display_name="Depth Estimator",
      fingerprint=_file_fingerprint("depth", "model_name"))
def DepthEstimator(image: torch.Tensor = In("IMAGE"),
                   model_name: str = Combo(_files("depth"), tooltip="A transformers depth model folder "
                                                                     "(DPT, Depth Anything) in models/depth.")
                   ) -> torch.Tensor:
    """Estimate a depth map (near is bright, 0..1 per image) with a transformers depth model."""
    return load_depth_estimator(_path("depth", model_name)).depth_image(image)


@node(category="conditioning/depth", display_name="Depth Model Conditioning (SD 2 depth)",
      outputs=(Output("CONDITIONING", name="positive"), Output("CONDITIONING", name="negative")))
def DepthModelConditioning(positive: Conditioning = In("CONDITIONING"), negative: Conditioning = In("CONDITIONING"),
                           depth_map: torch.Tensor = In("IMAGE", tooltip="A depth image of the picture's size, "
                                                                         "e.g. from Depth Estimator.")
                           ) -> tuple[Conditioning, Conditioning]:
    """Give a stable-diffusion-2-depth model its depth input (extra UNet channel), as diffusers' depth2img does."""
    concat = depth_concat(depth_map)
    return ([[c, {**o, "concat": concat}] for c, o in positive], [[c, {**o, "concat": concat}] for c, o in negative])
