"""MODEL, CLIP and VAE: the small objects that flow between nodes around the torch modules.

Every wrapper points at a `ModuleSlot`, which holds one module shared by all clones of that wrapper.
A clone is cheap: it copies a tuple of weight patches and a few settings, never weights. Patches
(LoRA and the like) are merged into the shared weights when a wrapper is *used* and stay merged
until a wrapper with a different patch set uses the same slot; then the saved originals are put
back first. So several LoRA variants share one base model and the base stays exact.

Slots that a `ModelManager` owns can be offloaded or dropped under memory pressure; using a
wrapper asks the owner to bring the module back (reloading it from its file if it was dropped).
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from nodes import device as devices

__all__ = [
    "WeightDelta", "LowRankDelta", "FullDelta", "WeightPatch", "ModuleSlot", "SlotOwner", "ModelHook",
    "ModelWrapper", "ClipWrapper", "VaeWrapper", "EncoderInfo", "WrappedCheckpoint", "wrap_checkpoint", "module_nbytes",
    "LATENT_SCALE", "HOOK_UNET_WRAPPER", "HOOK_CFG_FUNCTION", "HOOK_PRE_CFG", "HOOK_POST_CFG",
]

log = logging.getLogger(__name__)

# Latent scaling of the families' VAEs (used when a MODEL comes without its VAE).
LATENT_SCALE: dict[str, float] = {"sd1": 0.18215, "sd2": 0.18215, "sdxl": 0.13025, "sdxl_refiner": 0.13025}

# Hook kinds the sampler understands; other nodes may add kinds of their own.
HOOK_UNET_WRAPPER = "unet_wrapper"  # fn(apply_unet, args: dict) -> Tensor, wraps every UNet call
HOOK_CFG_FUNCTION = "cfg_function"  # fn(args: dict) -> Tensor, replaces uncond + cfg * (cond - uncond)
HOOK_PRE_CFG = "pre_cfg"            # fn(args: dict) -> list of model outputs, before CFG
HOOK_POST_CFG = "post_cfg"          # fn(args: dict) -> Tensor, after CFG


def module_nbytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in itertools.chain(module.parameters(), module.buffers()))


# ----- weight patches ----------------------------------------------------------------------------
@runtime_checkable
class WeightDelta(Protocol):
    """Something that adds to one weight: `delta(shape, device)` gives the float32 change at strength 1."""

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor: ...

    def fits(self, shape: torch.Size) -> bool: ...


@dataclass(frozen=True, eq=False)
class LowRankDelta:
    """A LoRA pair: delta = scale * up @ down (convolutions flattened), scale = alpha / rank."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float = 1.0

    def fits(self, shape: torch.Size) -> bool:
        rank_ok = math.prod(self.up.shape[1:]) == self.down.shape[0]
        return rank_ok and self.up.shape[0] == shape[0] and \
            self.up.shape[0] * math.prod(self.down.shape[1:]) == math.prod(shape)

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        up = self.up.to(device=device, dtype=torch.float32).flatten(1)
        down = self.down.to(device=device, dtype=torch.float32).flatten(1)
        return (up @ down).mul_(self.scale).reshape(shape)


