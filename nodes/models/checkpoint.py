"""Load Stable Diffusion model files offline: single-file checkpoints, diffusers folders, component files.

Formats: `.safetensors` (memory-mapped; the tensors are assigned to the modules without a copy when
dtype and device already match) and `.ckpt`/`.pt`/`.pth`/`.bin` only through the weights-only
unpickler of `safe_pickle`. Families: SD1.x, SD2.x (epsilon and v-prediction), SDXL base and refiner,
with the inpainting, depth and instruct-pix2pix UNet variants; configs are read from the shapes
(`detect`), so reduced-size models in the same layouts load too. Nothing touches a model hub.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nodes import device as devices
from nodes.models import convert, detect, ldm_export
from nodes.models.detect import CheckpointError, ModelSpec, TextEncoderSpec
from nodes.models.safe_pickle import load_torch_file
from nodes.models.tokenizers import clip_tokenizer, tokenizer_for_role

PARTS = ("unet", "vae", "clip")
# Empty tensors that flag a model's training (read by detect), not weights.
MARKER_KEYS = frozenset({"v_pred", "ztsnr"})
PathLike = str | os.PathLike[str]
ROLES_BY_FAMILY = {"sd1": ["clip_l"], "sd2": ["clip_h"], "sdxl": ["clip_l", "clip_g"], "sdxl_refiner": ["clip_g"]}


@dataclass
class CheckpointParts:
    """The loaded modules of one model file or folder, and what was learnt about it.

    `text_encoders`, `tokenizers` and `extra["text_encoder_roles"]` are parallel lists:
    sd1 [clip_l], sd2 [clip_h], sdxl [clip_l, clip_g], sdxl_refiner [clip_g].

    `extra` keys: variant (base | inpaint | depth | ip2p), text_encoder_roles, clip_defaults (per encoder
    {"layer": hidden-state index to condition on, "final_norm": apply final_layer_norm to it}),
    text_projections ({role: [proj, hidden] tensor} kept aside for encoders loaded without one: SD2),
    layout (ldm | diffusers | diffusers_folder), unused_keys, notes, metadata (safetensors header).
    """

    family: str
    prediction_type: str
    unet: Any
    vae: Any
    text_encoders: list[Any]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    path: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def variant(self) -> str:
        return str(self.extra.get("variant", "base"))

    def __repr__(self) -> str:
        # The default repr prints every module's architecture.
        modules = {"unet": self.unet, "vae": self.vae}
        built = ", ".join(f"{k}={type(v).__name__}" for k, v in modules.items() if v is not None)
        encoders = ", ".join(f"{r}={type(e).__name__}" for r, e in zip(self.text_encoder_roles, self.text_encoders))
        return (f"CheckpointParts(family={self.family!r}, variant={self.variant!r}, "
                f"prediction_type={self.prediction_type!r}, {built}, text_encoders=[{encoders}], path={self.path!r})")

    @property
    def text_encoder_roles(self) -> list[str]:
        return list(self.extra.get("text_encoder_roles", []))


def scheduler_config(prediction_type: str = "epsilon", *, zero_snr: bool = False) -> dict[str, Any]:
    """The training noise schedule of every SD1/SD2/SDXL model, in diffusers' scheduler-config terms."""
    config: dict[str, Any] = {
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
        "prediction_type": prediction_type,
        # The rest are the values of the published SD pipelines' scheduler configs.
        "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False, "skip_prk_steps": True,
        "timestep_spacing": "leading",
    }
    if zero_snr:
        config["rescale_betas_zero_snr"] = True
    return config


# ------------------------------------------------------------------------------------------ reading


