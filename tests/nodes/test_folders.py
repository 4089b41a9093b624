"""FolderPaths: ComfyUI's layout, cached recursive listing, safe lookup, extra_model_paths.yaml."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from nodes.folders import FolderPaths, UnsafePathError, check_relative_name, safe_join


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture()
def fp(tmp_path: Path) -> FolderPaths:
    return FolderPaths(tmp_path / "root", create_dirs=True)


def test_default_layout_matches_comfyui(fp: FolderPaths) -> None:
    models = Path(fp.models_dir)
    assert fp.get_folder_paths("checkpoints")[0] == str(models / "checkpoints")
    assert fp.get_folder_paths("text_encoders")[:2] == [str(models / "text_encoders"), str(models / "clip")]
    assert fp.get_folder_paths("diffusion_models")[:2] == [str(models / "unet"), str(models / "diffusion_models")]
    assert fp.get_folder_paths("controlnet") == [str(models / "controlnet"), str(models / "t2i_adapter")]
    # legacy keys are aliases
    assert fp.get_folder_paths("clip") == fp.get_folder_paths("text_encoders")
    assert fp.get_folder_paths("unet") == fp.get_folder_paths("diffusion_models")
    # saved models are offered again
    assert str(Path(fp.output_dir) / "loras") in fp.get_folder_paths("loras")
    for key in ("configs", "loras", "vae", "clip_vision", "style_models", "embeddings", "diffusers",
                "vae_approx", "upscale_models", "depth", "custom_nodes"):
        assert fp.get_folder_paths(key)
    for d in (fp.input_dir, fp.output_dir, fp.temp_dir, fp.user_dir, *fp.get_folder_paths("vae")):
        assert os.path.isdir(d)
    with pytest.raises(KeyError, match="'nope' is unknown"):
        fp.get_folder_paths("nope")


def test_listing_is_recursive_filtered_and_sorted(fp: FolderPaths) -> None:
    ck = Path(fp.get_folder_paths("checkpoints")[0])
    touch(ck / "b.safetensors")
    touch(ck / "a.ckpt")
    touch(ck / "notes.txt")
    touch(ck / "sd" / "xl" / "base.SAFETENSORS")
    touch(ck / ".hidden" / "x.safetensors")
    assert fp.get_filename_list("checkpoints") == ["a.ckpt", "b.safetensors", "sd/xl/base.SAFETENSORS"]
    touch(Path(fp.models_dir) / "configs" / "v1.yaml")
    touch(Path(fp.models_dir) / "configs" / "v1.safetensors")
    assert fp.get_filename_list("configs") == ["v1.yaml"]


def test_listing_merges_folders_and_legacy_dirs(fp: FolderPaths) -> None:
    touch(Path(fp.models_dir) / "clip" / "l.safetensors")
    touch(Path(fp.models_dir) / "text_encoders" / "g.safetensors")
    touch(Path(fp.models_dir) / "text_encoders" / "l.safetensors")
    assert fp.get_filename_list("text_encoders") == ["g.safetensors", "l.safetensors"]
    assert fp.get_filename_list("clip") == ["g.safetensors", "l.safetensors"]
    # the first folder wins for a name present twice
    assert fp.get_full_path("clip", "l.safetensors") == str(Path(fp.models_dir) / "text_encoders" / "l.safetensors")


def test_listing_cache_follows_directory_mtimes(fp: FolderPaths) -> None:
    loras = Path(fp.get_folder_paths("loras")[0])
    touch(loras / "one.safetensors")
    assert fp.get_filename_list("loras") == ["one.safetensors"]
    # a stale cache would be visible: plant a result and check it is served while nothing changed
    paths, mtimes, _ = fp._cache["loras"]
    fp._cache["loras"] = (paths, mtimes, ["cached-marker"])
    assert fp.get_filename_list("loras") == ["cached-marker"]
    time.sleep(0.01)
    touch(loras / "deep" / "two.safetensors")  # changes loras/'s mtime (new sub-folder)
    assert fp.get_filename_list("loras") == ["deep/two.safetensors", "one.safetensors"]
    time.sleep(0.01)
    touch(loras / "deep" / "three.safetensors")  # only the sub-folder's mtime changes
    assert fp.get_filename_list("loras") == ["deep/three.safetensors", "deep/two.safetensors", "one.safetensors"]
    (loras / "one.safetensors").unlink()
    assert "one.safetensors" not in fp.get_filename_list("loras")


def test_missing_folder_appearing_later_is_noticed(tmp_path: Path) -> None:
    fp = FolderPaths(tmp_path / "bare")
    assert fp.get_filename_list("vae") == []
    touch(Path(fp.models_dir) / "vae" / "v.safetensors")
    assert fp.get_filename_list("vae") == ["v.safetensors"]


def test_marker_folders_list_model_directories(fp: FolderPaths) -> None:
    diff = Path(fp.get_folder_paths("diffusers")[0])
    touch(diff / "sd15" / "model_index.json", b"{}")
    touch(diff / "sd15" / "unet" / "config.json", b"{}")
    touch(diff / "group" / "tiny" / "model_index.json", b"{}")
    touch(diff / "empty" / "readme.txt")
    assert fp.get_filename_list("diffusers") == ["group/tiny", "sd15"]
    assert fp.get_full_path("diffusers", "group/tiny") == str(diff / "group" / "tiny")
    assert fp.get_full_path("diffusers", "empty") is None
    depth = Path(fp.get_folder_paths("depth")[0])
    touch(depth / "dpt-tiny" / "config.json", b"{}")
    assert fp.get_filename_list("depth") == ["dpt-tiny"]


def test_get_full_path_finds_files_and_accepts_windows_separators(fp: FolderPaths) -> None:
    ck = Path(fp.get_folder_paths("checkpoints")[0])
    f = touch(ck / "sub" / "m.safetensors")
    assert fp.get_full_path("checkpoints", "sub/m.safetensors") == str(f)
    assert fp.get_full_path("checkpoints", "sub\\m.safetensors") == str(f)
    assert fp.get_full_path("checkpoints", "./sub//m.safetensors") == str(f)
    assert fp.get_full_path("checkpoints", "missing.safetensors") is None
    assert fp.get_full_path("checkpoints", "sub") is None  # a directory is not a checkpoint
    with pytest.raises(FileNotFoundError, match="checkpoints 'missing.safetensors' not found in"):
        fp.get_full_path_or_raise("checkpoints", "missing.safetensors")


@pytest.mark.parametrize("name", ["../secret.safetensors", "sub/../../secret.safetensors", "/etc/passwd",
                                  "C:/x.safetensors", "a\x00b.safetensors", "..\\secret.safetensors", "", "."])
def test_get_full_path_refuses_escaping_names(fp: FolderPaths, name: str) -> None:
    touch(Path(fp.models_dir) / "secret.safetensors")
    with pytest.raises(UnsafePathError):
        fp.get_full_path("checkpoints", name)


def test_symlinks_pointing_out_are_neither_listed_nor_served(fp: FolderPaths, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "evil.safetensors")
    ck = Path(fp.get_folder_paths("checkpoints")[0])
    touch(ck / "real" / "ok.safetensors")
    os.symlink(outside / "evil.safetensors", ck / "evil.safetensors")
    os.symlink(outside, ck / "outdir")
    os.symlink(ck / "real", ck / "alias")  # a link that stays inside is fine
    os.symlink(ck, ck / "real" / "loop")  # a link to an ancestor must not loop
    assert fp.get_filename_list("checkpoints") == ["alias/ok.safetensors", "real/ok.safetensors"]
    assert fp.get_full_path("checkpoints", "evil.safetensors") is None
    assert fp.get_full_path("checkpoints", "outdir/evil.safetensors") is None
    assert fp.get_full_path("checkpoints", "alias/ok.safetensors") == str(ck / "alias" / "ok.safetensors")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(ck, "outdir/evil.safetensors")


def test_a_symlinked_model_folder_itself_is_fine(tmp_path: Path) -> None:
    store = tmp_path / "big_disk" / "loras"
    touch(store / "style.safetensors")
    fp = FolderPaths(tmp_path / "root")
    (Path(fp.models_dir)).mkdir(parents=True)
    os.symlink(store, Path(fp.models_dir) / "loras")
    assert fp.get_filename_list("loras") == ["style.safetensors"]
    assert fp.get_full_path("loras", "style.safetensors") is not None


def test_add_model_folder_path_order_and_new_keys(fp: FolderPaths, tmp_path: Path) -> None:
    extra, first = tmp_path / "extra", tmp_path / "first"
    touch(extra / "x.safetensors")
    touch(first / "x.safetensors")
    fp.add_model_folder_path("loras", extra)
    assert fp.get_folder_paths("loras")[-1] == str(extra)
    assert fp.get_full_path("loras", "x.safetensors") == str(extra / "x.safetensors")
    fp.add_model_folder_path("loras", first, is_default=True)
    assert fp.get_folder_paths("loras")[0] == str(first)
    assert fp.get_full_path("loras", "x.safetensors") == str(first / "x.safetensors")
    fp.add_model_folder_path("loras", extra, is_default=True)  # already there: moved to the front
    assert fp.get_folder_paths("loras")[0] == str(extra)
    assert fp.get_folder_paths("loras").count(str(extra)) == 1
    fp.add_model_folder_path("unet", first)  # legacy key
    assert str(first) in fp.get_folder_paths("diffusion_models")
    fp.add_model_folder_path("my_plugin_models", first)  # new kind: every file counts
    touch(first / "weights.onnx")
    assert fp.get_filename_list("my_plugin_models") == ["weights.onnx", "x.safetensors"]


def test_instances_are_independent(tmp_path: Path) -> None:
    a, b = FolderPaths(tmp_path / "a"), FolderPaths(tmp_path / "b")
    a.add_model_folder_path("loras", tmp_path / "only_a")
    assert str(tmp_path / "only_a") not in b.get_folder_paths("loras")


def test_extra_model_paths_yaml_comfyui_format(fp: FolderPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a1111 = tmp_path / "webui"
    touch(a1111 / "models" / "Stable-diffusion" / "a1111.safetensors")
    touch(a1111 / "models" / "Lora" / "l1.safetensors")
    touch(a1111 / "models" / "LyCORIS" / "l2.safetensors")
    touch(a1111 / "embeddings" / "emb.pt")
    comfy = tmp_path / "home" / "ComfyUI"
    touch(comfy / "models" / "unet" / "u.safetensors")
    touch(comfy / "models" / "clip" / "c.safetensors")
    touch(comfy / "models" / "checkpoints" / "a1111.safetensors")
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    touch(cfg_dir / "rel" / "vae" / "v.safetensors")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WEBUI_DIR", str(a1111))
    (cfg_dir / "extra_model_paths.yaml").write_text(
        "a111:\n"
        "    base_path: $WEBUI_DIR\n"
        "    checkpoints: models/Stable-diffusion\n"
        "    configs: models/Stable-diffusion\n"
        "    loras: |\n"
        "        models/Lora\n"
        "        models/LyCORIS\n"
        "    embeddings: embeddings\n"
        "comfyui:\n"
        "    base_path: ~/ComfyUI/\n"
        "    is_default: true\n"
        "    checkpoints: models/checkpoints/\n"
        "    unet: models/unet\n"
        "    clip: models/clip\n"
        "relative:\n"
        "    base_path: rel\n"
        "    vae: vae\n"
        "nobase:\n"
        "    vae: rel/vae\n"
        "empty_section:\n"
    )
    added = fp.load_extra_model_paths(cfg_dir / "extra_model_paths.yaml")
    assert ("loras", str(a1111 / "models" / "LyCORIS")) in added
    assert ("diffusion_models", str(comfy / "models" / "unet")) in added
    assert fp.get_filename_list("loras") == ["l1.safetensors", "l2.safetensors"]
    assert fp.get_filename_list("embeddings") == ["emb.pt"]
    # is_default puts ComfyUI's folder first, so its copy of a duplicate name wins
    assert fp.get_folder_paths("checkpoints")[0] == str(comfy / "models" / "checkpoints")
    assert fp.get_full_path("checkpoints", "a1111.safetensors") == str(comfy / "models" / "checkpoints" / "a1111.safetensors")
    assert fp.get_folder_paths("diffusion_models")[0] == str(comfy / "models" / "unet")
    assert fp.get_filename_list("unet") == ["u.safetensors"]
    assert fp.get_filename_list("text_encoders") == ["c.safetensors"]
    # base_path relative to the YAML's directory; without base_path entries are relative to it too
    assert fp.get_folder_paths("vae").count(str(cfg_dir / "rel" / "vae")) == 1
    assert fp.get_filename_list("vae") == ["v.safetensors"]


def test_extra_model_paths_yaml_errors_name_the_problem(fp: FolderPaths, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sec:\n  loras: 5\n")
    with pytest.raises(ValueError, match="section 'sec' key 'loras' is 5"):
        fp.load_extra_model_paths(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="top level must be a mapping"):
        fp.load_extra_model_paths(bad)
    bad.write_text("sec: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        fp.load_extra_model_paths(bad)
    bad.write_text("")
    assert fp.load_extra_model_paths(bad) == []


def test_check_relative_name_normalises() -> None:
    assert check_relative_name("a//b/./c.pt") == "a/b/c.pt"
    assert check_relative_name("a\\b.pt") == "a/b.pt"


def test_annotated_paths(fp: FolderPaths) -> None:
    assert fp.annotated_path("img.png") == Path(fp.input_dir) / "img.png"
    assert fp.annotated_path("sub/img.png [output]") == Path(fp.output_dir) / "sub" / "img.png"
    assert fp.annotated_path("t.png [temp]", "output") == Path(fp.temp_dir) / "t.png"
    with pytest.raises(UnsafePathError):
        fp.annotated_path("../x.png [output]")
