"""`folder_paths`: ComfyUI's module-level folder functions over diffloom's FolderPaths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.compat import folder_paths
from nodes.folders import FolderPaths, UnsafePathError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_module_directories_follow_the_configured_folders(folders: FolderPaths) -> None:
    assert folder_paths.base_path == folders.base_dir
    assert folder_paths.models_dir == folders.models_dir
    assert folder_paths.output_directory == folders.output_dir == folder_paths.get_output_directory()
    assert folder_paths.input_directory == folders.input_dir == folder_paths.get_input_directory()
    assert folder_paths.temp_directory == folders.temp_dir == folder_paths.get_temp_directory()
    assert folder_paths.get_user_directory() == folders.user_dir
    assert folder_paths.get_directory_by_type("output") == folders.output_dir
    assert folder_paths.get_directory_by_type("elsewhere") is None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = folder_paths.nope


def test_model_lookup(folders: FolderPaths) -> None:
    lora = touch(Path(folders.models_dir) / "loras" / "style" / "ink.safetensors")
    touch(Path(folders.models_dir) / "loras" / "notes.txt")
    assert folder_paths.get_filename_list("loras") == ["style/ink.safetensors"]
    assert folder_paths.get_full_path("loras", "style/ink.safetensors") == str(lora)
    assert folder_paths.get_full_path("loras", "missing.safetensors") is None
    with pytest.raises(FileNotFoundError, match="'missing.safetensors' not found in"):
        folder_paths.get_full_path_or_raise("loras", "missing.safetensors")
    with pytest.raises(UnsafePathError):
        folder_paths.get_full_path("loras", "../../secret.safetensors")
    assert folder_paths.get_folder_paths("unet") == folders.get_folder_paths("diffusion_models")
    assert folder_paths.map_legacy("clip") == "text_encoders" and folder_paths.map_legacy("vae") == "vae"
    with pytest.raises(KeyError):
        folder_paths.get_filename_list("no_such_kind")


def test_plugins_add_folders(folders: FolderPaths, tmp_path: Path) -> None:
    extra = tmp_path / "shared_ipadapters"
    touch(extra / "face.bin")
    folder_paths.add_model_folder_path("ipadapter", str(extra))
    assert folder_paths.get_filename_list("ipadapter") == ["face.bin"]
    assert "ipadapter" in folder_paths.folder_names_and_paths
    # the dict-style registration plugins use, with their own extensions
    other = tmp_path / "detectors"
    touch(other / "yolo.onnx")
    touch(other / "readme.md")
    folder_paths.folder_names_and_paths["detectors"] = ([str(other)], {".onnx"})
    assert folder_paths.get_filename_list("detectors") == ["yolo.onnx"]
    paths, exts = folder_paths.folder_names_and_paths["detectors"]
    assert paths == [str(other)] and exts == {".onnx"}
    # appending to the returned list adds the folder too
    more = tmp_path / "more_loras"
    touch(more / "extra.safetensors")
    folder_paths.folder_names_and_paths["loras"][0].append(str(more))
    assert "extra.safetensors" in folder_paths.get_filename_list("loras")
    assert ".safetensors" in folder_paths.folder_names_and_paths["loras"][1]
    assert ".safetensors" in folder_paths.supported_pt_extensions
    assert "checkpoints" in list(folder_paths.folder_names_and_paths)


def test_annotated_paths(folders: FolderPaths) -> None:
    touch(Path(folders.input_dir) / "cat.png")
    touch(Path(folders.output_dir) / "sub" / "dog.png")
    assert folder_paths.get_annotated_filepath("cat.png") == os.path.join(folders.input_dir, "cat.png")
    assert folder_paths.get_annotated_filepath("sub/dog.png [output]") == os.path.join(folders.output_dir, "sub", "dog.png")
    assert folder_paths.annotated_filepath("x.png [temp]") == ("x.png", folders.temp_dir)
    assert folder_paths.annotated_filepath("x.png") == ("x.png", None)
    assert folder_paths.exists_annotated_filepath("cat.png")
    assert not folder_paths.exists_annotated_filepath("dog.png")
    assert not folder_paths.exists_annotated_filepath("../../etc/passwd")
    with pytest.raises(UnsafePathError):
        folder_paths.get_annotated_filepath("../escape.png [output]")


def test_save_image_path_counts_existing_files(folders: FolderPaths) -> None:
    out = folders.output_dir
    folder, name, counter, sub, prefix = folder_paths.get_save_image_path("shots/run_%width%", out, 64, 32)
    assert (folder, name, counter, sub, prefix) == (os.path.join(out, "shots"), "run_64", 1, "shots", "shots/run_64")
    assert os.path.isdir(folder)
    touch(Path(folder) / "run_64_00001_.png")
    touch(Path(folder) / "run_64_00007_.png")
    touch(Path(folder) / "other_00050_.png")
    assert folder_paths.get_save_image_path("shots/run_%width%", out, 64, 32)[2] == 8
    assert folder_paths.get_save_image_path("ComfyUI", out)[:4] == (out, "ComfyUI", 1, "")
    with pytest.raises(UnsafePathError, match="outside the output folder"):
        folder_paths.get_save_image_path("../../escape", out)


def test_listing_helpers(tmp_path: Path) -> None:
    touch(tmp_path / "a.safetensors")
    touch(tmp_path / "skip" / "b.safetensors")
    touch(tmp_path / "keep" / "c.ckpt")
    touch(tmp_path / ".hidden")
    files, dirs = folder_paths.recursive_search(str(tmp_path), excluded_dir_names=["skip"])
    assert files == ["a.safetensors", "keep/c.ckpt"]
    assert set(dirs) == {str(tmp_path), str(tmp_path / "keep")}
    assert folder_paths.filter_files_extensions(["x.PT", "y.txt", "z.ckpt"], [".pt", ".ckpt"]) == ["x.PT", "z.ckpt"]
    assert folder_paths.filter_files_extensions(["b", "a"], []) == ["a", "b"]
    assert folder_paths.recursive_search(str(tmp_path / "none")) == ([], {})


def test_import_name_is_the_same_module(compat: None, folders: FolderPaths) -> None:
    import folder_paths as plugin_view  # noqa: PLC0415 - the name plugins import

    assert plugin_view is folder_paths
    assert plugin_view.models_dir == folders.models_dir
