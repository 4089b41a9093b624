"""--whitelist-custom-nodes and --deny-custom-nodes reach the plugin loader that server.py runs at start-up."""
from __future__ import annotations

from pathlib import Path

import server
from graph.registry import NodeRegistry
from graph.server.options import parse_server_args
from nodes.folders import FolderPaths

FIXTURE = Path(__file__).resolve().parents[1] / "graph" / "plugins_fixture"


def load(tmp_path: Path, *flags: str) -> dict[str, str]:
    options = parse_server_args(list(flags), default_base=tmp_path)
    folders = FolderPaths(tmp_path)
    folders.add_model_folder_path("custom_nodes", str(FIXTURE), is_default=True)
    report = server.load_custom_nodes(NodeRegistry(), folders, options)
    return {p.name: p.status for p in report.plugins}


def test_deny_list_skips_the_named_plugins(tmp_path: Path) -> None:
    statuses = load(tmp_path, "--deny-custom-nodes", "good_pack", "v1_pack")
    assert statuses["good_pack"] == "disabled" and statuses["v1_pack"] == "disabled"
    assert statuses["raising_node"] == "loaded"


def test_allow_list_loads_only_the_named_plugins(tmp_path: Path) -> None:
    statuses = load(tmp_path, "--whitelist-custom-nodes", "good_pack")
    assert statuses["good_pack"] == "loaded"
    assert {s for name, s in statuses.items() if name != "good_pack"} <= {"disabled"}
    assert load(tmp_path, "--disable-all-custom-nodes", "--whitelist-custom-nodes", "good_pack")["good_pack"] == "loaded"
