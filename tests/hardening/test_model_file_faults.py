"""Model files that are corrupt, truncated, of an unknown family, or pickles with code in them.

Each must fail with `CheckpointError` (the loader's own error) naming the file; a pickle's code
must never run (a canary directory that its payload would create stays absent). Hypothesis
mutates the bytes of real files, the safetensors header and torch's zip and legacy pickle formats.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nodes.models.checkpoint import TensorFile, detect_file, load_checkpoint, read_state_dict
from nodes.models.detect import CheckpointError
from nodes.models.safe_pickle import UnsafePickleError, load_torch_file
from tests.hardening.model_files import (
    EvalPayload,
    Payload,
    safetensors_bytes,
    small_safetensors,
    torch_legacy,
    torch_zip,
    zip_bytes,
)
from tests.hardening.prompt_checks import fuzz_settings


def bad_files(tiny: bytes, canary: Path) -> dict[str, tuple[str, bytes]]:
    """name -> (file name, content); every one must raise CheckpointError naming the file."""
    (header_len,) = struct.unpack("<Q", tiny[:8])
    header = json.loads(tiny[8:8 + header_len])
    first = next(k for k in header if k != "__metadata__")
    odd = dict(header)
    odd[first] = {**header[first], "data_offsets": "everywhere"}
    weird_dtype = dict(header)
    weird_dtype[first] = {**header[first], "dtype": ["F32"]}
    bad_shape = dict(header)
    bad_shape[first] = {**header[first], "shape": "wide"}
    negative = dict(header)
    negative[first] = {**header[first], "data_offsets": [-10, -2]}
    swapped = dict(header)
    flat = next(k for k, v in header.items() if k.startswith("model.diffusion_model.") and len(v["shape"]) == 2
                and v["shape"][0] != v["shape"][1])
    swapped[flat] = {**header[flat], "shape": header[flat]["shape"][::-1]}  # same bytes, transposed shape
    payload = {"state_dict": {"w": torch.zeros(2)}, "hook": Payload(canary)}
    return {
        "empty": ("empty.safetensors", b""),
        "five_bytes": ("five.safetensors", b"\x01\x02\x03\x04\x05"),
        "text": ("readme.safetensors", b"This is not a model, it is a note about one.\n" * 4),
        "random": ("random.safetensors", os.urandom(4096)),
        "truncated_half": ("half.safetensors", tiny[: len(tiny) // 2]),
        "truncated_in_header": ("cut_header.safetensors", tiny[: 8 + header_len // 2]),
        "truncated_after_header": ("only_header.safetensors", tiny[: 8 + header_len]),
        "header_length_huge": ("huge_len.safetensors", struct.pack("<Q", 2**62) + tiny[8:100]),
        "header_not_json": ("garbled.safetensors", struct.pack("<Q", 20) + b"{ this is not json }" + b"\x00" * 64),
        "header_a_list": ("list.safetensors", safetensors_bytes([1, 2, 3], b"\x00" * 64)),
        "header_offsets_text": ("offsets.safetensors", safetensors_bytes(odd, tiny[8 + header_len:])),
        "header_offsets_negative": ("negative.safetensors", safetensors_bytes(negative, tiny[8 + header_len:])),
        "header_dtype_list": ("dtype.safetensors", safetensors_bytes(weird_dtype, tiny[8 + header_len:])),
        "header_shape_text": ("shape.safetensors", safetensors_bytes(bad_shape, tiny[8 + header_len:])),
        "weight_of_the_wrong_shape": ("transposed.safetensors", safetensors_bytes(swapped, tiny[8 + header_len:])),
        "unknown_family": ("mystery.safetensors", small_safetensors({"encoder.layers.0.weight": (4, 4),
                                                                      "decoder.head.bias": (4,)})),
        "llm_like": ("llm.safetensors", small_safetensors({"model.embed_tokens.weight": (8, 4),
                                                            "lm_head.weight": (8, 4)})),
        "zip_not_torch": ("archive.ckpt", zip_bytes({"notes.txt": b"hello"})),
        "ckpt_with_code": ("code.ckpt", torch_zip(payload)),
        "ckpt_with_eval": ("eval.ckpt", torch_zip({"w": torch.zeros(1), "x": EvalPayload(canary)})),
        "legacy_ckpt_with_code": ("legacy.ckpt", torch_legacy(payload)),
        "plain_pickle_with_code": ("plain.ckpt", pickle.dumps(payload, protocol=2)),
        "pickle_protocol_5_with_code": ("p5.pt", pickle.dumps(Payload(canary), protocol=5)),
        "ckpt_no_tensors": ("notensors.ckpt", torch_zip({"epoch": 3, "note": "no weights here"})),
        "ckpt_truncated": ("cut.ckpt", torch_zip({"w": torch.zeros(64)})[:300]),
    }


def load(path: Path) -> Any:
    """What CheckpointLoaderSimple does with a file: detect it, then build the modules."""
    return load_checkpoint(path, parts=("unet", "vae", "clip"), dtype=torch.float32, device="cpu")


def test_bad_model_files_fail_with_the_file_named(tiny_checkpoint: Path, tmp_path: Path, figures: Any) -> None:
    canary = tmp_path / "code_ran"
    tiny = tiny_checkpoint.read_bytes()
    reasons = {}
    for name, (filename, content) in bad_files(tiny, canary).items():
        path = tmp_path / filename
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as caught:
            load(path)
        message = str(caught.value)
        assert str(path) in message, (name, message)
        if "code" in name or "eval" in name:
            assert isinstance(caught.value, UnsafePickleError) or "unpickle" in message, (name, message)
        reasons[name] = message.split(": ", 1)[1][:70]
        assert not canary.exists(), f"{name}: code from the file ran"
    figures.record(files=len(reasons), faults_injected=len(reasons), code_ran=0)


def test_safe_pickles_still_load(tmp_path: Path) -> None:
    good = {"state_dict": {"model.diffusion_model.x": torch.ones(3)}, "epoch": 7, "global_step": 10}
    for name, content in (("zip.ckpt", torch_zip(good)), ("legacy.ckpt", torch_legacy(good))):
        path = tmp_path / name
        path.write_bytes(content)
        loaded = load_torch_file(path)
        assert torch.equal(loaded["state_dict"]["model.diffusion_model.x"], torch.ones(3))


def test_mutated_safetensors_headers_fail_cleanly(tmp_path: Path, heavy: bool, figures: Any) -> None:
    base = small_safetensors({"model.diffusion_model.input_blocks.0.0.weight": (4, 4, 3, 3),
                              "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
                              "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (8, 4)})
    (header_len,) = struct.unpack("<Q", base[:8])
    seen = {"cases": 0, "refused": 0, "opened": 0}

    @fuzz_settings(heavy, 150, 4000)
    @given(st.lists(st.tuples(st.integers(0, 8 + header_len + 32), st.integers(0, 255)), min_size=1, max_size=6),
           st.integers(0, len(base)))
    def check(flips: list[tuple[int, int]], cut: int) -> None:
        seen["cases"] += 1
        data = bytearray(base[:max(cut, 1)] if cut < 40 else base)
        for at, value in flips:
            if at < len(data):
                data[at] = value
        path = tmp_path / f"case{seen['cases'] % 7}.safetensors"
        path.write_bytes(bytes(data))
        try:
            tensors = TensorFile.open(path)
            read_state_dict(path)
            detect_file(path)
            seen["opened"] += 1
            assert len(tensors) >= 0
        except CheckpointError as exc:
            assert str(path) in str(exc), str(exc)
            seen["refused"] += 1

    check()
    figures.record(**seen)


def test_mutated_pickles_never_run_code(tmp_path: Path, heavy: bool, figures: Any) -> None:
    canary = tmp_path / "code_ran"
    bases = [torch_zip({"w": torch.zeros(3), "x": Payload(canary)}), torch_legacy({"w": torch.zeros(3)}),
             pickle.dumps({"w": 1, "x": Payload(canary)}, protocol=2), torch_zip({"w": torch.arange(4.0)})]
    seen = {"cases": 0, "refused": 0, "loaded": 0}

    @fuzz_settings(heavy, 150, 4000)
    @given(st.sampled_from(range(len(bases))),
           st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=0, max_size=5))
    def check(which: int, flips: list[tuple[int, int]]) -> None:
        seen["cases"] += 1
        data = bytearray(bases[which])
        for at, value in flips:
            if at < len(data):
                data[at] = value
        path = tmp_path / "case.ckpt"
        path.write_bytes(bytes(data))
        try:
            load_torch_file(path)
            seen["loaded"] += 1
        except CheckpointError as exc:
            assert str(path) in str(exc), str(exc)
            seen["refused"] += 1
        assert not canary.exists()

    check()
    figures.record(**seen, code_ran=0)
