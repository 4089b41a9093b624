"""Loaded models, shared between prompts and held under a byte budget.

A checkpoint is loaded once per (real path, mtime, size, parts) -- a component file (UNet, VAE,
text encoder) once per (real path, mtime, size, kind and options) -- and every loader node that
asks for it gets wrappers sharing the same modules. Resident models are kept in least-recently-used
order under `budget_bytes` (parameter + buffer bytes). Over budget, the least recently used
unpinned model is offloaded to the offload device when computing on a GPU (then dropped when the
offload budget is exceeded too) or dropped outright when computing on the CPU. A dropped model is
not forgotten: wrappers that still point at it reload it from its file when used again.
"""
from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nodes import device as devices
from nodes.models.wrappers import ClipWrapper, ModelWrapper, ModuleSlot, VaeWrapper, WrappedCheckpoint, wrap_checkpoint

__all__ = ["ModelManager", "Loader", "default_budget", "ALL_PARTS"]

log = logging.getLogger(__name__)

ALL_PARTS: tuple[str, ...] = ("unet", "vae", "clip")
Loader = Callable[..., Any]  # load_checkpoint(path, *, parts, dtype, device) -> CheckpointParts


def _default_loader(path: str, *, parts: tuple[str, ...], dtype: Any, device: Any) -> Any:
    from nodes.models.checkpoint import load_checkpoint  # noqa: PLC0415 - heavy, and written in parallel

    return load_checkpoint(path, parts=parts, dtype=dtype, device=device)


@dataclass
class _VaeOnly:
    """CheckpointParts-like holder for a bare VAE file."""

    vae: Any
    path: str
    family: str = ""
    prediction_type: str = "epsilon"
    unet: Any = None
    text_encoders: list[Any] = field(default_factory=list)
    tokenizers: list[Any] = field(default_factory=list)
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def default_budget() -> int:
    """Half of the compute device's memory on the CPU, 85% of it on a GPU."""
    total = devices.memory_stats()["total"]
    share = 0.5 if devices.compute_device().type == "cpu" else 0.85
    return int(total * share)


def _host_budget() -> int:
    import psutil  # noqa: PLC0415 - ships with accelerate

    return int(psutil.virtual_memory().total * 0.5)


def _offloads() -> bool:
    return devices.compute_device() != devices.offload_device()


class _Entry:
    """One loaded checkpoint: its slots, where they are, who is using them. Owner of its slots."""

    def __init__(self, manager: ModelManager, key: tuple[str, int, int, tuple[str, ...]],
                 load: Callable[[], Any]) -> None:
        self.manager = manager
        self.key = key
        self.path, self.mtime_ns, self.size, self.parts = key
        self.load = load  # builds the modules again with the current device policy
        self.slots: dict[str, ModuleSlot] = {}
        self.wrapped: WrappedCheckpoint | None = None
        self.state = "loading"  # loading | ready | offloaded | released
        self.pins = 0
        self.last_used = 0
        self.drop_when_unpinned = False
        self.loaded = threading.Event()
        self.error: BaseException | None = None

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.slots.values())

    def pin(self, slot: ModuleSlot) -> None:
        self.manager._pin(self)

    def unpin(self, slot: ModuleSlot) -> None:
        self.manager._unpin(self)

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "parts": list(self.parts), "bytes": self.nbytes if self.state != "released" else 0,
                "state": self.state, "pinned": self.pins > 0, "last_used": self.last_used}


