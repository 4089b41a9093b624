"""Run the real diffloom server for the editor tests.

    python tests/web/editor_server.py --workflows-dir DIR [--tiny-checkpoint sd1] [server.py flags]

This is `server.py` itself (its main, its app factory, its nodes). The additions: the `workflows/`
listing of graph.server.routes_workflows, mounted on the app when the app factory does not mount it
yet, and a tiny random-weight checkpoint written into the base directory's models/checkpoints first
(in this process, which imports torch for the server anyway).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import server  # noqa: E402  (the repository's server.py)
from graph.server.routes_workflows import add_workflow_routes  # noqa: E402


def main(argv: list[str]) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--workflows-dir", type=Path, required=True)
    extra.add_argument("--tiny-checkpoint", default=None, help="family of a tiny checkpoint to write first")
    extra.add_argument("--base-directory", type=Path, default=ROOT)
    ours, rest = extra.parse_known_args(argv)
    rest += ["--base-directory", str(ours.base_directory)]
    if ours.tiny_checkpoint:
        from nodes.models.tiny import write_tiny_checkpoint  # noqa: PLC0415

        write_tiny_checkpoint(ours.base_directory / "models" / "checkpoints", ours.tiny_checkpoint)
    create_app = server.create_app

    def create_app_with_workflows(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        mounted = {getattr(route.resource, "canonical", "") for route in app.router.routes()}
        if "/api/workflows" not in mounted:
            add_workflow_routes(app, ours.workflows_dir)
        return app

    server.create_app = create_app_with_workflows
    return server.main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
