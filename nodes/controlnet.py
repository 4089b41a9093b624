"""CONTROL_NET: a ControlNet model, and once applied to a conditioning, its hint image, strength and step range.

Applying a ControlNet (ControlNetApply, ControlNetApplyAdvanced) copies the wrapper, sets the hint
and links the ControlNet the conditioning already carried as its predecessor; the copy goes under
`control` in the conditioning's extras. The guider (`nodes.guidance`) calls `residuals` for every
batched UNet call; a ControlNet returns its predecessor's residuals plus its own, each ControlNet of
the chain gated by its own start/end percent, so stacked ControlNets add up and a ControlNet whose
range excludes a step leaves that step exactly as without it.

As ComfyUI does, the hint is cropped to the latent's aspect ratio around its centre and scaled
(nearest-exact) to the latent's size times the hint encoder's downscale (8), then broadcast over
the batch; the strength multiplies every residual. The method and attribute names ComfyUI plugins
use on a ControlNet (`copy`, `set_cond_hint`, `set_previous_controlnet`, `previous_controlnet`,
`cond_hint_original`, `strength`, `timestep_percent_range`) work the same way here.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .models.controlnet_format import ControlNetSpec, LoadedControlNet
from .models.wrappers import ModuleSlot
from .tensors import center_crop, resize_bchw

Conditioning = list[list[Any]]
Residuals = tuple[list[torch.Tensor] | None, torch.Tensor | None]

# ComfyUI scales hints with nearest-exact after a centre crop (its ControlNet's default upscale algorithm).
HINT_UPSCALE = "nearest-exact"


class ControlImageError(ValueError):
    """A control image that cannot drive a ControlNet; the message names the node input and the rule."""


def control_image(image: Any, channels: int, *, what: str = "image") -> torch.Tensor:
    """An IMAGE [B,H,W,C] in 0..1 as the [B,channels,H,W] hint a ControlNet takes, or a ControlImageError.

    RGBA images lose their alpha and one-channel images are repeated when the ControlNet wants RGB.
    """
    if not isinstance(image, torch.Tensor):
        raise ControlImageError(f"input {what!r} is a {type(image).__name__}, must be an IMAGE tensor [B,H,W,C]")
    shape = tuple(image.shape)
    if image.ndim == 3:
        raise ControlImageError(f"input {what!r} has shape {shape}, which is a MASK [B,H,W]; a ControlNet needs an "
                                "IMAGE [B,H,W,C] (turn the mask into an image first)")
    if image.ndim != 4:
        raise ControlImageError(f"input {what!r} has shape {shape}, must be an IMAGE [B,H,W,C]")
    batch, height, width, found = shape
    if batch == 0 or height == 0 or width == 0:
        raise ControlImageError(f"input {what!r} has shape {shape}: it holds no pixels")
    if found != channels:
        if channels == 3 and found == 4:
            image = image[..., :3]
        elif channels == 3 and found == 1:
            image = image.expand(-1, -1, -1, 3)
        else:
            raise ControlImageError(f"input {what!r} has {found} channels (shape {shape}); this ControlNet takes "
                                    f"{channels}-channel images")
    if not image.is_floating_point():
        raise ControlImageError(f"input {what!r} has dtype {image.dtype}, must be floating point in 0..1")
    if not bool(torch.isfinite(image).all()):
        raise ControlImageError(f"input {what!r} contains NaN or infinite values")
    return image.movedim(-1, 1).float().contiguous()


def broadcast_hint(hint: torch.Tensor, total: int, per_cond: int | None = None) -> torch.Tensor:
    """The hint rows for a UNet call of `total` rows made of conditionings of `per_cond` rows each.

    A single hint stays one row (it broadcasts); otherwise the hints are cut or repeated to one
    conditioning's rows and that block repeated for every conditioning of the call, as ComfyUI does.
    """
    if hint.shape[0] == 1:
        return hint
    per = per_cond if per_cond and 0 < per_cond <= total and total % per_cond == 0 else total
    rows = hint[:per]
    if rows.shape[0] < per:
        n = rows.shape[0]
        rows = torch.cat([rows] * (per // n) + [rows[:per % n]])
    return rows if per == total else torch.cat([rows] * (total // per))


class ControlNet:
    """CONTROL_NET: a ControlNet module shared by every copy, plus the settings of one application."""

    def __init__(self, slot: ModuleSlot, spec: ControlNetSpec, *, source: str = "", layout: str = "") -> None:
        self.slot = slot
        self.spec = spec
        self.config = dict(spec.config)
        self.family = spec.family
        self.source = source or slot.name
        self.layout = layout
        self.global_average_pooling = bool(self.config.get("global_pool_conditions"))
        self.cond_hint_original: torch.Tensor | None = None
        self.strength = 1.0
        self.timestep_percent_range: tuple[float, float] = (0.0, 1.0)
        self.previous_controlnet: Any = None
        self.vae: Any = None
        self._hint_cache: tuple[tuple[Any, ...], torch.Tensor] | None = None
        self._origin: ControlNet | None = None  # the wrapper copies come from (kept alive for loader caches)

    @classmethod
    def from_loaded(cls, loaded: LoadedControlNet, name: str = "") -> ControlNet:
        slot = ModuleSlot(loaded.module, role="unet", name=name or loaded.path)
        return cls(slot, loaded.spec, source=name or loaded.path, layout=loaded.layout)

    def __repr__(self) -> str:
        hint = None if self.cond_hint_original is None else tuple(self.cond_hint_original.shape)
        return (f"ControlNet({self.source!r}, family={self.family}, hint={hint}, strength={self.strength}, "
                f"range={self.timestep_percent_range}, previous={self.previous_controlnet is not None})")

    @property
    def conditioning_channels(self) -> int:
        return int(self.config.get("conditioning_channels", 3))

    @property
    def in_channels(self) -> int:
        return int(self.config.get("in_channels", 4))

    def cache_nbytes(self) -> int:
        """Bytes of hint images this wrapper and its predecessors hold (the shared module is not the cache's)."""
        total, node, seen = 0, self, set()
        while isinstance(node, ControlNet) and id(node) not in seen:
            seen.add(id(node))
            for tensor in (node.cond_hint_original, node._hint_cache[1] if node._hint_cache else None):
                if tensor is not None:
                    total += tensor.untyped_storage().nbytes()
            node = node.previous_controlnet
        return total

    # ---- ComfyUI's ControlNet interface ------------------------------------------------------------

    def copy(self) -> ControlNet:
        """A new wrapper sharing the module; its hint, strength, range and predecessor are its own."""
        new = copy.copy(self)
        new.config = dict(self.config)
        new._hint_cache = None
        new._origin = self._origin or self
        return new

    def set_cond_hint(self, cond_hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: Sequence[float] = (0.0, 1.0), vae: Any = None,
                      extra_concat: Any = None) -> ControlNet:
        """Set this wrapper's hint [B,C,H,W] in 0..1, strength and step range (in place; copy first)."""
        self.cond_hint_original = cond_hint
        self.strength = float(strength)
        start, end = (float(v) for v in timestep_percent_range)
        self.timestep_percent_range = (start, end)
        self.vae = vae  # SD ControlNets take pixel hints; a VAE only matters to latent-hint ControlNets
        self._hint_cache = None
        return self

    def set_previous_controlnet(self, controlnet: Any) -> ControlNet:
        self.previous_controlnet = controlnet
        return self

    # ---- ours ------------------------------------------------------------------------------------

    def applied(self, image: torch.Tensor, strength: float, start_percent: float = 0.0, end_percent: float = 1.0,
                *, vae: Any = None, previous: Any = None, what: str = "image") -> ControlNet:
        """A copy carrying `image` (an IMAGE [B,H,W,C]) as its hint, chained after `previous`."""
        hint = control_image(image, self.conditioning_channels, what=what)
        new = self.copy().set_cond_hint(hint, strength, (start_percent, end_percent), vae=vae)
        return new.set_previous_controlnet(previous)

    def chain(self) -> list[Any]:
        """This ControlNet and its predecessors, the first applied first."""
        out: list[Any] = []
        node: Any = self
        while node is not None:
            out.append(node)
            node = getattr(node, "previous_controlnet", None)
        return out[::-1]

    def active_at(self, sigma: float, percent_sigma: Callable[[float], float]) -> bool:
        """Whether this ControlNet applies at `sigma` (its start/end percent turned into sigmas, inclusive)."""
        start, end = self.timestep_percent_range
        return percent_sigma(end) <= sigma <= percent_sigma(start)

    def residuals(self, *, x: torch.Tensor, timestep: torch.Tensor, sigma: torch.Tensor,
                  encoder_hidden_states: torch.Tensor, added_cond_kwargs: dict[str, torch.Tensor] | None,
                  percent_sigma: Callable[[float], float], batch: int | None = None, **_: Any) -> Residuals:
        """The residuals of the whole chain for one UNet call (None, None when no ControlNet applies).

        `batch` is the number of latents in the call per conditioning (the hint batch is laid out per
        conditioning); without it, the hint is repeated over the whole call.
        """
        previous = self.previous_controlnet
        prev: Residuals = (None, None)
        if previous is not None:
            prev = previous.residuals(x=x, timestep=timestep, sigma=sigma, encoder_hidden_states=encoder_hidden_states,
                                      added_cond_kwargs=added_cond_kwargs, percent_sigma=percent_sigma, batch=batch)
        if self.strength == 0.0 or not self.active_at(float(sigma.reshape(-1)[0]), percent_sigma):
            return prev
        return merge_residuals(prev, self.control(x, timestep, encoder_hidden_states, added_cond_kwargs, batch))

    def control(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                added_cond_kwargs: dict[str, torch.Tensor] | None, batch: int | None = None) -> Residuals:
        """This ControlNet's own residuals (strength applied) for the UNet input `x` (extra channels ignored)."""
        if self.cond_hint_original is None:
            raise RuntimeError(f"ControlNet {self.source!r}: no hint image set; apply it with ControlNetApplyAdvanced")
        self._check_call(x, context, added_cond_kwargs)
        with self.slot.use((), 0) as net:
            param = next(net.parameters())
            device, dtype = param.device, param.dtype
            sample = x[:, :self.in_channels].to(device, dtype)
            hint = self._hint(x.shape, batch, device, dtype)
            kwargs: dict[str, Any] = {}
            if self.config.get("addition_embed_type") == "text_time":
                kwargs["added_cond_kwargs"] = {k: v.to(device, dtype) for k, v in (added_cond_kwargs or {}).items()}
            down, mid = net(sample, timestep.to(device), encoder_hidden_states=context.to(device, dtype),
                            controlnet_cond=hint, conditioning_scale=self.strength, return_dict=False, **kwargs)
        return [d.to(x.device, x.dtype) for d in down], mid.to(x.device, x.dtype)

    def _check_call(self, x: torch.Tensor, context: torch.Tensor, added: dict[str, torch.Tensor] | None) -> None:
        width = int(self.config.get("cross_attention_dim", context.shape[-1]))
        has_attention = any(t == "CrossAttnDownBlock2D" for t in self.config.get("down_block_types", ()))
        if has_attention and context.shape[-1] != width:
            raise ValueError(f"ControlNet {self.source!r} ({self.family}) takes text embeddings {width} wide, the "
                             f"conditioning's are {context.shape[-1]}: use a ControlNet made for this model's family")
        if x.shape[1] < self.in_channels:
            raise ValueError(f"ControlNet {self.source!r} takes {self.in_channels} latent channels, the model gives "
                             f"{x.shape[1]}")
        if self.config.get("addition_embed_type") == "text_time" and not added:
            raise ValueError(f"ControlNet {self.source!r} is an SDXL ControlNet; the model is not SDXL (it gives no "
                             "pooled text and size embeddings)")
        levels = len(self.config.get("block_out_channels", ()))
        factor = 2 ** max(levels - 1, 0)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"ControlNet {self.source!r}: the latent is {x.shape[-1]}x{x.shape[-2]}, must be a "
                             f"multiple of {factor} on each side")

    def _hint(self, x_shape: torch.Size, batch: int | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The hint at the size and batch of one call, on the ControlNet's device (cached for the next call)."""
        scale = self.spec.hint_downscale
        height, width = int(x_shape[-2]) * scale, int(x_shape[-1]) * scale
        key = (int(x_shape[0]), height, width, batch, device, dtype)
        cached = self._hint_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        assert self.cond_hint_original is not None
        hint = self.cond_hint_original.float()
        if tuple(hint.shape[-2:]) != (height, width):
            hint = resize_bchw(center_crop(hint, width, height), width, height, HINT_UPSCALE)
        hint = broadcast_hint(hint, int(x_shape[0]), batch).to(device, dtype)
        self._hint_cache = (key, hint)
        return hint


def merge_residuals(first: Residuals, second: Residuals) -> Residuals:
    """Element-wise sums of two ControlNets' residuals (either may be absent)."""
    down_a, mid_a = first
    down_b, mid_b = second
    if down_a is None:
        down = down_b
    elif down_b is None:
        down = down_a
    else:
        if len(down_a) != len(down_b):
            raise ValueError(f"stacked ControlNets give {len(down_a)} and {len(down_b)} down-block residuals; they "
                             "must be made for the same model")
        down = [a + b for a, b in zip(down_a, down_b)]
    mid = mid_b if mid_a is None else (mid_a if mid_b is None else mid_a + mid_b)
    return down, mid


# ---- conditioning -------------------------------------------------------------------------------------


def apply_controlnet(conditioning: Conditioning, control_net: ControlNet, image: torch.Tensor, strength: float, *,
                     start_percent: float = 0.0, end_percent: float = 1.0, vae: Any = None,
                     shared: dict[int, ControlNet] | None = None, to_uncond: bool | None = None) -> Conditioning:
    """The conditioning with `control_net` applied to every entry, after the ControlNet each entry carried.

    Entries that carried the same predecessor share one applied copy (pass the same `shared` dict
    for positive and negative, as ControlNetApplyAdvanced does), so they still batch into one UNet call.
    """
    shared = {} if shared is None else shared
    out: Conditioning = []
    for cond, extras in conditioning:
        options = dict(extras)
        previous = options.get("control")
        key = id(previous)
        applied = shared.get(key)
        if applied is None:
            applied = control_net.applied(image, strength, start_percent, end_percent, vae=vae, previous=previous)
            shared[key] = applied
        options["control"] = applied
        if to_uncond is not None:
            options["control_apply_to_uncond"] = to_uncond
        out.append([cond, options])
    return out


def apply_control_to_uncond(positive: Conditioning, negative: Conditioning | None) -> Conditioning | None:
    """ComfyUI's rule for ControlNetApply (OLD): its ControlNets also drive a negative that has none.

    When no full-image negative entry carries a ControlNet, each full-image positive ControlNet marked
    `control_apply_to_uncond` is given to a full-image negative entry without one (cycling through
    them; a negative entry that already took one gets an extra copy of itself).
    """
    if not negative:
        return negative
    wanted = [e[1]["control"] for e in positive
              if "area" not in e[1] and e[1].get("control") is not None and e[1].get("control_apply_to_uncond")]
    free = [i for i, e in enumerate(negative) if "area" not in e[1] and e[1].get("control") is None]
    if not wanted or not free or any("area" not in e[1] and e[1].get("control") is not None for e in negative):
        return negative
    out = [list(e) for e in negative]
    taken: set[int] = set()
    for n, control in enumerate(wanted):
        index = free[n % len(free)]
        cond, extras = negative[index]
        entry = [cond, {**extras, "control": control}]
        if index in taken:
            out.append(entry)
        else:
            out[index] = entry
            taken.add(index)
    return out