@dataclass(frozen=True, eq=False)
class FullDelta:
    """A whole-weight difference (model merges, `.diff` keys)."""

    diff: torch.Tensor

    def fits(self, shape: torch.Size) -> bool:
        return tuple(self.diff.shape) == tuple(shape)

    def delta(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        return self.diff.to(device=device, dtype=torch.float32).reshape(shape)


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """One change to one parameter: weight = weight * strength_model + strength * delta."""

    key: str
    delta: WeightDelta
    strength: float = 1.0
    strength_model: float = 1.0


_patch_ids = itertools.count(1)  # 0 is "no patches"


# ----- the shared module -------------------------------------------------------------------------
class SlotOwner(Protocol):
    """Who keeps a slot's module resident (the ModelManager)."""

    def pin(self, slot: ModuleSlot) -> None:
        """Make `slot.module` present on the compute device and keep it there until unpin."""

    def unpin(self, slot: ModuleSlot) -> None: ...


class ModuleSlot:
    """One module shared by every wrapper cloned from the same load, with its patch state."""

    def __init__(self, module: nn.Module | None, *, role: str, name: str = "", owner: SlotOwner | None = None,
                 param_shapes: Mapping[str, torch.Size] | None = None) -> None:
        if role not in ("unet", "clip", "vae"):
            raise ValueError(f"ModuleSlot role {role!r} must be one of unet, clip, vae")
        self.role = role
        self.name = name or role
        self.owner = owner
        self._module: nn.Module | None = None
        self.param_shapes: dict[str, torch.Size] = dict(param_shapes or {})
        self.nbytes = 0
        self._cond = threading.Condition(threading.RLock())
        self._backups: dict[str, torch.Tensor] = {}
        self._applied_id = 0
        self._active = 0
        self._active_id = 0
        self._holders: dict[int, int] = {}
        if module is not None:
            self.attach(module)

    def __repr__(self) -> str:
        state = "released" if self._module is None else f"{self.nbytes / 2**20:.1f} MiB"
        return f"ModuleSlot({self.name!r}, {self.role}, {state})"

    @property
    def module(self) -> nn.Module | None:
        """The module, or None when its owner dropped it (using a wrapper brings it back)."""
        return self._module

    @property
    def applied_patch_id(self) -> int:
        return self._applied_id

    def target_dtype(self) -> torch.dtype:
        return devices.vae_dtype() if self.role == "vae" else devices.compute_dtype()

    def attach(self, module: nn.Module) -> None:
        """Hold `module` (first load, or a reload after the owner dropped it)."""
        with self._cond:
            module.eval().requires_grad_(False)
            self._module = module
            self._backups.clear()
            self._applied_id = 0
            self.param_shapes = {k: p.shape for k, p in module.named_parameters()}
            self.nbytes = module_nbytes(module)

    def release(self) -> None:
        """Drop the module and its saved originals; only owners call this, never on a pinned slot.

        The tensors are emptied in place, so their memory returns at once even if some reference
        cycle keeps the module object alive (a full garbage collection costs about a second).
        """
        with self._cond:
            if self._active:
                raise RuntimeError(f"{self.name}: cannot release a module that is in use")
            if self._module is not None:
                with torch.no_grad():
                    for t in itertools.chain(self._module.parameters(), self._module.buffers()):
                        t.data = torch.empty(0, dtype=t.dtype, device=t.device)
            self._module = None
            self._backups.clear()
            self._applied_id = 0

    def move(self, device: torch.device, dtype: torch.dtype | None = None) -> None:
        """Move the module (patched weights move along; saved originals stay on the offload device)."""
        with self._cond:
            if self._module is not None:
                self._module.to(device=device, dtype=dtype)
                self.nbytes = module_nbytes(self._module)

    def location(self) -> torch.device | None:
        if self._module is None:
            return None
        first = next(itertools.chain(self._module.parameters(), self._module.buffers()), None)
        return first.device if first is not None else None

    def place_for_compute(self) -> None:
        """Put the module on the compute device in its role's dtype (no-op when it is there)."""
        module = self._module
        if module is None:
            raise RuntimeError(f"{self.name}: module was released and this slot has no owner to reload it")
        want_device, want_dtype = devices.compute_device(), self.target_dtype()
        first = next(module.parameters(), None)
        if first is not None and (first.device != want_device or
                                  (first.is_floating_point() and first.dtype != want_dtype)):
            self.move(want_device, want_dtype)

    @contextmanager
    def use(self, patches: Sequence[WeightPatch], patch_id: int) -> Iterator[nn.Module]:
        """The module with `patches` merged, resident on the compute device for the duration."""
        owner = self.owner
        if owner is not None:
            owner.pin(self)
        try:
            me = threading.get_ident()
            with self._cond:
                if owner is None:
                    self.place_for_compute()
                while self._active and self._active_id != patch_id:
                    if self._holders.get(me):
                        raise RuntimeError(
                            f"{self.name}: already in use by this thread with another patch set; two patch "
                            f"variants of one module cannot be used inside each other")
                    self._cond.wait()
                module = self._module
                if module is None:
                    raise RuntimeError(f"{self.name}: module is not loaded")
                if self._applied_id != patch_id:
                    self._merge(module, patches, patch_id)
                self._active += 1
                self._active_id = patch_id
                self._holders[me] = self._holders.get(me, 0) + 1
            try:
                yield module
            finally:
                with self._cond:
                    self._active -= 1
                    self._holders[me] -= 1
                    if not self._holders[me]:
                        del self._holders[me]
                    self._cond.notify_all()
        finally:
            if owner is not None:
                owner.unpin(self)

    def restore(self) -> None:
        """Put the original weights back (no-op when nothing is merged)."""
        with self._cond:
            if self._active:
                raise RuntimeError(f"{self.name}: cannot restore weights while the module is in use")
            if self._module is not None:
                self._restore(self._module)

    @torch.no_grad()
    def _restore(self, module: nn.Module) -> None:
        for key, saved in self._backups.items():
            module.get_parameter(key).data.copy_(saved)
        self._backups.clear()
        self._applied_id = 0

    @torch.no_grad()
    def _merge(self, module: nn.Module, patches: Sequence[WeightPatch], patch_id: int) -> None:
        self._restore(module)
        by_key: dict[str, list[WeightPatch]] = {}
        for p in patches:
            by_key.setdefault(p.key, []).append(p)
        offload = devices.offload_device()
        for key, plist in by_key.items():
            param = module.get_parameter(key)
            self._backups[key] = param.detach().to(offload, copy=True)
            # float32 accumulation from the exact original, so repeated merges never drift
            weight = param.detach().float()
            for p in plist:
                if p.strength_model != 1.0:
                    weight = weight * p.strength_model
                if p.strength != 0.0:
                    weight = weight + p.strength * p.delta.delta(param.shape, weight.device)
            param.data.copy_(weight.to(param.dtype))
        self._applied_id = patch_id if patches else 0


# ----- common clone/patch behaviour --------------------------------------------------------------
class _Patchable:
    slot: ModuleSlot
    patches: tuple[WeightPatch, ...]
    patch_id: int

    def _init_patches(self, slot: ModuleSlot) -> None:
        self.slot = slot
        self.patches = ()
        self.patch_id = 0

    def clone(self) -> Any:
        """A new wrapper sharing the weights; its settings and patch list can change independently."""
        new = copy.copy(self)
        new._copy_mutables()
        return new

    def _copy_mutables(self) -> None:
        pass

    def is_clone(self, other: object) -> bool:
        """True when both wrappers share the same underlying module."""
        return isinstance(other, _Patchable) and other.slot is self.slot

    def patch_keys(self) -> set[str]:
        """Parameter names patches may target."""
        return set(self.slot.param_shapes)

    def add_patches(self, patches: Mapping[str, WeightDelta], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[str]:
        """Add patches to *this* wrapper (clone first); returns the keys accepted, unknown keys are skipped."""
        accepted: list[WeightPatch] = []
        for key, delta in patches.items():
            shape = self.slot.param_shapes.get(key)
            if shape is None:
                continue
            if not delta.fits(shape):
                raise ValueError(f"patch for {key!r} does not fit the weight of shape {tuple(shape)}")
            accepted.append(WeightPatch(key, delta, float(strength_patch), float(strength_model)))
        if accepted:
            self.patches = self.patches + tuple(accepted)
            self.patch_id = next(_patch_ids)
        return [p.key for p in accepted]

    def with_patches(self, patches: Mapping[str, WeightDelta], strength_patch: float = 1.0,
                     strength_model: float = 1.0) -> Any:
        """A clone with `patches` added."""
        new = self.clone()
        new.add_patches(patches, strength_patch, strength_model)
        return new

    def memory_bytes(self) -> int:
        return self.slot.nbytes

    @contextmanager
    def _use(self) -> Iterator[nn.Module]:
        with self.slot.use(self.patches, self.patch_id) as module:
            yield module


# ----- MODEL ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelHook:
    """A function other nodes attach to a MODEL (ControlNet, CFG tweaks, UNet wrappers)."""

    kind: str
    fn: Callable[..., Any]
    name: str = ""


def _copy_options(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_options(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_options(v) for v in value]
    return value


class ModelWrapper(_Patchable):
    """MODEL: a diffusers UNet plus what sampling needs to know about it."""

    def __init__(self, unet: nn.Module | ModuleSlot, *, family: str, prediction_type: str = "epsilon",
                 scheduler_config: Mapping[str, Any] | None = None, latent_scale: float | None = None,
                 latent_shift: float = 0.0, source: str = "") -> None:
        slot = unet if isinstance(unet, ModuleSlot) else ModuleSlot(unet, role="unet", name=source or "unet")
        self._init_patches(slot)
        self.family = family
        self.prediction_type = prediction_type
        self.scheduler_config: dict[str, Any] = dict(scheduler_config or {})
        module = slot.module
        self.unet_config: dict[str, Any] = dict(getattr(module, "config", {}) or {}) if module is not None else {}
        self.latent_channels = int(self.unet_config.get("out_channels", 4))
        self.latent_scale = float(latent_scale if latent_scale is not None else LATENT_SCALE.get(family, 0.18215))
        self.latent_shift = float(latent_shift)
        self.source = source
        self.model_options: dict[str, Any] = {}
        self.hooks: tuple[ModelHook, ...] = ()

    def __repr__(self) -> str:
        return (f"ModelWrapper({self.source or self.family!r}, family={self.family}, "
                f"prediction={self.prediction_type}, patches={len(self.patches)}, hooks={len(self.hooks)})")

    def _copy_mutables(self) -> None:
        self.model_options = _copy_options(self.model_options)
        self.scheduler_config = dict(self.scheduler_config)

    @contextmanager
    def use(self) -> Iterator[nn.Module]:
        """The UNet with this wrapper's patches merged, on the compute device, for the block's duration."""
        with self._use() as unet:
            yield unet

    def process_latent_in(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the scaled space the UNet works in."""
        return (latents - self.latent_shift) * self.latent_scale

    def process_latent_out(self, latents: torch.Tensor) -> torch.Tensor:
        """The UNet's scaled space -> raw VAE latents."""
        return latents / self.latent_scale + self.latent_shift

    def add_hook(self, kind: str, fn: Callable[..., Any], name: str = "") -> None:
        """Attach a hook to *this* wrapper (clone first)."""
        self.hooks = self.hooks + (ModelHook(kind, fn, name),)

    def with_hook(self, kind: str, fn: Callable[..., Any], name: str = "") -> ModelWrapper:
        """A clone with one more hook."""
        new = self.clone()
        new.add_hook(kind, fn, name)
        return new

    def hooks_of(self, kind: str) -> list[Callable[..., Any]]:
        """The functions of one hook kind, in the order they were attached."""
        return [h.fn for h in self.hooks if h.kind == kind]


# ----- CLIP -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderInfo:
    """What the text stages need to know about one text encoder without touching its weights."""

    hidden_size: int
    num_layers: int
    projected: bool
    eos_token_id: int | None
    role: str | None = None           # clip_l, clip_h, clip_g when the loader said so
    default_layer: int | None = None  # hidden state conditioned on by default (-1 last, -2 penultimate)
    final_norm: bool | None = None    # whether that hidden state goes through the final layer norm


def _encoder_info(te: nn.Module, role: str | None = None, defaults: Mapping[str, Any] | None = None) -> EncoderInfo:
    cfg = te.config
    defaults = defaults or {}
    layer = defaults.get("layer")
    norm = defaults.get("final_norm")
    return EncoderInfo(int(cfg.hidden_size), int(cfg.num_hidden_layers), hasattr(te, "text_projection"),
                       getattr(cfg, "eos_token_id", None), role, int(layer) if layer is not None else None,
                       bool(norm) if norm is not None else None)


class ClipWrapper(_Patchable):
    """CLIP: the tokenizers and text encoders of a checkpoint, the clip-skip layer and patches.

    `layer_idx` None is the family's default (SD1: last layer; SD2, SDXL: penultimate); -1 is the
    last layer, -2 the penultimate and so on (CLIPSetLastLayer).
    """

    def __init__(self, text_encoders: Sequence[nn.Module] | ModuleSlot, tokenizers: Sequence[Any], *,
                 family: str, layer_idx: int | None = None, source: str = "",
                 encoders: Sequence[EncoderInfo] | None = None,
                 embedding_lookup: Callable[[str], str | None] | None = None) -> None:
        if isinstance(text_encoders, ModuleSlot):
            slot = text_encoders
        else:
            slot = ModuleSlot(nn.ModuleList(list(text_encoders)), role="clip", name=source or "clip")
        self._init_patches(slot)
        module = slot.module
        if encoders is None:
            if module is None:
                raise ValueError("ClipWrapper needs `encoders` when its slot holds no module")
            encoders = [_encoder_info(te) for te in module]
        self.encoders: tuple[EncoderInfo, ...] = tuple(encoders)
        self.tokenizers: tuple[Any, ...] = tuple(tokenizers)
        if len(self.tokenizers) != len(self.encoders):
            raise ValueError(f"ClipWrapper: {len(self.tokenizers)} tokenizers for {len(self.encoders)} text encoders")
        self.family = family
        self.layer_idx = layer_idx
        self.source = source
        self.embedding_lookup = embedding_lookup
        # role -> [proj, hidden] matrix for encoders loaded without their projection (SD2's OpenCLIP-H):
        # ComfyUI's pooled output is projected
        self.pooled_projections: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f"ClipWrapper({self.source or self.family!r}, family={self.family}, encoders={len(self.encoders)}, "
                f"layer_idx={self.layer_idx}, patches={len(self.patches)})")

    def clip_layer(self, layer_idx: int | None) -> None:
        """Set the output layer of *this* wrapper (clone first), as ComfyUI's CLIP.clip_layer."""
        if layer_idx is not None and layer_idx >= 0:
            raise ValueError(f"CLIP layer_idx {layer_idx} must be negative (-1 = last layer) or None")
        self.layer_idx = layer_idx

    def with_layer_idx(self, layer_idx: int | None) -> ClipWrapper:
        """A clone that stops at `layer_idx` (CLIPSetLastLayer)."""
        new = self.clone()
        new.clip_layer(layer_idx)
        return new

    @contextmanager
    def use(self) -> Iterator[nn.ModuleList]:
        """The text encoders with patches merged, on the compute device."""
        with self._use() as encoders:
            yield encoders  # type: ignore[misc]

    # ComfyUI's CLIP methods, for plugins; diffloom's own nodes call nodes.text directly.
    def tokenize(self, text: str, return_word_ids: bool = False, **_: Any) -> dict[str, list[list[tuple[Any, ...]]]]:
        """ComfyUI's token dict for `text`: {"l": [[(token, weight[, word id]), ...] per chunk], "g": ...}."""
        from nodes.text import tokenize  # noqa: PLC0415 - text builds on wrappers

        return tokenize(self, text).to_comfy(word_ids=return_word_ids)

    def encode_from_tokens(self, tokens: Any, return_pooled: bool = False, return_dict: bool = False) -> Any:
        """ComfyUI's encode_from_tokens: cond, (cond, pooled), or {"cond", "pooled_output"}; takes TOKENS too."""
        from nodes.text import Tokens, encode  # noqa: PLC0415

        if not isinstance(tokens, Tokens):
            tokens = Tokens.from_comfy(tokens, self)
        cond, pooled = encode(self, tokens)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: Any, unprojected_pooled: bool = True,
                                     add_dict: Mapping[str, Any] | None = None, **_: Any) -> list[list[Any]]:
        """ComfyUI's encode_from_tokens_scheduled: a CONDITIONING list."""
        out = self.encode_from_tokens(tokens, return_dict=True)
        return [[out["cond"], {"pooled_output": out["pooled_output"], **(add_dict or {})}]]


# ----- VAE --------------------------------------------------------------------------------------
class VaeWrapper(_Patchable):
    """VAE: an AutoencoderKL; IMAGE [B,H,W,C] 0..1 <-> raw VAE latents, as LATENT holds them in ComfyUI.

    The MODEL scales raw latents into its own space when sampling (`ModelWrapper.process_latent_in`),
    so plugins that work on LATENT samples see what they see in ComfyUI. `process_in`/`process_out`
    convert between raw and scaled latents for code that needs the scaled space (previews).
    """

    def __init__(self, vae: nn.Module | ModuleSlot, *, scaling_factor: float | None = None,
                 shift_factor: float | None = None, source: str = "", batch_size: int = 4) -> None:
        slot = vae if isinstance(vae, ModuleSlot) else ModuleSlot(vae, role="vae", name=source or "vae")
        self._init_patches(slot)
        cfg = dict(getattr(slot.module, "config", {}) or {}) if slot.module is not None else {}
        self.vae_config = cfg
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else cfg.get("scaling_factor", 0.18215))
        self.shift_factor = float(shift_factor if shift_factor is not None else (cfg.get("shift_factor") or 0.0))
        self.latent_channels = int(cfg.get("latent_channels", 4))
        self.downscale_ratio = 2 ** (len(cfg.get("block_out_channels", (0, 0, 0, 0))) - 1)
        self.source = source
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"VaeWrapper({self.source or 'vae'!r}, scale={self.scaling_factor}, ratio={self.downscale_ratio})"

    @contextmanager
    def use(self) -> Iterator[nn.Module]:
        with self._use() as vae:
            yield vae

    def process_in(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> scaled latents."""
        return (raw - self.shift_factor) * self.scaling_factor

    def process_out(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> raw VAE latents."""
        return latents / self.scaling_factor + self.shift_factor

    def crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Drop alpha and crop H and W down to multiples of the downscale ratio, centred as ComfyUI does."""
        if pixels.ndim != 4:
            raise ValueError(f"VAE encode: pixels must be [B,H,W,C], got shape {tuple(pixels.shape)}")
        r = self.downscale_ratio
        h, w = (pixels.shape[1] // r) * r, (pixels.shape[2] // r) * r
        if h == 0 or w == 0:
            raise ValueError(f"VAE encode: image {pixels.shape[2]}x{pixels.shape[1]} is smaller than {r} pixels")
        y0, x0 = (pixels.shape[1] % r) // 2, (pixels.shape[2] % r) // 2
        return pixels[:, y0:y0 + h, x0:x0 + w, :3]

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE [B,H,W,C] in 0..1 -> raw latents [B,c,H/r,W/r] (float32, offload device)."""
        x = self.crop_pixels(pixels).movedim(-1, 1)
        with self.use() as vae:
            out = [self._encode_raw(vae, chunk) for chunk in x.split(self.batch_size)]
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents [B,c,h,w] -> IMAGE [B,h*r,w*r,3] in 0..1 (float32, offload device)."""
        self._check_latents(latents)
        with self.use() as vae:
            out = [self._decode_raw(vae, chunk) for chunk in latents.split(self.batch_size)]
        return torch.cat(out).movedim(1, -1)

    @torch.no_grad()
    def decode_tiled(self, latents: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
        """Decode in overlapping tiles (sizes in pixels) blended together; approximates `decode`."""
        self._check_latents(latents)
        r = self.downscale_ratio
        tile, over = self._tile_args(tile_size, overlap, "decode_tiled")
        raw = latents
        with self.use() as vae:
            out = torch.cat([
                _tiled_map(chunk, lambda t: self._decode_raw(vae, t), tile // r, over // r, r, 3)
                for chunk in raw.split(self.batch_size)])
        return out.movedim(1, -1)

    @torch.no_grad()
    def encode_tiled(self, pixels: torch.Tensor, tile_size: int = 512, overlap: int = 64) -> torch.Tensor:
        """Encode in overlapping tiles (sizes in pixels) blended together; approximates `encode`."""
        tile, over = self._tile_args(tile_size, overlap, "encode_tiled")
        x = self.crop_pixels(pixels).movedim(-1, 1)
        r = self.downscale_ratio
        with self.use() as vae:
            raw = torch.cat([
                _tiled_map(chunk, lambda t: self._encode_raw(vae, t), tile, over, 1 / r, self.latent_channels)
                for chunk in x.split(self.batch_size)])
        return raw

    def _tile_args(self, tile_size: int, overlap: int, what: str) -> tuple[int, int]:
        r = self.downscale_ratio
        tile, over = (int(tile_size) // r) * r, (int(overlap) // r) * r
        if tile < r:
            raise ValueError(f"VAE {what}: tile_size {tile_size} must be at least {r}")
        if not 0 <= over < tile:
            raise ValueError(f"VAE {what}: overlap {overlap} must be >= 0 and smaller than tile_size {tile_size}")
        return tile, over

    def _check_latents(self, latents: torch.Tensor) -> None:
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"VAE decode: latents must be [B,{self.latent_channels},h,w], got {tuple(latents.shape)}")

    @staticmethod
    def _compute_place(vae: nn.Module) -> tuple[torch.device, torch.dtype]:
        p = next(vae.parameters())
        return p.device, p.dtype

    def _encode_raw(self, vae: nn.Module, pixels_bchw: torch.Tensor) -> torch.Tensor:
        dev, dt = self._compute_place(vae)
        x = pixels_bchw.to(device=dev, dtype=dt) * 2.0 - 1.0
        raw = vae.encode(x).latent_dist.mode()  # ComfyUI encodes deterministically (the mean)
        return raw.to(device=devices.offload_device(), dtype=torch.float32)

    def _decode_raw(self, vae: nn.Module, raw: torch.Tensor) -> torch.Tensor:
        dev, dt = self._compute_place(vae)
        img = vae.decode(raw.to(device=dev, dtype=dt)).sample
        return ((img.float() + 1.0) / 2.0).clamp_(0.0, 1.0).to(devices.offload_device())


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)  # the last tile ends at the border so every tile is full-size
    return starts


def _ramp(length: int, feather: int, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blend weights: 1 in the middle, rising over `feather` samples at sides that meet a neighbour."""
    w = torch.ones(length)
    f = min(feather, length // 2)
    if f > 0:
        up = torch.arange(1, f + 1, dtype=torch.float32) / (f + 1)
        if at_start:
            w[:f] = up
        if at_end:
            w[length - f:] = up.flip(0)
    return w


def _tiled_map(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int, overlap: int,
               scale: float, out_channels: int) -> torch.Tensor:
    """Apply `fn` (which scales H and W by `scale`) over overlapping tiles of x [B,C,H,W] and blend."""
    b, _, h, w = x.shape
    oh, ow = round(h * scale), round(w * scale)
    out = torch.zeros(b, out_channels, oh, ow)
    weight = torch.zeros(1, 1, oh, ow)
    stride = max(tile - overlap, 1)
    ys, xs = _tile_starts(h, tile, stride), _tile_starts(w, tile, stride)
    feather = round(overlap * scale)
    for y0 in ys:
        for x0 in xs:
            piece = fn(x[:, :, y0:y0 + tile, x0:x0 + tile]).float()
            ty, tx = round(y0 * scale), round(x0 * scale)
            ph, pw = piece.shape[-2:]
            wy = _ramp(ph, feather, y0 > 0, y0 + tile < h)
            wx = _ramp(pw, feather, x0 > 0, x0 + tile < w)
            mask = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, ty:ty + ph, tx:tx + pw] += piece * mask
            weight[:, :, ty:ty + ph, tx:tx + pw] += mask
    return out / weight


# ----- building wrappers from loaded parts ---------------------------------------------------------
class CheckpointPartsLike(Protocol):
    family: str
    prediction_type: str
    unet: nn.Module | None
    vae: nn.Module | None
    text_encoders: list[nn.Module]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    path: str


@dataclass
class WrappedCheckpoint:
    """The MODEL, CLIP and VAE of one checkpoint (any of them None when not loaded)."""

    model: ModelWrapper | None
    clip: ClipWrapper | None
    vae: VaeWrapper | None
    slots: dict[str, ModuleSlot] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.model, self.clip, self.vae))