def _sniff(path: Path) -> str:
    """'safetensors' or 'torch' from the first bytes of the file."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    raise CheckpointError(f"{path}: neither a safetensors file nor a torch checkpoint "
                          f"(starts with {head[:9]!r}, {path.stat().st_size} bytes)")


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


class TensorFile(Mapping[str, torch.Tensor]):
    """The tensors of one model file: shapes from the header at once, data only when asked for.

    Indexing gives memory-mapped tensors (safetensors) or the unpickled ones (torch files).
    `load()` gives tensors already in their final dtype: a tensor that must change dtype is read
    with a plain file read and cast on its own, so the whole file is never mapped and resident at
    the same time as the converted model.
    """

    def __init__(self, path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str], *,
                 tensors: dict[str, torch.Tensor] | None = None, header: dict[str, Any] | None = None,
                 data_start: int = 0, mmap: bool = True) -> None:
        self.path = path
        self.shapes = shapes
        self.metadata = metadata
        self._tensors = tensors
        self._header = header
        self._data_start = data_start
        self._mmap = mmap

    @classmethod
    def open(cls, path: PathLike, *, mmap: bool = True) -> TensorFile:
        """Open a .safetensors file (header only) or unpickle a torch file safely."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{path}: no such file")
        if path.is_dir():
            raise CheckpointError(f"{path}: is a folder; a diffusers folder loads with load_diffusers_folder")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: the file is empty")
        if _sniff(path) == "safetensors":
            header, data_start = _safetensors_header(path)
            metadata = header.pop("__metadata__", None) or {}
            unknown = {v.get("dtype") for v in header.values()} - set(_ST_DTYPES)
            if unknown:
                raise CheckpointError(f"{path}: tensors of unsupported dtypes {sorted(map(str, unknown))}")
            shapes = {k: tuple(v["shape"]) for k, v in header.items()}
            return cls(path, shapes, dict(metadata), header=header, data_start=data_start, mmap=mmap)
        tensors = _torch_state_dict(path)
        return cls(path, {k: tuple(v.shape) for k, v in tensors.items()}, {}, tensors=tensors)

    @classmethod
    def from_dict(cls, tensors: dict[str, torch.Tensor], path: PathLike,
                  metadata: dict[str, str] | None = None) -> TensorFile:
        return cls(Path(path), {k: tuple(v.shape) for k, v in tensors.items()}, metadata or {}, tensors=tensors)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._mapped()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __contains__(self, key: object) -> bool:
        return key in self.shapes

    def _mapped(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            from safetensors import SafetensorError, safe_open  # noqa: PLC0415

            try:
                with safe_open(str(self.path), framework="pt", device="cpu") as f:
                    self._tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a Mapping
            except (SafetensorError, OSError, RuntimeError, ValueError) as err:
                raise CheckpointError(f"{self.path}: not a readable safetensors file ({err})") from err
        return self._tensors

    def load(self, keys: Iterable[str], dtype: torch.dtype | None = None,
             device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """The tensors of `keys`, floating ones in `dtype` (None: as stored), on `device` (None: CPU)."""
        device = device or torch.device("cpu")
        if self._header is None:
            return {k: _cast(self[k], dtype, device) for k in keys}
        out: dict[str, torch.Tensor] = {}
        with self.path.open("rb") as f:
            for key in keys:
                info = self._header[key]
                stored = _ST_DTYPES[info["dtype"]]
                recast = dtype is not None and stored.is_floating_point and stored != dtype
                if self._mmap and not recast:
                    out[key] = _cast(self[key], None, device)
                    continue
                begin, end = info["data_offsets"]
                buffer = bytearray(end - begin)
                f.seek(self._data_start + begin)
                if f.readinto(buffer) != len(buffer):
                    raise CheckpointError(f"{self.path}: tensor {key!r} is cut short")
                shape = tuple(info["shape"])
                tensor = (torch.frombuffer(buffer, dtype=stored).reshape(shape) if buffer
                          else torch.empty(shape, dtype=stored))
                out[key] = _cast(tensor, dtype, device)
        return out

    def load_all(self) -> dict[str, torch.Tensor]:
        """Every tensor as stored (memory-mapped unless the file was opened with mmap=False)."""
        return self.load(self.shapes)


def _cast(value: torch.Tensor, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    if dtype is not None and value.is_floating_point() and value.dtype != dtype:
        return value.to(device=device, dtype=dtype)
    return value if value.device == device else value.to(device)


def read_state_dict(path: PathLike, *, mmap: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a model file (memory-mapped for safetensors unless `mmap=False`) and its metadata."""
    tensors = TensorFile.open(path, mmap=mmap)
    return tensors.load_all(), tensors.metadata


def _torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    data = load_torch_file(path)
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a state dict")
    tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors (keys: {list(data)[:6]})")
    return tensors


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The parsed header and where the data starts; a truncated file fails here with its name,
    not later as a bus error inside a memory map."""
    size = path.stat().st_size
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise CheckpointError(f"{path}: truncated safetensors file (header of {header_len} bytes, file of {size})")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: corrupt safetensors header ({err})") from err
    if not isinstance(header, dict) or not all(
            isinstance(v, dict) and "data_offsets" in v and "shape" in v and "dtype" in v
            for k, v in header.items() if k != "__metadata__"):
        raise CheckpointError(f"{path}: corrupt safetensors header (entries without dtype/shape/data_offsets)")
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ must map names to strings)")
    for key, entry in header.items():
        if key != "__metadata__":
            _check_header_entry(path, key, entry)
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    needed = 8 + header_len + max(ends, default=0)
    if needed > size:
        raise CheckpointError(f"{path}: truncated safetensors file: its tensors need {needed} bytes, "
                              f"the file has {size}")
    return header, 8 + header_len


def _check_header_entry(path: Path, key: str, entry: dict[str, Any]) -> None:
    """A tensor's dtype, shape and byte range must agree, or the file is refused by name (not a TypeError later)."""
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]

    def natural(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
        raise CheckpointError(f"{path}: tensor {key!r} has the unsupported dtype {str(dtype)[:40]!r} "
                              f"(known: {', '.join(_ST_DTYPES)})")
    if not isinstance(shape, list) or not all(natural(d) for d in shape):
        raise CheckpointError(f"{path}: corrupt safetensors header: tensor {key!r} has the shape {str(shape)[:60]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(natural(o) for o in offsets)
            and offsets[0] <= offsets[1]):
        raise CheckpointError(f"{path}: corrupt safetensors header: tensor {key!r} has the byte range "
                              f"{str(offsets)[:60]}")
    expected = _ST_DTYPES[dtype].itemsize * math.prod(shape)
    if offsets[1] - offsets[0] != expected:
        raise CheckpointError(f"{path}: corrupt safetensors header: tensor {key!r} ({dtype} {shape}) needs "
                              f"{expected} bytes but its byte range {offsets} holds {offsets[1] - offsets[0]}")


def _placement(dtype: torch.dtype | None, device: torch.device | str | None, *,
               vae: bool = False) -> tuple[torch.dtype, torch.device]:
    """The caller's dtype/device, else the device policy's (VAEs get the policy's VAE dtype)."""
    if dtype is None:
        dtype = devices.vae_dtype() if vae else devices.compute_dtype()
    return dtype, torch.device(device) if device is not None else devices.offload_device()


# --------------------------------------------------------------------------------------- layouts


def _is_diffusers_unet(keys: Iterable[str], prefix: str = "") -> bool:
    keys = set(keys)
    return f"{prefix}conv_in.weight" in keys and f"{prefix}down_blocks.0.resnets.0.conv1.weight" in keys


def _is_diffusers_vae(keys: Iterable[str], prefix: str = "") -> bool:
    return f"{prefix}encoder.down_blocks.0.resnets.0.conv1.weight" in set(keys)


def _is_diffusers_checkpoint(keys: Iterable[str]) -> bool:
    keys = set(keys)
    return _is_diffusers_unet(keys, "unet.") or _is_diffusers_vae(keys, "vae.")


def _diffusers_checkpoint_to_ldm(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A whole pipeline saved in one file with diffusers component prefixes -> the original layout."""
    out: dict[str, torch.Tensor] = {}
    unet = convert.subdict(state_dict, "unet.")
    if unet:
        out.update(convert.subdict(ldm_export.unet_to_ldm(unet), "", detect.UNET_PREFIX))
    vae = convert.subdict(state_dict, "vae.")
    if vae:
        out.update(convert.subdict(ldm_export.vae_to_ldm(vae), "", ldm_export.VAE_PREFIX))
    first = convert.subdict(state_dict, "text_encoder.")
    second = convert.subdict(state_dict, "text_encoder_2.")
    if second:
        family = "sdxl" if first else "sdxl_refiner"
        roles = {"clip_l": first, "clip_g": second} if first else {"clip_g": second}
    elif first:
        linear = any(k.endswith("proj_in.weight") and v.ndim == 2 for k, v in unet.items())
        family = "sd2" if linear else "sd1"
        roles = {"clip_h" if linear else "clip_l": first}
    else:
        roles, family = {}, "sd1"
    for role, weights in roles.items():
        prefix = ldm_export.TEXT_ENCODER_PREFIXES[family][role]
        out.update(convert.subdict(ldm_export.text_encoder_to_ldm(role, weights), "", prefix))
    if not out:
        raise CheckpointError(f"{source}: diffusers-layout file without unet./vae./text_encoder. keys")
    return out


def _open_ldm(path: PathLike, *, mmap: bool = True) -> tuple[TensorFile, str]:
    """The file's tensors in the original layout, and the layout they came in."""
    tensors = TensorFile.open(path, mmap=mmap)
    if _is_diffusers_checkpoint(tensors.shapes):
        converted = _diffusers_checkpoint_to_ldm(tensors.load_all(), str(path))
        return TensorFile.from_dict(converted, path, tensors.metadata), "diffusers"
    return tensors, "ldm"


def _under(tensors: TensorFile, prefix: str) -> list[str]:
    return [k for k in tensors if k.startswith(prefix)]


# ------------------------------------------------------------------------------------------ building


def _build_text_encoders(tensors: TensorFile, specs: Iterable[TextEncoderSpec], family: str, dtype: torch.dtype,
                         device: torch.device, source: str, extra: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    specs = tuple(specs)
    encoders, tokenizers, projections = [], [], {}
    for te in specs:
        weights = tensors.load(_under(tensors, te.prefix), dtype, device)
        module, projection, unused = convert.build_text_encoder(weights, te, dtype=dtype, device=device,
                                                                source=source)
        encoders.append(module)
        tokenizers.append(tokenizer_for_role(te.role))
        if projection is not None:
            projections[te.role] = projection
        extra["unused_keys"].extend(f"{te.prefix}<converted>{k}" for k in unused)
    extra["text_encoder_roles"] = [te.role for te in specs]
    extra["clip_defaults"] = [detect.clip_defaults(family, te.role) for te in specs]
    extra["text_projections"] = projections
    return encoders, tokenizers


def _consumed(spec: ModelSpec) -> tuple[str, ...]:
    prefixes = [p for p in (spec.unet_prefix, spec.vae_prefix) if p is not None]
    return (*prefixes, *(te.prefix for te in spec.text_encoders))


def load_checkpoint(path: PathLike, *, parts: Iterable[str] = PARTS, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, prediction_type: str | None = None,
                    mmap: bool = True) -> CheckpointParts:
    """Load a single-file SD1/SD2/SDXL checkpoint (original layout, or diffusers layout with component prefixes).

    `parts` picks what to build ("unet", "vae", "clip"); the rest stays None / empty. `dtype` and
    `device` default to the device policy (compute dtype, VAE dtype, offload device).
    `prediction_type` ("epsilon" | "v_prediction") overrides the guess. With `mmap` (default),
    weights already in their final dtype stay memory-mapped from the file (copy-on-write);
    `mmap=False` reads them into private memory.
    """
    parts = tuple(parts)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"load_checkpoint: parts {sorted(unknown)} are not among {PARTS}")
    source = str(path)
    tensors, layout = _open_ldm(path, mmap=mmap)
    spec = detect.detect_checkpoint(tensors.shapes, source=source, tensor=tensors.__getitem__,
                                    prediction_type=prediction_type)
    if "vae" in parts and spec.vae_config is None:
        raise CheckpointError(f"{source}: has no VAE (no first_stage_model.encoder.conv_in.weight); load it with "
                              "parts=('unet', 'clip') and a separate VAE file")
    if "clip" in parts and not spec.text_encoders:
        raise CheckpointError(f"{source}: has no text encoders (no cond_stage_model.* or conditioner.embedders.*); "
                              "load it with parts=('unet', 'vae') or load_unet_file")
    extra: dict[str, Any] = {"variant": spec.variant, "layout": layout, "notes": list(spec.notes),
                             "metadata": tensors.metadata, "unused_keys": [], "zero_snr": spec.zero_snr,
                             "text_encoder_roles": [te.role for te in spec.text_encoders]}
    unet = vae = None
    encoders: list[Any] = []
    tokenizers: list[Any] = []
    if "unet" in parts:
        assert spec.unet_config is not None and spec.unet_prefix is not None
        dt, dev = _placement(dtype, device)
        weights = tensors.load(_under(tensors, spec.unet_prefix), dt, dev)
        unet, unused = convert.build_unet(weights, spec.unet_prefix, spec.unet_config, dtype=dt, device=dev,
                                          source=source)
        extra["unused_keys"].extend(f"{spec.unet_prefix}<converted>{k}" for k in unused)
    if "vae" in parts:
        assert spec.vae_config is not None and spec.vae_prefix is not None
        dt, dev = _placement(dtype, device, vae=True)
        weights = tensors.load(_under(tensors, spec.vae_prefix), dt, dev)
        vae, unused = convert.build_vae(weights, spec.vae_prefix, spec.vae_config, dtype=dt, device=dev,
                                        source=source)
        extra["unused_keys"].extend(f"{spec.vae_prefix}<converted>{k}" for k in unused)
    if "clip" in parts:
        dt, dev = _placement(dtype, device)
        encoders, tokenizers = _build_text_encoders(tensors, spec.text_encoders, spec.family, dt, dev, source, extra)
    consumed = _consumed(spec)
    extra["unused_keys"].extend(k for k in tensors if not k.startswith(consumed) and k not in MARKER_KEYS)
    return CheckpointParts(family=spec.family, prediction_type=spec.prediction_type, unet=unet, vae=vae,
                           text_encoders=encoders, tokenizers=tokenizers,
                           scheduler_config=scheduler_config(spec.prediction_type, zero_snr=spec.zero_snr),
                           path=source, extra=extra)


def detect_file(path: PathLike, *, prediction_type: str | None = None) -> ModelSpec:
    """The family, variant, prediction type and configs of a checkpoint file, from its header only."""
    tensors, _ = _open_ldm(path)
    return detect.detect_checkpoint(tensors.shapes, source=str(path), tensor=tensors.__getitem__,
                                    prediction_type=prediction_type)


# --------------------------------------------------------------------------------- component files


def load_unet_file(path: PathLike, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                   prediction_type: str | None = None) -> CheckpointParts:
    """A bare UNet file: LDM layout with or without `model.diffusion_model.`, or diffusers layout.

    Returns CheckpointParts with only `unet` set (family from the UNet's shapes: sdxl / sdxl_refiner by
    their additional embeddings, otherwise sd2 for linear transformer projections, else sd1).
    """
    source = str(path)
    tensors = TensorFile.open(path)
    layout = "ldm"
    if _is_diffusers_unet(tensors.shapes):
        converted = ldm_export.unet_to_ldm(tensors.load_all())
        tensors, layout = TensorFile.from_dict(converted, path, tensors.metadata), "diffusers"
    keys = _under(tensors, detect.UNET_PREFIX) or list(tensors)
    spec = detect.detect_checkpoint({k: tensors.shapes[k] for k in keys}, source=source,
                                    tensor=tensors.__getitem__, prediction_type=prediction_type)
    assert spec.unet_config is not None and spec.unet_prefix is not None
    dt, dev = _placement(dtype, device)
    unet, unused = convert.build_unet(tensors.load(keys, dt, dev), spec.unet_prefix, spec.unet_config, dtype=dt,
                                      device=dev, source=source)
    extra = {"variant": spec.variant, "layout": layout, "notes": list(spec.notes), "metadata": tensors.metadata,
             "unused_keys": [k for k in tensors if k not in set(keys)] + unused, "zero_snr": spec.zero_snr,
             "text_encoder_roles": []}
    return CheckpointParts(family=spec.family, prediction_type=spec.prediction_type, unet=unet, vae=None,
                           text_encoders=[], tokenizers=[],
                           scheduler_config=scheduler_config(spec.prediction_type, zero_snr=spec.zero_snr),
                           path=source, extra=extra)


def load_vae_file(path: PathLike, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                  scaling_factor: float | None = None) -> Any:
    """A VAE file (LDM layout, bare or under first_stage_model./vae., or diffusers layout) -> AutoencoderKL.

    The latent scaling factor cannot be read from weights: it defaults to SD1/SD2's 0.18215, or
    SDXL's 0.13025 when the file sits in a whole SDXL checkpoint.
    """
    source = str(path)
    tensors, _ = _open_ldm(path)
    if _is_diffusers_vae(tensors.shapes):
        tensors = TensorFile.from_dict(ldm_export.vae_to_ldm(tensors.load_all()), path, tensors.metadata)
    prefix = detect.find_vae_prefix(tensors.shapes)
    if prefix is None:
        raise CheckpointError(f"{source}: no VAE found (neither encoder.conv_in.weight + decoder.conv_out.weight "
                              f"nor first_stage_model.* nor encoder.down_blocks.*); "
                              f"{detect.describe_keys(tensors.shapes)}")
    if scaling_factor is None:
        family = detect.text_encoder_family(tensors.shapes)
        unet_prefix = detect.find_unet_prefix(tensors.shapes)
        if family is None and unet_prefix is not None:
            family = detect.unet_family(detect.read_unet_structure(tensors.shapes, unet_prefix, source), source)
        scaling_factor = detect.VAE_SCALING.get(family or "sd1", 0.18215)
    config = detect.vae_config(tensors.shapes, prefix, source, scaling_factor)
    dt, dev = _placement(dtype, device, vae=True)
    vae, _ = convert.build_vae(tensors.load(_under(tensors, prefix), dt, dev), prefix, config, dtype=dt,
                               device=dev, source=source)
    return vae


TEXT_ENCODER_TYPES = ("stable_diffusion", "sd1", "sd2", "sdxl", "sdxl_refiner")


def load_text_encoder_file(path: PathLike, type: str = "stable_diffusion", *,  # noqa: A002 - ComfyUI's name
                           dtype: torch.dtype | None = None,
                           device: torch.device | str | None = None) -> CheckpointParts:
    """A text-encoder file -> CheckpointParts with only text encoders and tokenizers.

    Accepts the encoders inside a whole single-file checkpoint, a bare transformers-layout CLIP
    (`text_model.*`, as diffusers and ComfyUI save clip_l / clip_g), or a bare OpenCLIP text tower.
    `type` is ComfyUI's CLIPLoader type: stable_diffusion (SD1 CLIP-L, or SD2's OpenCLIP-H when the
    file is one), sd2, sdxl (a CLIP-L or OpenCLIP-G file; load both and join them for DualCLIPLoader).
    """
    if type not in TEXT_ENCODER_TYPES:
        raise ValueError(f"load_text_encoder_file: type {type!r} is not one of {TEXT_ENCODER_TYPES}")
    source = str(path)
    tensors, layout = _open_ldm(path)
    family = detect.text_encoder_family(tensors.shapes)
    if family is not None:
        specs = detect.text_encoder_specs(tensors.shapes, family, source)
    else:
        family, specs = _bare_text_encoder(tensors.shapes, type, source)
    dt, dev = _placement(dtype, device)
    extra: dict[str, Any] = {"variant": "base", "layout": layout, "notes": [], "metadata": tensors.metadata,
                             "unused_keys": [], "zero_snr": False}
    encoders, tokenizers = _build_text_encoders(tensors, specs, family, dt, dev, source, extra)
    return CheckpointParts(family=family, prediction_type="epsilon", unet=None, vae=None, text_encoders=encoders,
                           tokenizers=tokenizers, scheduler_config=scheduler_config("epsilon"), path=source,
                           extra=extra)


def _bare_text_encoder(shapes: Mapping[str, tuple[int, ...]], type_: str,
                       source: str) -> tuple[str, tuple[TextEncoderSpec, ...]]:
    """Role and family of a text encoder saved on its own."""
    if "token_embedding.weight" in shapes and "positional_embedding" in shapes:
        role, family = ("clip_g", "sdxl") if type_ in ("sdxl", "sdxl_refiner") else ("clip_h", "sd2")
        return family, (detect.open_clip_spec(shapes, "", role, source),)
    if detect.hf_clip_base(shapes, "") is None:
        raise CheckpointError(f"{source}: no text encoder found (neither text_model.embeddings.* nor "
                              f"token_embedding.weight); {detect.describe_keys(shapes)}")
    base = detect.hf_clip_base(shapes, "")
    hidden = shapes[f"{base}embeddings.token_embedding.weight"][1]
    if type_ in ("sdxl", "sdxl_refiner"):
        is_g = hidden == 1280 or (hidden != 768 and "text_projection.weight" in shapes)
        role, family = ("clip_g", "sdxl") if is_g else ("clip_l", "sdxl")
    elif type_ == "sd2" or hidden == 1024:
        role, family = "clip_h", "sd2"
    else:
        role, family = "clip_l", "sd1"
    return family, (detect.hf_clip_spec(shapes, "", role, source),)


# ---------------------------------------------------------------------------------- diffusers folder


def load_diffusers_folder(path: PathLike, *, parts: Iterable[str] = PARTS, dtype: torch.dtype | None = None,
                          device: torch.device | str | None = None,
                          prediction_type: str | None = None) -> CheckpointParts:
    """A diffusers pipeline folder (with model_index.json), loaded from disk only."""
    from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: PLC0415
    from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: PLC0415

    folder = Path(path)
    parts = tuple(parts)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise CheckpointError(f"{folder}: not a diffusers folder (no model_index.json)")
    try:
        index = json.loads(index_path.read_text())
        unet_config = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder}: unreadable diffusers folder ({err})") from err
    sched_path = folder / "scheduler" / "scheduler_config.json"
    sched = json.loads(sched_path.read_text()) if sched_path.is_file() else {}

    def present(name: str) -> bool:
        entry = index.get(name)
        return isinstance(entry, list) and entry[0] is not None and (folder / name).is_dir()

    te_config = json.loads((folder / "text_encoder" / "config.json").read_text()) if present("text_encoder") else {}
    if unet_config.get("addition_embed_type") == "text_time":
        family = "sdxl" if present("text_encoder") else "sdxl_refiner"
    elif unet_config.get("use_linear_projection") or te_config.get("hidden_act") == "gelu":
        family = "sd2"
    else:
        family = "sd1"
    prediction = prediction_type or sched.get("prediction_type", "epsilon")
    if prediction not in detect.PREDICTION_TYPES:
        raise CheckpointError(f"{folder}: prediction_type {prediction!r} is not one of {detect.PREDICTION_TYPES}")
    extra: dict[str, Any] = {"layout": "diffusers_folder", "notes": [], "metadata": {}, "unused_keys": [],
                             "zero_snr": bool(sched.get("rescale_betas_zero_snr"))}
    extra["variant"] = _folder_variant(unet_config, str(folder))
    unet = vae = None
    encoders, tokenizers, roles, defaults = [], [], [], []
    try:
        with convert.quiet_progress():
            if "unet" in parts:
                dt, dev = _placement(dtype, device)
                unet = _ready(UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dt,
                                                                   local_files_only=True), dev)
            if "vae" in parts:
                dt, dev = _placement(dtype, device, vae=True)
                vae = _ready(AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dt,
                                                           local_files_only=True), dev)
            if "clip" in parts:
                dt, dev = _placement(dtype, device)
                slots = [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")]
                for role, (enc_name, tok_name) in zip(_folder_roles(family), [s for s in slots if present(s[0])]):
                    cls = CLIPTextModelWithProjection if role == "clip_g" else CLIPTextModel
                    encoder = cls.from_pretrained(folder / enc_name, dtype=dt, local_files_only=True)
                    encoders.append(_ready(encoder, dev))
                    tokenizers.append(_folder_tokenizer(folder / tok_name, role, extra["notes"]))
                    roles.append(role)
                    # diffusers folders store SD2's encoder already cut at the penultimate layer.
                    defaults.append({"layer": -1, "final_norm": True} if family == "sd2"
                                    else detect.clip_defaults(family, role))
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{folder}: could not load the diffusers folder ({err})") from err
    extra.update(text_encoder_roles=roles, clip_defaults=defaults, text_projections={})
    return CheckpointParts(family=family, prediction_type=prediction, unet=unet, vae=vae, text_encoders=encoders,
                           tokenizers=tokenizers,
                           scheduler_config=scheduler_config(prediction, zero_snr=extra["zero_snr"]),
                           path=str(folder), extra=extra)


def _folder_tokenizer(tok_dir: Path, role: str, notes: list[str]) -> Any:
    """The shipped tokenizer unless the folder's has a different vocabulary (e.g. added embedding tokens).

    A saved OpenCLIP tokenizer comes back with `!` registered as a special token, which would cut
    every `!` out of prompts, so the standard vocabulary is always served from our own files.
    """
    from transformers import CLIPTokenizer  # noqa: PLC0415

    if not tok_dir.is_dir():
        return clip_tokenizer(role)
    vocab_file = tok_dir / "vocab.json"
    tok_file = tok_dir / "tokenizer.json"
    size = None
    if vocab_file.is_file():
        size = len(json.loads(vocab_file.read_text(encoding="utf-8")))
    elif tok_file.is_file():
        data = json.loads(tok_file.read_text(encoding="utf-8"))
        size = len(data.get("model", {}).get("vocab", {})) + sum(
            1 for t in data.get("added_tokens", []) if t.get("id", 0) >= 49408)
    if size == 49408:
        return clip_tokenizer(role)
    notes.append(f"{tok_dir}: tokenizer with {size} tokens loaded from the folder")
    return CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)


def _folder_roles(family: str) -> list[str]:
    return ROLES_BY_FAMILY[family]


def _folder_variant(unet_config: Mapping[str, Any], source: str) -> str:
    extra = int(unet_config.get("in_channels", 4)) - int(unet_config.get("out_channels", 4))
    out = int(unet_config.get("out_channels", 4))
    variants = {0: "base", out + 1: "inpaint", 1: "depth", out: "ip2p"}
    if extra not in variants:
        raise CheckpointError(f"{source}: UNet in_channels {unet_config.get('in_channels')} is not a known variant")
    return variants[extra]


def _ready(module: Any, device: torch.device) -> Any:
    module.to(device)
    module.eval()
    module.requires_grad_(False)
    return module
