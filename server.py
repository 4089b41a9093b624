#!/usr/bin/env python
"""diffloom's door.

    python server.py [flags]                      serve the editor and ComfyUI's API (see --help)
    python server.py run WORKFLOW.json [options]  run one workflow headless (see run --help)

This file wires the torch side (devices, model folders, models, built-in nodes, plugins) to the
torch-free server in `graph.server` and the runner in `graph.runner`.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import sys
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Spinning OpenMP threads make small models ~30x slower on shared cores.
os.environ.setdefault("GOMP_SPINCOUNT", "0")

from graph.registry import NodeRegistry  # noqa: E402
from graph.server import ServerOptions, ServerRuntime, create_app, parse_server_args, serve  # noqa: E402
# ComfyUI plugins write `from server import PromptServer`; a process that imported this file as
# `server` must give them the facade too.
from nodes.compat.server import PromptServer  # noqa: E402, F401

log = logging.getLogger("diffloom")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def import_node_module(spec: str) -> ModuleType:
    """A module by dotted name, or a .py file by path (the hidden --extra-nodes flag)."""
    if spec.endswith(".py") or os.sep in spec:
        path = Path(spec).resolve()
        name = f"diffloom_extra_nodes.{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"--extra-nodes {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def register_module(registry: NodeRegistry, module: ModuleType) -> int:
    """Register a module's @node functions and its ComfyUI NODE_CLASS_MAPPINGS, if any."""
    count = len(registry.add_module(module))
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if isinstance(mappings, dict):
        count += len(registry.add_v1(mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None),
                                     python_module=module.__name__))
    return count


def load_custom_nodes(registry: NodeRegistry, folders: Any, options: ServerOptions) -> Any:
    """Plugins from custom_nodes/ (each isolated; a broken one is reported, never fatal)."""
    from nodes.compat import load_custom_nodes as load_plugins  # noqa: PLC0415

    allow = set(options.whitelist_custom_nodes) if options.whitelist_custom_nodes is not None else None
    return load_plugins(registry, folders=folders, disabled=options.disable_all_custom_nodes, allow=allow,
                        deny=set(options.deny_custom_nodes))


def build_folders(options: ServerOptions) -> Any:
    """The model and data folders (nodes.folders.FolderPaths), extra_model_paths.yaml included."""
    from nodes.folders import FolderPaths  # noqa: PLC0415

    folders = FolderPaths(options.base_directory, input_dir=options.input_dir, output_dir=options.output_dir,
                          temp_dir=options.temp_dir, user_dir=options.user_dir, create_dirs=True)
    configs = list(options.extra_model_paths_config)
    default_config = options.base_directory / "extra_model_paths.yaml"
    if default_config.is_file() and default_config not in configs:
        configs.insert(0, default_config)
    for config in configs:
        folders.load_extra_model_paths(config)
    return folders


def build_runtime(options: ServerOptions) -> tuple[NodeRegistry, Any, ServerRuntime, Any]:
    """(registry, folders, runtime, plugin report): devices, folders, nodes, plugins and extra node modules."""
    from nodes import runtime as node_runtime  # noqa: PLC0415

    folders = build_folders(options)
    rt = node_runtime.configure(folders, write_metadata=not options.disable_metadata,
                                preview_method=options.preview_method, preview_max_size=options.preview_size)
    registry = NodeRegistry()
    runtime = ServerRuntime()
    if not options.skip_builtin_nodes:
        import nodes  # noqa: PLC0415

        runtime = model_runtime(options, rt)
        nodes.register_builtin_nodes(registry)
    report = load_custom_nodes(registry, folders, options)
    for spec in options.extra_nodes:
        register_module(registry, import_node_module(spec))
    return registry, folders, runtime, report


def setup_for_runner(options: ServerOptions) -> tuple[NodeRegistry, Any, ServerRuntime]:
    registry, folders, runtime, _report = build_runtime(options)
    return registry, folders, runtime


def model_runtime(options: ServerOptions, rt: Any) -> ServerRuntime:
    """The torch side the server reports on and frees: device, model manager, library versions."""
    from nodes import device, runtime as node_runtime  # noqa: PLC0415

    device.configure(cpu=options.cpu)

    def free_models(unload_models: bool, free_memory: bool) -> None:
        rt.models.free(unload_all=unload_models)

    def devices() -> list[dict[str, Any]]:
        policy, memory = device.policy(), device.memory_stats()
        return [{"name": str(policy.device), "type": policy.device.type, "index": policy.device.index or 0,
                 "vram_total": memory["total"], "vram_free": memory["free"],
                 "torch_vram_total": memory["torch_total"], "torch_vram_free": memory["torch_free"],
                 **policy.describe()}]

    def system_info() -> dict[str, Any]:
        import torch  # noqa: PLC0415

        # From the installed metadata: importing diffusers here would race the worker's warm-up for seconds.
        return {"pytorch_version": torch.__version__, "diffusers_version": version("diffusers"),
                "transformers_version": version("transformers")}

    return ServerRuntime(free_models=free_models, model_stats=lambda: rt.models.stats(), devices=devices,
                         system_info=system_info, on_out_of_memory=lambda: rt.models.on_out_of_memory(),
                         warm_up=node_runtime.import_model_libraries)


def run_server(argv: list[str]) -> int:
    options = parse_server_args(argv, default_base=ROOT)
    setup_logging(options.verbose)
    registry, folders, runtime, report = build_runtime(options)
    log.info("%d node types loaded", len(registry))
    if options.quick_test_for_ci:
        print(f"diffloom: {len(registry)} node types loaded; quick test done", flush=True)
        return 0
    # With --devices or --ray-address every worker builds its own nodes and models the same way.
    app = create_app(options, registry, folders, runtime=runtime, worker_setup="server:build_runtime")
    if not options.skip_builtin_nodes:
        from nodes.compat.server import attach_plugins  # noqa: PLC0415 - binds comfy's interrupt (torch)

        for problem in attach_plugins(app, report):
            log.warning("%s", problem)

    def ready(urls: list[str]) -> None:
        print(f"diffloom listening on {', '.join(urls)}", flush=True)

    asyncio.run(serve(app, options, on_ready=ready))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        from graph.runner import main as run_main  # noqa: PLC0415

        return run_main(argv[1:], setup=setup_for_runner, default_base=ROOT, prog="server.py run")
    return run_server(argv)


if __name__ == "__main__":
    sys.exit(main())
