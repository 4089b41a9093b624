"""ModelManager: one load per file, shared wrappers, LRU eviction under a byte budget, free, reload."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from nodes.models import manager as manager_mod
from nodes.models.manager import ModelManager
from nodes.models.tiny import clone_parts, tiny_sd1, tiny_sdxl
from nodes.models.tiny import write_tiny_checkpoint
from nodes.models.wrappers import FullDelta

_TEMPLATES: dict[str, Any] = {}


def template(family: str) -> Any:
    if family not in _TEMPLATES:
        _TEMPLATES[family] = {"sd1": tiny_sd1, "sdxl": tiny_sdxl}[family](0)
    return _TEMPLATES[family]


class CountingLoader:
    """A real loader of tiny models (fresh weights per call) that counts its calls per file."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, path: str, *, parts: tuple[str, ...], dtype: torch.dtype, device: torch.device) -> Any:
        with self.lock:
            self.calls.append((path, parts))
        time.sleep(self.delay)
        family = "sdxl" if "xl" in os.path.basename(path) else "sd1"
        loaded = clone_parts(template(family))
        if "unet" not in parts:
            loaded.unet = None
        if "vae" not in parts:
            loaded.vae = None
        if "clip" not in parts:
            loaded.text_encoders, loaded.tokenizers = [], []
        return loaded


def model_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(b"\0" * 1024)
    return str(path)


def entry_bytes(family: str) -> int:
    t = template(family)
    return sum(sum(p.numel() * p.element_size() for p in m.parameters()) +
               sum(b.numel() * b.element_size() for b in m.buffers())
               for m in (t.unet, t.vae, *t.text_encoders))


def test_same_file_loads_once_and_wrappers_share_weights(tmp_path: Path) -> None:
    loader = CountingLoader()
    mm = ModelManager(budget_bytes=10**10, loader=loader)
    path = model_file(tmp_path, "a.safetensors")
    first = mm.load_checkpoint(path)
    second = mm.load_checkpoint(path)
    assert len(loader.calls) == 1 and mm.loads == 1
    assert second.model is not first.model and second.model.slot is first.model.slot
    assert second.clip.slot is first.clip.slot and second.vae.slot is first.vae.slot
    # a clone with a LoRA-like patch does not disturb what the other loader node got
    patched = first.model.with_patches({"conv_in.bias": FullDelta(torch.ones(32))})
    with patched.use():
        pass
    assert second.model.patches == ()
    # other parts of the same file are another load
    only_vae = mm.load_checkpoint(path, parts=["vae"])
    assert len(loader.calls) == 2 and loader.calls[1][1] == ("vae",)
    assert only_vae.model is None and only_vae.clip is None and only_vae.vae.slot is not first.vae.slot
    stats = mm.stats()
    assert stats["loads"] == 2 and len(stats["models"]) == 2
    assert stats["held_bytes"] == entry_bytes("sd1") + first.vae.memory_bytes()
    assert {m["path"] for m in stats["models"]} == {os.path.realpath(path)}


def test_changed_file_is_loaded_again(tmp_path: Path) -> None:
    loader = CountingLoader()
    mm = ModelManager(budget_bytes=10**10, loader=loader)
    path = model_file(tmp_path, "a.safetensors")
    old = mm.load_checkpoint(path)
    Path(path).write_bytes(b"\1" * 2048)
    new = mm.load_checkpoint(path)
    assert len(loader.calls) == 2 and new.model.slot is not old.model.slot
    assert len(mm.stats()["models"]) == 1  # the stale load was dropped
    with pytest.raises(RuntimeError, match="changed on disk since it was loaded"):
        with old.model.use():
            pass


def test_concurrent_loads_of_one_file_share_one_load(tmp_path: Path) -> None:
    loader = CountingLoader(delay=0.3)
    mm = ModelManager(budget_bytes=10**10, loader=loader)
    path = model_file(tmp_path, "a.safetensors")
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(mm.load_checkpoint(path))) for _ in range(3)]
    for t in threads:
        t.start()
    while not loader.calls:  # stats must answer while a load runs
        time.sleep(0.01)
    assert mm.stats()["loads"] == 0
    for t in threads:
        t.join(30)
    assert len(loader.calls) == 1 and len(results) == 3
    assert len({id(r.model.slot) for r in results}) == 1