class ModelManager:
    """Loads checkpoints once, shares them, and keeps them under a memory budget (thread-safe)."""

    def __init__(self, budget_bytes: int | None = None, *, offload_budget_bytes: int | None = None,
                 loader: Loader | None = None) -> None:
        self.budget_bytes = int(budget_bytes) if budget_bytes is not None else default_budget()
        self.offload_budget_bytes = int(offload_budget_bytes) if offload_budget_bytes is not None else None
        self.loader: Loader = loader or _default_loader
        self.loads = 0  # loader calls, reloads included
        self._lock = threading.RLock()
        self._entries: dict[tuple[str, int, int, tuple[str, ...]], _Entry] = {}
        self._tick = 0

    # ----- loading --------------------------------------------------------------------------------
    def load_checkpoint(self, path: str | os.PathLike[str], parts: Iterable[str] = ALL_PARTS, *,
                        embedding_lookup: Callable[[str], str | None] | None = None) -> WrappedCheckpoint:
        """MODEL, CLIP and VAE wrappers for a checkpoint, loading the file only if no identical load is held."""
        wanted = set(parts)
        unknown = wanted - set(ALL_PARTS)
        if unknown or not wanted:
            raise ValueError(f"load_checkpoint: parts {sorted(wanted)} must be a non-empty subset of {list(ALL_PARTS)}")
        part_tuple = tuple(p for p in ALL_PARTS if p in wanted)

        def load(real: str) -> Any:
            return self.loader(real, parts=part_tuple, dtype=devices.compute_dtype(), device=devices.compute_device())

        return self._load(path, part_tuple, load, embedding_lookup)

    def load_unet(self, path: str | os.PathLike[str], *, dtype: Any = None) -> ModelWrapper:
        """MODEL for a bare diffusion-model file (UNETLoader); `dtype` None is the compute dtype."""
        from nodes.models.checkpoint import load_unet_file  # noqa: PLC0415

        def load(real: str) -> Any:
            return load_unet_file(real, dtype=dtype or devices.compute_dtype(), device=devices.compute_device())

        model = self._load(path, ("unet", f"file:{dtype}"), load, None).model
        assert model is not None
        return model

    def load_vae(self, path: str | os.PathLike[str]) -> VaeWrapper:
        """VAE for a VAE file (VAELoader)."""
        from nodes.models.checkpoint import load_vae_file  # noqa: PLC0415

        def load(real: str) -> Any:
            return _VaeOnly(load_vae_file(real, dtype=devices.vae_dtype(), device=devices.compute_device()), real)

        vae = self._load(path, ("vae", "file"), load, None).vae
        assert vae is not None
        return vae

    def load_text_encoder(self, path: str | os.PathLike[str], type: str = "stable_diffusion", *,  # noqa: A002
                          embedding_lookup: Callable[[str], str | None] | None = None) -> ClipWrapper:
        """CLIP for a text-encoder file (CLIPLoader; `type` as ComfyUI's: stable_diffusion, sd2, sdxl...)."""
        from nodes.models.checkpoint import load_text_encoder_file  # noqa: PLC0415

        def load(real: str) -> Any:
            return load_text_encoder_file(real, type, dtype=devices.compute_dtype(), device=devices.compute_device())

        clip = self._load(path, ("clip", f"file:{type}"), load, embedding_lookup).clip
        assert clip is not None
        return clip

    def _load(self, path: str | os.PathLike[str], variant: tuple[str, ...], load: Callable[[str], Any],
              embedding_lookup: Callable[[str], str | None] | None) -> WrappedCheckpoint:
        real = os.path.realpath(os.fspath(path))
        try:
            st = os.stat(real)
        except OSError as exc:
            raise FileNotFoundError(f"model file {os.fspath(path)!r} cannot be read: {exc}") from exc
        key = (real, st.st_mtime_ns, st.st_size, variant)
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is None:
                    self._forget_stale(real, variant)
                    entry = _Entry(self, key, lambda: load(real))
                    self._entries[key] = entry
                    entry.pins += 1  # nothing may evict it while it loads
                    self._make_room(st.st_size, exclude=entry)
                    break
                waiter = entry.loaded if entry.state == "loading" else None
            if waiter is None:
                self._pin(entry)  # brings a dropped or offloaded model back
                try:
                    with self._lock:
                        return self._fresh_wrappers(entry, embedding_lookup)
                finally:
                    self._unpin(entry)
            waiter.wait()
            if entry.error is not None:
                raise entry.error
        try:
            loaded = self._call(entry)
            with self._lock:
                entry.wrapped = wrap_checkpoint(loaded, owner=entry, embedding_lookup=embedding_lookup, name=real)
                entry.slots = entry.wrapped.slots
                del loaded  # the wrappers own the modules now; nothing else may keep them alive
                entry.state = "ready"
                entry.last_used = self._next_tick()
                log.info("loaded %s %s (%.1f MiB)", real, list(variant), entry.nbytes / 2**20)
                return self._fresh_wrappers(entry, embedding_lookup)
        except BaseException as exc:
            with self._lock:
                entry.error = exc
                self._entries.pop(key, None)
            raise
        finally:
            with self._lock:
                entry.loaded.set()
                self._unpin(entry)

    def _call(self, entry: _Entry) -> Any:
        loaded = entry.load()
        with self._lock:
            self.loads += 1
        vae = getattr(loaded, "vae", None)
        if vae is not None and next(vae.parameters()).dtype != devices.vae_dtype():
            vae.to(dtype=devices.vae_dtype())
        return loaded

    def _fresh_wrappers(self, entry: _Entry, embedding_lookup: Callable[[str], str | None] | None) -> WrappedCheckpoint:
        base = entry.wrapped
        assert base is not None
        clip = base.clip.clone() if base.clip is not None else None
        if clip is not None and embedding_lookup is not None:
            clip.embedding_lookup = embedding_lookup
        return WrappedCheckpoint(base.model.clone() if base.model is not None else None, clip,
                                 base.vae.clone() if base.vae is not None else None, dict(base.slots))

    def _check_unchanged(self, entry: _Entry) -> None:
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            raise FileNotFoundError(f"checkpoint {entry.path!r} was unloaded and cannot be read again: {exc}") from exc
        if (st.st_mtime_ns, st.st_size) != (entry.mtime_ns, entry.size):
            raise RuntimeError(f"checkpoint {entry.path!r} changed on disk since it was loaded; "
                               f"run its loader node again to load the new file")

    def _reload(self, entry: _Entry) -> None:
        """Load a dropped entry's modules again into its slots; the caller has pinned it and marked it loading."""
        try:
            loaded = self._call(entry)
        except BaseException:
            with self._lock:
                entry.state = "released"
                entry.pins -= 1
                entry.loaded.set()
            raise
        with self._lock:
            if "unet" in entry.slots:
                entry.slots["unet"].attach(loaded.unet)
            if "clip" in entry.slots:
                entry.slots["clip"].attach(nn.ModuleList(list(loaded.text_encoders)))
            if "vae" in entry.slots:
                entry.slots["vae"].attach(loaded.vae)
            del loaded
            entry.state = "ready"
            entry.last_used = self._next_tick()
            entry.loaded.set()
            log.info("reloaded %s %s", entry.path, list(entry.parts))

    def _forget_stale(self, real: str, variant: tuple[str, ...]) -> None:
        """A file that changed on disk: forget its old loads (dropped now, or when their users finish)."""
        for key, entry in list(self._entries.items()):
            if key[0] == real and key[3] == variant and entry.state != "loading":
                del self._entries[key]
                if entry.pins:
                    entry.drop_when_unpinned = True
                else:
                    self._release(entry)

    # ----- residency (SlotOwner, via _Entry) -------------------------------------------------------
    def _pin(self, entry: _Entry) -> None:
        """Keep `entry` resident until `_unpin`: reload it if dropped (outside the lock), bring it back if offloaded."""
        while True:
            with self._lock:
                if entry.state != "loading":
                    entry.pins += 1
                    try:
                        if entry.state == "released":
                            self._check_unchanged(entry)
                            entry.state = "loading"
                            entry.loaded = threading.Event()
                            self._make_room(entry.size, exclude=entry)
                            break  # reload below, without holding the lock
                        if entry.state == "offloaded":
                            self._make_room(entry.nbytes, exclude=entry)
                            entry.state = "ready"
                        for slot in entry.slots.values():
                            slot.place_for_compute()
                        entry.last_used = self._next_tick()
                        return
                    except BaseException:
                        entry.pins -= 1
                        raise
                waiter = entry.loaded
            waiter.wait()  # someone else is (re)loading it
        self._reload(entry)

    def _unpin(self, entry: _Entry) -> None:
        with self._lock:
            entry.pins -= 1
            entry.last_used = self._next_tick()
            if entry.pins == 0 and entry.drop_when_unpinned:
                entry.drop_when_unpinned = False
                self._release(entry)
                devices.empty_cache()
            elif entry.pins == 0 and self._device_bytes() > self.budget_bytes:
                self._make_room(0, exclude=entry)  # the model just used stays, even if alone over budget

    # ----- budget ---------------------------------------------------------------------------------
    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def _device_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.state in ("ready", "loading"))

    def _offloaded_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.state == "offloaded")

    def _lru(self, state: str, exclude: _Entry | None) -> _Entry | None:
        candidates = [e for e in self._entries.values() if e.state == state and e.pins == 0 and e is not exclude]
        return min(candidates, key=lambda e: e.last_used, default=None)

    def _make_room(self, needed: int, exclude: _Entry | None = None) -> None:
        """Offload or drop least recently used models until `needed` more bytes fit the budget."""
        freed = False
        while self._device_bytes() + needed > self.budget_bytes:
            victim = self._lru("ready", exclude)
            if victim is None:
                if needed:
                    log.warning("model budget %.1f MiB exceeded: %.1f MiB held by models in use, %.1f MiB needed",
                                self.budget_bytes / 2**20, self._device_bytes() / 2**20, needed / 2**20)
                break
            if _offloads():
                for slot in victim.slots.values():
                    slot.move(devices.offload_device())
                victim.state = "offloaded"
                log.info("offloaded %s (%.1f MiB)", victim.path, victim.nbytes / 2**20)
            else:
                self._release(victim)
            freed = True
        host_budget = self.offload_budget_bytes if self.offload_budget_bytes is not None else _host_budget()
        while self._offloaded_bytes() > host_budget:
            victim = self._lru("offloaded", exclude)
            if victim is None:
                break
            self._release(victim)
            freed = True
        if freed:
            devices.empty_cache()

    def _release(self, entry: _Entry) -> None:
        for slot in entry.slots.values():
            slot.release()
        if entry.state != "loading":
            entry.state = "released"
        log.info("dropped %s %s", entry.path, list(entry.parts))

    @staticmethod
    def _collect() -> None:
        gc.collect()
        devices.empty_cache()

    # ----- control --------------------------------------------------------------------------------
    def free(self, unload_all: bool = True) -> int:
        """POST /free: drop every model not in use (`unload_all`), or only what exceeds the budget. Returns bytes freed."""
        with self._lock:
            before = self._device_bytes() + self._offloaded_bytes()
            if unload_all:
                for entry in self._entries.values():
                    if entry.state in ("ready", "offloaded"):
                        if entry.pins:
                            entry.drop_when_unpinned = True
                        else:
                            self._release(entry)
            else:
                self._make_room(0)
            self._collect()
            return before - (self._device_bytes() + self._offloaded_bytes())

    def on_out_of_memory(self) -> None:
        """Recovery after an out-of-memory error: drop every model (those in use as soon as they are free)."""
        log.warning("out of memory: dropping all loaded models")
        self.free(unload_all=True)

    def set_budget(self, budget_bytes: int) -> None:
        """Change the budget; models over it are evicted at once."""
        with self._lock:
            self.budget_bytes = int(budget_bytes)
            self._make_room(0)

    def stats(self) -> dict[str, Any]:
        """For /system_stats: bytes held, budgets and the models, most recently used first."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.last_used, reverse=True)
            return {
                "device": str(devices.compute_device()),
                "budget_bytes": self.budget_bytes,
                "held_bytes": self._device_bytes(),
                "offloaded_bytes": self._offloaded_bytes(),
                "offload_budget_bytes": (self.offload_budget_bytes if self.offload_budget_bytes is not None
                                         else _host_budget()) if _offloads() else 0,
                "loads": self.loads,
                "models": [e.describe() for e in entries if e.state != "released"],
            }
