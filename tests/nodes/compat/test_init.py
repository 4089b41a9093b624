"""Installing ComfyUI's import names, binding the facades to a server, and the start-up loader."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import nodes
from graph.registry import NodeRegistry
from nodes.compat import (
    bind_server,
    install_compat_modules,
    load_custom_nodes,
    plugin_paths,
    uninstall_compat_modules,
)
from nodes.folders import FolderPaths


def test_comfyui_names_import_as_our_modules(compat: None) -> None:
    import comfy.model_management  # noqa: PLC0415
    import comfy.utils  # noqa: PLC0415
    import folder_paths  # noqa: PLC0415
    from comfy.comfy_types import IO  # noqa: PLC0415
    from comfy.comfy_types.node_typing import ComfyNodeABC  # noqa: PLC0415
    from comfy_execution.graph import DynamicPrompt, ExecutionBlocker  # noqa: PLC0415
    from comfy_execution.graph_utils import GraphBuilder  # noqa: PLC0415
    from server import PromptServer  # noqa: PLC0415

    import nodes.compat.comfy.utils as real_utils  # noqa: PLC0415
    from graph.dynamic_prompt import DynamicPrompt as engine_dynprompt  # noqa: PLC0415
    from graph.nodedef import ExecutionBlocker as engine_blocker  # noqa: PLC0415
    from nodes.compat.comfy_execution import graph_utils  # noqa: PLC0415
    from nodes.compat.server import PromptServer as facade  # noqa: PLC0415

    assert comfy.utils is real_utils and real_utils.__spec__.name == "nodes.compat.comfy.utils"
    assert folder_paths.__name__ == "nodes.compat.folder_paths"
    assert comfy.model_management.__name__ == "nodes.compat.comfy.model_management"
    assert GraphBuilder is graph_utils.GraphBuilder and ExecutionBlocker is engine_blocker
    assert DynamicPrompt is engine_dynprompt
    assert PromptServer is facade and IO.IMAGE == "IMAGE" and ComfyNodeABC.__name__ == "ComfyNodeABC"
    assert nodes.MAX_RESOLUTION == 16384


def test_missing_comfyui_parts_fail_with_their_name(compat: None) -> None:
    with pytest.raises(ModuleNotFoundError) as missing:
        import comfy.sd  # noqa: F401, PLC0415
    assert missing.value.name == "comfy.sd"
    with pytest.raises(ImportError):
        from comfy.utils import not_a_function  # noqa: F401, PLC0415


def test_install_is_idempotent_and_uninstall_removes_the_names() -> None:
    install_compat_modules()
    install_compat_modules()
    from nodes.compat import _CompatFinder  # noqa: PLC0415

    assert sum(isinstance(f, _CompatFinder) for f in sys.meta_path) == 1
    import folder_paths  # noqa: F401, PLC0415

    uninstall_compat_modules()
    assert "folder_paths" not in sys.modules
    assert not any(isinstance(f, _CompatFinder) for f in sys.meta_path)
    with pytest.raises(ModuleNotFoundError):
        import folder_paths  # noqa: F401, PLC0415, F811


def test_bind_server_connects_the_facades() -> None:
    from nodes.compat.comfy import model_management  # noqa: PLC0415
    from nodes.compat.server import PromptServer  # noqa: PLC0415

    sent, stopped = [], []
    bind_server(broadcast=lambda e, d, sid: sent.append(e), interrupt=lambda: stopped.append(True))
    try:
        PromptServer.instance.send_sync("hello", {})
        model_management.interrupt_current_processing()
        model_management.interrupt_current_processing(False)
    finally:
        bind_server()
    assert sent == ["hello"] and stopped == [True]
    PromptServer.instance.send_sync("nobody", {})
    assert sent == ["hello"]


def test_plugin_paths_include_extra_model_paths(tmp_path: Path) -> None:
    folders = FolderPaths(tmp_path / "base")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text("mine:\n  base_path: shared\n  custom_nodes: nodes_a\n")
    folders.load_extra_model_paths(config)
    assert plugin_paths(folders) == [str(tmp_path / "base" / "custom_nodes"), str(tmp_path / "shared" / "nodes_a")]


def test_load_custom_nodes_from_every_plugin_folder(tmp_path: Path) -> None:
    first, second = tmp_path / "custom_nodes", tmp_path / "more_nodes"
    (first / "alpha").mkdir(parents=True)
    (first / "alpha" / "__init__.py").write_text(
        "import folder_paths\n"
        "class Alpha:\n"
        "    RETURN_TYPES = ('STRING',)\n"
        "    FUNCTION = 'run'\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(cls):\n"
        "        return {'required': {}}\n"
        "    def run(self):\n"
        "        return (folder_paths.get_output_directory(),)\n"
        "NODE_CLASS_MAPPINGS = {'Alpha': Alpha}\n")
    (first / "alpha" / "prestartup_script.py").write_text("PREPARED = True\n")
    second.mkdir()
    (second / "beta.py").write_text("from graph.api import node, Int\n"
                                    "@node(outputs='INT')\n"
                                    "def Beta(value: int = Int(1)) -> int:\n"
                                    "    '''One.'''\n"
                                    "    return value\n")
    registry = NodeRegistry()
    try:
        report = load_custom_nodes(registry, paths=[str(first), str(second)], deny={"gamma"})
    finally:
        uninstall_compat_modules()
    assert [(p.name, p.status, p.nodes) for p in report.plugins] == [("alpha", "loaded", ["Alpha"]),
                                                                    ("beta", "loaded", ["Beta"])]
    assert [(r.name, r.error) for r in report.prestartup] == [("alpha", "")]
    assert registry.object_info()["Beta"]["python_module"] == "custom_nodes.beta"