def test_failed_load_is_reported_and_not_cached(tmp_path: Path) -> None:
    calls = []

    def broken(path: str, **_: Any) -> Any:
        calls.append(path)
        raise ValueError(f"{path}: not a checkpoint")

    mm = ModelManager(budget_bytes=10**10, loader=broken)
    path = model_file(tmp_path, "bad.safetensors")
    for _ in range(2):
        with pytest.raises(ValueError, match="not a checkpoint"):
            mm.load_checkpoint(path)
    assert len(calls) == 2 and mm.stats()["models"] == []
    with pytest.raises(FileNotFoundError, match="cannot be read"):
        mm.load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="must be a non-empty subset"):
        mm.load_checkpoint(path, parts=["text"])


def test_least_recently_used_is_dropped_over_budget_and_reloaded_on_use(tmp_path: Path) -> None:
    loader = CountingLoader()
    one = entry_bytes("sd1")
    mm = ModelManager(budget_bytes=int(2.5 * one), loader=loader)
    a, b, c = (model_file(tmp_path, f"{n}.safetensors") for n in "abc")
    wa = mm.load_checkpoint(a)
    mm.load_checkpoint(b)
    with wa.model.use():  # a is now more recent than b
        pass
    mm.load_checkpoint(c)
    held = {Path(m["path"]).name for m in mm.stats()["models"]}
    assert held == {"a.safetensors", "c.safetensors"}
    assert mm.stats()["held_bytes"] <= mm.budget_bytes
    # a dropped model comes back when a wrapper that still points at it is used
    mm.set_budget(int(1.5 * one))
    assert {Path(m["path"]).name for m in mm.stats()["models"]} == {"c.safetensors"}
    assert wa.model.slot.module is None
    calls = len(loader.calls)
    with wa.clip.use() as encoders:
        assert len(encoders) == 1
    assert len(loader.calls) == calls + 1 and wa.model.slot.module is not None
    assert {Path(m["path"]).name for m in mm.stats()["models"]} == {"a.safetensors"}


def test_models_in_use_are_never_evicted(tmp_path: Path) -> None:
    loader = CountingLoader()
    mm = ModelManager(budget_bytes=int(1.2 * entry_bytes("sd1")), loader=loader)
    wa = mm.load_checkpoint(model_file(tmp_path, "a.safetensors"))
    with wa.model.use() as unet:
        mm.load_checkpoint(model_file(tmp_path, "b.safetensors"))
        assert wa.model.slot.module is unet and unet.conv_in.weight.numel() > 0
        assert {m["pinned"] for m in mm.stats()["models"]} == {True, False}
        assert mm.stats()["held_bytes"] > mm.budget_bytes  # over budget rather than pulling weights from under a user
    # once a is free again the budget holds: b, less recently used than a, goes
    assert [Path(m["path"]).name for m in mm.stats()["models"]] == ["a.safetensors"]
    assert mm.stats()["held_bytes"] <= mm.budget_bytes


def test_free_and_out_of_memory_drop_everything(tmp_path: Path) -> None:
    loader = CountingLoader()
    mm = ModelManager(budget_bytes=10**10, loader=loader)
    wa = mm.load_checkpoint(model_file(tmp_path, "a.safetensors"))
    mm.load_checkpoint(model_file(tmp_path, "xl.safetensors"))
    total = entry_bytes("sd1") + entry_bytes("sdxl")
    assert mm.stats()["held_bytes"] == total
    assert mm.free(unload_all=False) == 0  # within budget: nothing to trim
    assert mm.free(unload_all=True) == total
    assert mm.stats()["held_bytes"] == 0 and mm.stats()["models"] == []
    # loading the same file again reloads it into the same slots
    again = mm.load_checkpoint(wa.model.source)
    assert again.model.slot is wa.model.slot and wa.model.slot.module is not None and mm.loads == 3
    # out of memory while a model is in use: it is dropped as soon as it is released
    with wa.model.use():
        mm.on_out_of_memory()
        assert wa.model.slot.module is not None
    assert wa.model.slot.module is None and mm.stats()["held_bytes"] == 0


