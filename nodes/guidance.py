"""Guidance: turn a MODEL, positive and negative CONDITIONING and a CFG scale into `denoise(x, sigma) -> x0`.

This is where conditioning becomes UNet calls: timestep ranges, areas and masks decide which
conditioning entries apply where and when; compatible entries are batched into one UNet call
(cond and uncond together); ControlNet residuals, inpaint/depth concat channels and SDXL's size
conditioning are added; predictions are combined with classifier-free guidance, and the
unconditional pass is skipped when cfg is 1.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .controlnet import apply_control_to_uncond
from .models.wrappers import HOOK_CFG_FUNCTION, HOOK_POST_CFG, ModelWrapper
from .sampling import DiscreteModelSampling

Conditioning = list[list[Any]]
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

AREA_FEATHER = 8  # latent pixels over which an area's inner edges fade in
# model_options key: False runs cond and uncond in separate UNet calls (less peak memory, slower: bench/results.md).
BATCH_COND_UNCOND = "batch_cond_uncond"


class ControlHook(Protocol):
    """What a ControlNet (or similar) puts under `control` in a conditioning entry."""

    def residuals(self, *, x: torch.Tensor, timestep: torch.Tensor, sigma: torch.Tensor,
                  encoder_hidden_states: torch.Tensor, added_cond_kwargs: dict[str, torch.Tensor] | None,
                  percent_sigma: Callable[[float], float]) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        ...


def model_sampling(model: ModelWrapper) -> DiscreteModelSampling:
    """The sigma table of a MODEL (cached on the wrapper's options)."""
    cached = model.model_options.get("_model_sampling")
    if isinstance(cached, DiscreteModelSampling):
        return cached
    config = dict(model.scheduler_config)
    config.setdefault("prediction_type", model.prediction_type)
    ms = DiscreteModelSampling.from_config(config)
    model.model_options["_model_sampling"] = ms
    return ms


@dataclass
class _Piece:
    """One conditioning entry prepared for one denoise call."""

    cond: torch.Tensor
    extras: dict[str, Any]
    area: tuple[int, int, int, int] | None  # h, w, y, x in latent units
    mult: torch.Tensor  # [B or 1, 1, h, w] weight of this prediction where it applies
    uncond: bool

    def group_key(self) -> tuple[Any, ...]:
        control = self.extras.get("control")
        return (self.area, self.cond.shape[-1], id(control) if control is not None else None,
                self.extras.get("pooled_output") is not None)


def _sdxl_time_ids(extras: dict[str, Any], height: int, width: int, family: str, uncond: bool) -> list[float]:
    if family == "sdxl_refiner":
        score = extras.get("aesthetic_score", 2.5 if uncond else 6.0)
        return [float(extras.get("height", height)), float(extras.get("width", width)),
                float(extras.get("crop_h", 0)), float(extras.get("crop_w", 0)), float(score)]
    h = float(extras.get("height", 768))
    w = float(extras.get("width", 768))
    return [h, w, float(extras.get("crop_h", 0)), float(extras.get("crop_w", 0)),
            float(extras.get("target_height", h)), float(extras.get("target_width", w))]


@dataclass
class Guider:
    """CFG guidance of a MODEL by positive and negative conditioning."""

    model: ModelWrapper
    positive: Conditioning
    negative: Conditioning | None
    cfg: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def denoiser(self, unet: torch.nn.Module, ms: DiscreteModelSampling, latent_shape: Sequence[int],
                 device: torch.device, dtype: torch.dtype) -> Denoise:
        """The denoise function samplers call, bound to a UNet already placed on `device`."""
        return _Denoiser(self, unet, ms, tuple(latent_shape), device, dtype)


class _Denoiser:
    def __init__(self, guider: Guider, unet: torch.nn.Module, ms: DiscreteModelSampling,
                 latent_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> None:
        self.guider = guider
        self.model = guider.model
        self.unet = unet
        self.ms = ms
        self.device = device
        self.dtype = dtype
        self.latent_shape = latent_shape
        self.in_channels = int(getattr(unet.config, "in_channels", latent_shape[1]))
        self.addition = getattr(unet.config, "addition_embed_type", None)
        # ControlNetApply (OLD) marks its ControlNets to drive a negative that has none, as ComfyUI does.
        self.negative = apply_control_to_uncond(guider.positive, guider.negative)

    # ---- which entries apply ------------------------------------------------------------------------

    def _active(self, conditioning: Conditioning | None, sigma: float, uncond: bool, batch: int,
                height: int, width: int) -> list[_Piece]:
        pieces = []
        for cond, extras in conditioning or []:
            start = extras.get("start_percent", 0.0)
            end = extras.get("end_percent", 1.0)
            if start > 0.0 and sigma > self.ms.percent_to_sigma(start) + 1e-6:
                continue
            if end < 1.0 and sigma < self.ms.percent_to_sigma(end) - 1e-6:
                continue
            area, mult = self._area_and_mult(extras, batch, height, width)
            if mult is None:
                continue
            pieces.append(_Piece(cond, extras, area, mult, uncond))
        return pieces

    def _area_and_mult(self, extras: dict[str, Any], batch: int, height: int,
                       width: int) -> tuple[tuple[int, int, int, int] | None, torch.Tensor | None]:
        strength = float(extras.get("strength", 1.0))
        area = extras.get("area")
        mask = extras.get("mask")
        if mask is not None:
            mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
            if mask.shape[-2:] != (height, width):
                mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
            if mask.shape[0] not in (1, batch):
                mask = mask[:1]
            mask = mask * float(extras.get("mask_strength", 1.0))
            if extras.get("set_area_to_bounds"):
                nonzero = torch.nonzero(mask.amax(dim=(0, 1)) > 0)
                if nonzero.numel() == 0:
                    return None, None
                y0, x0 = nonzero.min(dim=0).values.tolist()
                y1, x1 = nonzero.max(dim=0).values.tolist()
                area = (y1 - y0 + 1, x1 - x0 + 1, y0, x0)
        if area is not None:
            h, w, y, x = (int(v) for v in area[:4])
            y, x = min(y, height - 1), min(x, width - 1)
            h, w = max(1, min(h, height - y)), max(1, min(w, width - x))
            area = (h, w, y, x)
            mult = torch.full((1, 1, h, w), strength)
            if mask is not None:
                mult = mult * mask[:, :, y:y + h, x:x + w]
            # Fade the inner edges so neighbouring areas blend instead of seaming.
            feather = min(AREA_FEATHER, h // 4, w // 4)
            for t in range(feather):
                ramp = (t + 1) / feather
                if y != 0:
                    mult[:, :, t, :] *= ramp
                if y + h != height:
                    mult[:, :, h - 1 - t, :] *= ramp
                if x != 0:
                    mult[:, :, :, t] *= ramp
                if x + w != width:
                    mult[:, :, :, w - 1 - t] *= ramp
            return area, mult
        mult = torch.full((1, 1, 1, 1), strength) if mask is None else mask * strength
        return None, mult

    # ---- UNet calls ---------------------------------------------------------------------------------

    def _concat(self, extras: dict[str, Any], x_part: torch.Tensor, area: tuple[int, int, int, int] | None) -> torch.Tensor | None:
        extra_channels = self.in_channels - x_part.shape[1]
        if extra_channels <= 0:
            return None
        height, width = self.latent_shape[-2:]
        concat = extras.get("concat")
        if concat is None and "concat_latent_image" in extras:
            latent = self.model.process_latent_in(extras["concat_latent_image"].float())
            mask = extras.get("concat_mask")
            if mask is None:  # no mask: the whole image may change
                mask = torch.ones((latent.shape[0], 1, *latent.shape[-2:]))
            mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
            mask = F.interpolate(mask, size=latent.shape[-2:], mode="bilinear", align_corners=False)
            concat = torch.cat([mask.expand(latent.shape[0], -1, -1, -1), latent], dim=1)
        if concat is None:
            concat = torch.zeros((1, extra_channels, height, width))
        concat = concat.to(x_part.device, torch.float32)
        if concat.shape[-2:] != (height, width):
            concat = F.interpolate(concat, size=(height, width), mode="bilinear", align_corners=False)
        if area is not None:
            h, w, y, x = area
            concat = concat[:, :, y:y + h, x:x + w]
        batch = x_part.shape[0]
        if concat.shape[0] != batch:
            concat = concat.repeat(math.ceil(batch / concat.shape[0]), 1, 1, 1)[:batch]
        if concat.shape[1] != extra_channels:
            raise ValueError(f"the model takes {self.in_channels} input channels, the conditioning gives "
                             f"{x_part.shape[1]} + {concat.shape[1]}")
        return concat

    def _added_cond(self, pieces: list[_Piece], batch: int) -> dict[str, torch.Tensor] | None:
        if self.addition != "text_time":
            return None
        height, width = (v * 8 for v in self.latent_shape[-2:])
        embeds, time_ids = [], []
        for piece in pieces:
            pooled = piece.extras.get("pooled_output")
            if pooled is None:
                raise ValueError("SDXL conditioning has no pooled output (encode the prompt with an SDXL CLIP)")
            embeds.append(pooled.reshape(1, -1).float().expand(batch, -1))
            ids = torch.tensor(_sdxl_time_ids(piece.extras, height, width, self.model.family, piece.uncond))
            time_ids.append(ids.unsqueeze(0).expand(batch, -1))
        return {"text_embeds": torch.cat(embeds).to(self.device, self.dtype),
                "time_ids": torch.cat(time_ids).to(self.device, self.dtype)}

    def _run_group(self, pieces: list[_Piece], x: torch.Tensor, sigma: torch.Tensor) -> list[torch.Tensor]:
        """One UNet call for several pieces that share shapes; returns each piece's x0 prediction."""
        area = pieces[0].area
        x_part = x if area is None else x[:, :, area[2]:area[2] + area[0], area[3]:area[3] + area[1]]
        batch = x_part.shape[0]
        tokens = _common_length([p.cond.shape[1] for p in pieces])
        conds = [_repeat_tokens(p.cond.float(), tokens).expand(batch, -1, -1) for p in pieces]
        x_in = torch.cat([x_part] * len(pieces))
        sigma_in = torch.cat([sigma] * len(pieces))
        c_in = self.ms.calculate_input(sigma_in, x_in)
        concats = [self._concat(p.extras, x_part, area) for p in pieces]
        if concats[0] is not None:
            c_in = torch.cat([c_in, torch.cat(concats)], dim=1)
        timestep = self.ms.timestep(sigma_in.cpu())  # the sigma table lives on the CPU
        hidden = torch.cat(conds).to(self.device, self.dtype)
        added = self._added_cond(pieces, batch)
        kwargs: dict[str, Any] = {"encoder_hidden_states": hidden}
        if added is not None:
            kwargs["added_cond_kwargs"] = added
        control = pieces[0].extras.get("control")
        model_input = c_in.to(self.device, self.dtype)
        t = timestep.to(self.device)
        if control is not None:
            down, mid = control.residuals(x=model_input, timestep=t, sigma=sigma_in.to(self.device),
                                          encoder_hidden_states=hidden, added_cond_kwargs=added,
                                          percent_sigma=self.ms.percent_to_sigma, batch=batch)
            if down is not None:
                kwargs["down_block_additional_residuals"] = down
            if mid is not None:
                kwargs["mid_block_additional_residual"] = mid
        out = self.unet(model_input, t, return_dict=False, **kwargs)[0].float()
        denoised = self.ms.calculate_denoised(sigma_in, out, x_in)
        return list(denoised.chunk(len(pieces)))

    def _predict(self, pieces: list[_Piece], x: torch.Tensor, sigma: torch.Tensor) -> dict[bool, torch.Tensor]:
        """Weighted x0 predictions for cond (False) and uncond (True) over the whole latent."""
        sums = {u: torch.zeros_like(x) for u in {p.uncond for p in pieces}}
        weights = {u: torch.full_like(x[:, :1], 1e-37) for u in sums}
        groups: dict[tuple[Any, ...], list[_Piece]] = {}
        # One UNet call for cond and uncond is the default; separate calls halve the peak activations.
        together = bool(self.model.model_options.get(BATCH_COND_UNCOND, True))
        for piece in pieces:
            key = piece.group_key() if together else (*piece.group_key(), piece.uncond)
            groups.setdefault(key, []).append(piece)
        for group in groups.values():
            for piece, pred in zip(group, self._run_group(group, x, sigma)):
                mult = piece.mult.to(x.device)
                if piece.area is None:
                    sums[piece.uncond] += pred * mult
                    weights[piece.uncond] += mult
                else:
                    h, w, y, xx = piece.area
                    sums[piece.uncond][:, :, y:y + h, xx:xx + w] += pred * mult
                    weights[piece.uncond][:, :, y:y + h, xx:xx + w] += mult
        return {u: sums[u] / weights[u] for u in sums}

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = x.float()
        batch, height, width = x.shape[0], x.shape[-2], x.shape[-1]
        s = float(sigma.reshape(-1)[0])
        guider = self.guider
        use_uncond = guider.cfg != 1.0 or bool(self.model.hooks_of(HOOK_CFG_FUNCTION))
        positive = self._active(guider.positive, s, False, batch, height, width)
        negative = self._active(self.negative, s, True, batch, height, width) if use_uncond else []
        if not positive:
            raise ValueError("no positive conditioning applies at this step (check the timestep ranges)")
        preds = self._predict(positive + negative, x, sigma.reshape(-1).expand(batch).float())
        cond = preds[False]
        uncond = preds.get(True, cond)
        cfg_hooks = self.model.hooks_of(HOOK_CFG_FUNCTION)
        if cfg_hooks:
            result = cfg_hooks[-1]({"cond_denoised": cond, "uncond_denoised": uncond, "cond_scale": guider.cfg,
                                    "input": x, "sigma": sigma})
        elif negative:
            result = uncond + (cond - uncond) * guider.cfg
        else:
            result = cond
        for hook in self.model.hooks_of(HOOK_POST_CFG):
            result = hook({"denoised": result, "cond_denoised": cond, "uncond_denoised": uncond,
                           "cond_scale": guider.cfg, "input": x, "sigma": sigma})
        return result


def _common_length(lengths: list[int]) -> int:
    """The token count all prompts of one call are repeated to (repeating keys leaves cross-attention unchanged)."""
    return math.lcm(*lengths)


def _repeat_tokens(cond: torch.Tensor, length: int) -> torch.Tensor:
    return cond if cond.shape[1] == length else cond.repeat(1, length // cond.shape[1], 1)