def wrap_checkpoint(parts: CheckpointPartsLike, *, owner: SlotOwner | None = None,
                    embedding_lookup: Callable[[str], str | None] | None = None,
                    name: str = "") -> WrappedCheckpoint:
    """MODEL, CLIP and VAE wrappers around the modules of `parts` (slots owned by `owner` if given)."""
    label = name or str(getattr(parts, "path", "") or parts.family)
    slots: dict[str, ModuleSlot] = {}
    vae_cfg = dict(getattr(parts.vae, "config", {}) or {}) if parts.vae is not None else {}
    model = clip = vae = None
    if parts.unet is not None:
        slots["unet"] = ModuleSlot(parts.unet, role="unet", name=f"{label}:unet", owner=owner)
        model = ModelWrapper(slots["unet"], family=parts.family, prediction_type=parts.prediction_type,
                             scheduler_config=parts.scheduler_config, latent_scale=vae_cfg.get("scaling_factor"),
                             latent_shift=vae_cfg.get("shift_factor") or 0.0, source=label)
    if parts.text_encoders:
        slots["clip"] = ModuleSlot(nn.ModuleList(list(parts.text_encoders)), role="clip", name=f"{label}:clip",
                                   owner=owner)
        extra = dict(getattr(parts, "extra", None) or {})
        roles = list(extra.get("text_encoder_roles") or [None] * len(parts.text_encoders))
        defaults = list(extra.get("clip_defaults") or [None] * len(parts.text_encoders))
        if len(roles) != len(parts.text_encoders) or len(defaults) != len(parts.text_encoders):
            roles, defaults = [None] * len(parts.text_encoders), [None] * len(parts.text_encoders)
        infos = [_encoder_info(te, r, d) for te, r, d in zip(parts.text_encoders, roles, defaults)]
        clip = ClipWrapper(slots["clip"], parts.tokenizers, family=parts.family, source=label, encoders=infos,
                           embedding_lookup=embedding_lookup)
        projections = extra.get("text_projections") or {}
        clip.pooled_projections = {str(k): v for k, v in projections.items() if isinstance(v, torch.Tensor)}
    if parts.vae is not None:
        slots["vae"] = ModuleSlot(parts.vae, role="vae", name=f"{label}:vae", owner=owner)
        vae = VaeWrapper(slots["vae"], source=label)
    return WrappedCheckpoint(model, clip, vae, slots)
