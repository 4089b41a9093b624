"""Textual inversions: `embedding:name` from the embeddings folders, in A1111, SDXL and diffusers layouts."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodes.folders import FolderPaths
from nodes.models.tiny import tiny_sd1, tiny_sdxl, tiny_text_encoder_config
from nodes.models.wrappers import wrap_checkpoint
from nodes.text import encode, encode_text, tokenize
from nodes.text.embeddings import embedding_vectors, folder_lookup, load_embedding_file

START, END, A, CAT = 49406, 49407, 320, 2368
G_WIDTH = tiny_text_encoder_config("clip_g")["hidden_size"]  # the tiny clip_g is wider than clip_l, as the real one


class Sneaky:
    """Pickles into a call of print(): a stand-in for code a malicious .pt file would run."""

    def __reduce__(self):
        return (print, ("unpickling ran code",))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> FolderPaths:
    fp = FolderPaths(tmp_path_factory.mktemp("root"), create_dirs=True)
    emb = Path(fp.get_folder_paths("embeddings")[0])
    g = torch.Generator().manual_seed(0)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 32, generator=g)},
                "name": "a1111", "step": 500, "sd_checkpoint": "abcd", "sd_checkpoint_name": "model"},
               emb / "a1111.pt")
    save_file({"emb_params": torch.randn(3, 32, generator=g)}, str(emb / "three.safetensors"))
    (emb / "sub").mkdir()
    save_file({"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, G_WIDTH, generator=g) + 5},
              str(emb / "sub" / "xl.safetensors"))
    torch.save({"<tok>": torch.randn(32, generator=g)}, emb / "learned_embeds.bin")
    save_file({"emb_params": torch.randn(1, 16, generator=g)}, str(emb / "narrow.safetensors"))
    save_file({"clip_g": torch.randn(1, G_WIDTH, generator=g)}, str(emb / "g_only.safetensors"))
    torch.save({"string_to_param": {"*": Sneaky()}}, emb / "sneaky.pt")
    (emb / "broken.safetensors").write_bytes(b"not a safetensors file")
    return fp


@pytest.fixture(scope="module")
def clip(folders: FolderPaths):
    clip = wrap_checkpoint(tiny_sd1(0)).clip
    clip.embedding_lookup = folder_lookup(folders)
    return clip


def vectors(folders: FolderPaths, name: str, encoder: str = "clip_l") -> torch.Tensor:
    return embedding_vectors(load_embedding_file(folders.get_full_path("embeddings", name)), encoder)


def test_layouts_are_read(folders: FolderPaths) -> None:
    assert vectors(folders, "a1111.pt").shape == (2, 32)
    assert vectors(folders, "three.safetensors").shape == (3, 32)
    assert vectors(folders, "learned_embeds.bin").shape == (1, 32)
    l, g = vectors(folders, "sub/xl.safetensors"), vectors(folders, "sub/xl.safetensors", "clip_g")
    assert l.shape == (2, 32) and g.shape == (2, G_WIDTH) and g.mean() > 4 > l.mean()
    assert vectors(folders, "g_only.safetensors", "clip_l") is None


def test_embedding_vectors_take_token_places_with_weights(clip, folders: FolderPaths) -> None:
    enc = tokenize(clip, "a embedding:a1111 (embedding:three:1.3) cat").encoders[0]
    assert enc.ids[0, :2].tolist() == [START, A] and enc.ids[0, 7:9].tolist() == [CAT, END]
    assert sorted(enc.embeds) == [(0, 2), (0, 3), (0, 4), (0, 5), (0, 6)]
    assert torch.equal(enc.embeds[(0, 3)], vectors(folders, "a1111.pt")[1])
    assert torch.equal(enc.embeds[(0, 6)], vectors(folders, "three.safetensors")[2])
    assert enc.weights[0, :9].tolist() == pytest.approx([1, 1, 1, 1, 1.3, 1.3, 1.3, 1, 1])
    # names may carry the extension and a sub-folder; a trailing comma is text
    enc = tokenize(clip, "embedding:sub/xl.safetensors, cat").encoders[0]
    assert enc.ids[0, 3:6].tolist() == [267, CAT, END] and sorted(enc.embeds) == [(0, 1), (0, 2)]


def test_an_embedding_equal_to_a_token_row_encodes_like_the_token(clip, tmp_path: Path) -> None:
    fp = FolderPaths(tmp_path, create_dirs=True)
    row = clip.slot.module[0].embeddings.token_embedding.weight[CAT].detach().clone()
    save_file({"emb_params": row[None]}, str(Path(fp.get_folder_paths("embeddings")[0]) / "catlike.safetensors"))
    same = clip.clone()
    same.embedding_lookup = folder_lookup(fp)
    cond, pooled = encode_text(same, "a photo of a (embedding:catlike:1.2)")
    ref, ref_pooled = encode_text(same, "a photo of a (cat:1.2)")
    assert torch.allclose(cond, ref, atol=1e-6) and torch.allclose(pooled, ref_pooled, atol=1e-6)


def test_missing_unsafe_and_misfit_embeddings_are_ignored_with_a_warning(clip, caplog: pytest.LogCaptureFixture,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.WARNING):
        enc = tokenize(clip, "a embedding:nope embedding:../../etc/passwd embedding:narrow embedding:g_only "
                             "embedding:sneaky embedding:broken cat")
    ids = enc.encoders[0].ids[0]
    assert ids[:4].tolist() == [START, A, CAT, END] and enc.encoders[0].embeds == {}
    assert "embedding 'nope' not found" in caplog.text
    assert "refused" in caplog.text
    assert "has vectors of size 16, clip_l needs 32" in caplog.text
    assert "'g_only'" in caplog.text and "no vectors for clip_l" in caplog.text
    assert "'sneaky'" in caplog.text and "refusing to unpickle" in caplog.text
    assert "'broken'" in caplog.text and "cannot be read" in caplog.text
    assert "unpickling ran code" not in capsys.readouterr().out


def test_without_an_embeddings_folder_the_word_is_text() -> None:
    clip = wrap_checkpoint(tiny_sd1(0)).clip
    assert clip.embedding_lookup is None
    enc = tokenize(clip, "embedding:cat").encoders[0]
    assert enc.embeds == {} and enc.ids[0, 1].item() != END
    assert enc.ids[0].tolist()[:6] == [START, *clip.tokenizers[0]("embedding:cat", add_special_tokens=False)["input_ids"], END][:6]


def test_sdxl_embeddings_give_each_encoder_its_own_vectors(folders: FolderPaths) -> None:
    clip = wrap_checkpoint(tiny_sdxl(0)).clip
    clip.embedding_lookup = folder_lookup(folders)
    tokens = tokenize(clip, "a embedding:sub/xl")
    l, g = tokens.encoders
    assert torch.equal(l.embeds[(0, 2)], vectors(folders, "sub/xl.safetensors")[0])
    assert torch.equal(g.embeds[(0, 2)], vectors(folders, "sub/xl.safetensors", "clip_g")[0])
    cond, _ = encode(clip, tokens)
    assert cond.shape == (1, 77, 32 + G_WIDTH) and torch.isfinite(cond).all()