def test_offload_when_computing_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU policy (offload first, drop when the offload budget is full), run on the CPU."""
    monkeypatch.setattr(manager_mod, "_offloads", lambda: True)
    loader = CountingLoader()
    one = entry_bytes("sd1")
    mm = ModelManager(budget_bytes=int(1.5 * one), offload_budget_bytes=int(1.5 * one), loader=loader)
    wa = mm.load_checkpoint(model_file(tmp_path, "a.safetensors"))
    mm.load_checkpoint(model_file(tmp_path, "b.safetensors"))
    states = {Path(m["path"]).name: m["state"] for m in mm.stats()["models"]}
    assert states == {"a.safetensors": "offloaded", "b.safetensors": "ready"}
    assert mm.stats()["offloaded_bytes"] == one and wa.model.slot.module is not None
    mm.load_checkpoint(model_file(tmp_path, "c.safetensors"))
    states = {Path(m["path"]).name: m["state"] for m in mm.stats()["models"]}
    assert states == {"b.safetensors": "offloaded", "c.safetensors": "ready"}  # a did not fit the offload budget
    calls = len(loader.calls)
    with wa.model.use():  # back from being dropped
        pass
    assert len(loader.calls) == calls + 1


def test_default_loader_reads_a_real_checkpoint_file(tmp_path: Path) -> None:
    path = write_tiny_checkpoint(tmp_path, "sd1")
    mm = ModelManager(budget_bytes=10**10)
    model, clip, vae = mm.load_checkpoint(path)
    assert model.family == "sd1" and clip.encoders[0].role == "clip_l" and vae.downscale_ratio == 8
    assert mm.load_checkpoint(path).model.slot is model.slot and mm.loads == 1
    image = vae.decode(torch.zeros(1, 4, 2, 2))
    assert image.shape == (1, 16, 16, 3)


def test_reload_of_a_dropped_model_does_not_block_stats(tmp_path: Path) -> None:
    loader = CountingLoader()
    mm = ModelManager(budget_bytes=10**10, loader=loader)
    wa = mm.load_checkpoint(model_file(tmp_path, "a.safetensors"))
    mm.free()
    loader.delay = 0.5
    users = [threading.Thread(target=lambda: wa.vae.decode(torch.zeros(1, 4, 1, 1))) for _ in range(2)]
    for t in users:
        t.start()
    while len(loader.calls) < 2:
        time.sleep(0.01)
    assert [m["state"] for m in mm.stats()["models"]] == ["loading"]  # answered while the file loads
    for t in users:
        t.join(30)
    assert len(loader.calls) == 2  # one first load, one reload shared by both users
    assert [m["state"] for m in mm.stats()["models"]] == ["ready"] and not mm.stats()["models"][0]["pinned"]


def test_component_files_are_shared_too(tmp_path: Path) -> None:
    """UNETLoader, VAELoader and CLIPLoader files go through the same budget and sharing."""
    path = write_tiny_checkpoint(tmp_path, "sdxl")  # a whole checkpoint is also a valid component file
    mm = ModelManager(budget_bytes=10**10)
    unet, unet_again = mm.load_unet(path), mm.load_unet(path)
    assert unet.family == "sdxl" and unet_again.slot is unet.slot and unet_again is not unet
    vae = mm.load_vae(path)
    assert mm.load_vae(path).slot is vae.slot and vae.latent_channels == 4
    clip = mm.load_text_encoder(path, "sdxl")
    assert [e.role for e in clip.encoders] == ["clip_l", "clip_g"]
    assert mm.load_text_encoder(path, "sdxl").slot is clip.slot
    assert mm.loads == 3 and len(mm.stats()["models"]) == 3
    assert unet.slot is not mm.load_checkpoint(path).model.slot  # a different load of the same file
    mm.free()
    assert vae.decode(torch.zeros(1, 4, 1, 1)).shape == (1, 8, 8, 3) and mm.loads == 5  # vae reloaded on use
