"""Plugins in both styles load in isolation, show in /object_info and run through the executor.

The plugins are real folders under `plugins_fixture/`: a good diffloom-style pack, a ComfyUI V1
pack using lists, lazy inputs, expansion, IS_CHANGED, VALIDATE_INPUTS, async nodes, blockers,
routes and a web directory, and one plugin for each way of being broken.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from graph.executor import ExecutionResult, Executor
from graph.plugins import PluginReport, PluginStatus, discover_plugins, load_plugins, run_prestartup_scripts
from graph.registry import NodeRegistry
from nodes.compat import install_compat_modules, uninstall_compat_modules

from . import sample_nodes

FIXTURE = Path(__file__).resolve().parent / "plugins_fixture"
LOADED = {"good_pack", "v1_pack", "raising_node", "core_clash", "web_escape", "prestartup_pack",
          "broken_prestartup"}
FAILED = {"raises_on_import", "bad_v1_declaration", "bad_node_declaration", "raises_at_registration",
          "missing_requirement", "needs_comfy_sd", "future_api", "not_a_plugin", "syntax_error"}


@dataclass
class Loaded:
    registry: NodeRegistry
    report: PluginReport
    modules: dict[str, types.ModuleType]


def core_registry() -> NodeRegistry:
    """A registry holding the engine's sample nodes in the role of core nodes."""
    registry = NodeRegistry()
    registry.add_module(sample_nodes)
    return registry


def load(**kwargs: Any) -> Loaded:
    registry = core_registry()
    report = load_plugins([FIXTURE], registry, **kwargs)
    modules = {p.name: sys.modules[p.module_name] for p in report.loaded}
    return Loaded(registry, report, modules)


@pytest.fixture(scope="module", autouse=True)
def compat() -> Iterator[None]:
    install_compat_modules()
    yield
    uninstall_compat_modules()


@pytest.fixture(scope="module")
def loaded(compat: None) -> Loaded:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFLOOM_FIXTURE_PRESTARTUP", "pending")
        scripts = run_prestartup_scripts([FIXTURE])
        assert os.environ["DIFFLOOM_FIXTURE_PRESTARTUP"] == "ran"
    return load(prestartup=scripts)


def run(loaded: Loaded, prompt: dict[str, Any], executor: Executor | None = None,
        **kwargs: Any) -> tuple[ExecutionResult, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    executor = executor or Executor(loaded.registry)
    result = executor.execute(prompt, "p1", emit=lambda e, d: events.append((e, d)), **kwargs)
    return result, events


# ---- loading and the report --------------------------------------------------------------------------

def test_every_plugin_is_reported_with_its_status(loaded: Loaded) -> None:
    statuses = {p.name: p.status for p in loaded.report.plugins}
    assert statuses == {**{n: "loaded" for n in LOADED}, **{n: "failed" for n in FAILED}}
    # hidden, .disabled, README.md and __pycache__ entries are not plugins at all
    assert not {"skipped", "skipped.disabled", ".hidden_pack", "README"} & set(statuses)
    assert "custom_nodes.skipped" not in sys.modules


def test_failures_name_the_cause(loaded: Loaded) -> None:
    causes = {p.name: p.cause for p in loaded.report.failed}
    assert causes["raises_on_import"].startswith("import raised RuntimeError: the pack is broken on purpose")
    assert "raises_on_import/__init__.py:2" in causes["raises_on_import"]
    assert causes["bad_v1_declaration"] == ("bad node declaration: BadPackBroken: RETURN_TYPES must be a tuple "
                                            "of type names, got 'IMAGE'")
    assert "node NoSpec: parameter 'value' needs a spec" in causes["bad_node_declaration"]
    assert causes["raises_at_registration"] == ("bad node declaration: NeedsConfig: INPUT_TYPES() raised "
                                                "KeyError: 'default'")
    assert causes["missing_requirement"].startswith("missing requirement: diffloom_fixture_missing_dependency")
    assert "never installs" in causes["missing_requirement"]
    assert loaded.report.get("missing_requirement").missing_requirements == ["diffloom-fixture-missing-dependency"]
    assert causes["needs_comfy_sd"].startswith("needs ComfyUI module 'comfy.sd', which diffloom does not provide")
    assert causes["future_api"].startswith("written for diffloom plugin API 2.0; this diffloom provides API 1.0")
    assert causes["not_a_plugin"] == "not a plugin: the folder has no __init__.py"
    assert causes["syntax_error"].startswith("import raised SyntaxError: ")
    assert causes["syntax_error"].endswith("plugins_fixture/syntax_error.py:2)")
    assert "RuntimeError" in loaded.report.get("raises_on_import").traceback


def test_failed_plugins_register_nothing_and_leave_no_module(loaded: Loaded) -> None:
    for name in ("BadPackFine", "BadPackBroken", "NeedsConfig", "NoSpec", "FromTheFuture"):
        assert name not in loaded.registry
    for plugin in FAILED:
        assert f"custom_nodes.{plugin}" not in sys.modules


def test_loaded_plugins_list_their_nodes_and_style(loaded: Loaded) -> None:
    good = loaded.report.get("good_pack")
    assert good.style == "diffloom" and good.warnings == [] and good.missing_requirements == []
    assert set(good.nodes) == {"GoodGreet", "GoodShow", "GoodReadFile", "GoodCount", "Shout"}
    assert loaded.report.get("v1_pack").style == "comfyui-v1"
    assert loaded.report.get("raising_node").style == "diffloom+comfyui-v1"
    assert all(p.seconds >= 0 for p in loaded.report.plugins)
    assert loaded.registry.origin("Shout") == "custom_nodes.good_pack"


def test_a_plugin_cannot_replace_a_core_node(loaded: Loaded) -> None:
    clash = loaded.report.get("core_clash")
    assert clash.status == "loaded" and clash.nodes == ["ClashFree"]
    assert clash.warnings == ["node 'Number' was not registered: a core node (tests.graph.sample_nodes) already "
                              "has that name, and plugins cannot replace existing nodes"]
    assert loaded.registry["Number"] is sample_nodes.Number
    result, _ = run(loaded, {"1": {"class_type": "Number", "inputs": {"value": 4}},
                             "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}})
    assert result.outputs["2"]["text"] == ["4"]


def test_a_second_plugin_folder_cannot_reuse_a_name(loaded: Loaded, tmp_path: Path) -> None:
    (tmp_path / "good_pack").mkdir()
    (tmp_path / "good_pack" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    found = discover_plugins([FIXTURE, tmp_path, FIXTURE])
    refused = [f for f in found if isinstance(f, PluginStatus) and f.name == "good_pack"]
    assert len(refused) == 1 and refused[0].status == "failed" and refused[0].path == str(tmp_path / "good_pack")
    assert refused[0].cause == f"a plugin named 'good_pack' was already loaded from {FIXTURE / 'good_pack'}"
    # the repeated folder is read once
    assert sum(getattr(f, "name", "") == "v1_pack" for f in found) == 1


def test_object_info_shows_plugin_nodes(loaded: Loaded) -> None:
    info = json.loads(json.dumps(loaded.registry.object_info()))
    assert info["Shout"]["python_module"] == "custom_nodes.good_pack"
    assert info["Shout"]["display_name"] == "Shout it"
    assert info["GoodReadFile"]["input"]["required"]["path"] == ["STRING", {"default": ""}]
    number = info["V1Number"]
    assert number["python_module"] == "custom_nodes.v1_pack" and number["display_name"] == "Number (V1)"
    assert number["input"]["required"]["value"] == ["INT", {"default": 1, "min": 0, "max": 16384}]
    assert number["output"] == ["INT"] and number["output_name"] == ["number"]
    assert number["output_tooltips"] == ["the number you typed"] and number["description"] == "A number"
    assert info["V1SplitWords"]["output_is_list"] == [True]
    assert info["V1LazySwitch"]["input"]["required"]["a"][1]["lazy"] is True
    assert info["V1ShowText"]["output_node"] is True
    assert info["V1ShowText"]["input"]["hidden"] == {"unique_id": "UNIQUE_ID", "prompt": "PROMPT",
                                                     "extra_pnginfo": "EXTRA_PNGINFO"}


def test_every_v1_class_attribute_is_read(loaded: Loaded) -> None:
    info = loaded.registry.object_info()["V1Everything"]
    assert info["category"] == "v1_pack/all" and info["description"] == "All the attributes"
    assert info["output"] == ["INT", "STRING"] and info["output_name"] == ["count", "label"]
    assert info["output_tooltips"] == ["calls so far", "the label"] and info["output_is_list"] == [False, False]
    assert info["deprecated"] is True and info["experimental"] is True
    assert info["search_aliases"] == ["everything", "all attributes"]
    assert info["input"]["required"]["mode"] == [["a", "b"], {"default": "a"}]
    assert info["input"]["optional"]["extra"] == ["INT", {"default": 1, "min": 0, "max": 9, "display": "slider"}]
    assert info["input_order"] == {"required": ["label", "mode"], "optional": ["extra"]}
    # NOT_IDEMPOTENT: the same node under another id runs again instead of coming from the cache
    executor = Executor(loaded.registry)
    calls = loaded.modules["v1_pack"].CALLS
    before = calls.count("V1Everything")
    for node_id in ("1", "2", "2"):
        result, _ = run(loaded, {node_id: {"class_type": "V1Everything", "inputs": {"label": "l", "mode": "b"}},
                                 "9": {"class_type": "V1ShowText", "inputs": {"value": [node_id, 1]}}}, executor)
        assert result.outputs["9"]["text"] == ["l-b-1"]
    assert calls.count("V1Everything") - before == 2


def test_report_json_and_timings(loaded: Loaded, caplog: pytest.LogCaptureFixture) -> None:
    data = json.loads(json.dumps(loaded.report.to_json()))
    assert data["api_version"] == "1.0"
    assert set(data["failed"]) == FAILED
    entry = next(p for p in data["plugins"] if p["name"] == "raises_on_import")
    assert entry["status"] == "failed" and "RuntimeError" in entry["traceback"]
    assert {r["name"]: r["error"] for r in data["prestartup"]} == {
        "broken_prestartup": "OSError: prestartup could not prepare its cache", "prestartup_pack": ""}
    lines = loaded.report.timing_lines()
    assert len(lines) == len(LOADED) + len(FAILED)
    assert [float(line.split()[0]) for line in lines] == sorted(float(line.split()[0]) for line in lines)
    assert sum("(IMPORT FAILED)" in line for line in lines) == len(FAILED)
    with caplog.at_level(logging.INFO, logger="graph.plugins"):
        load()
    text = caplog.text
    assert "plugin raises_on_import" in text and "the pack is broken on purpose" in text
    assert "Import times for plugins:" in text


def test_web_directories_are_confined_to_the_plugin(loaded: Loaded) -> None:
    assert loaded.report.web_directories() == {"good_pack": FIXTURE / "good_pack" / "web",
                                               "v1_pack": FIXTURE / "v1_pack" / "js"}
    assert loaded.report.extension_scripts() == ["/extensions/good_pack/good.js", "/extensions/v1_pack/v1_pack.js"]
    escape = loaded.report.get("web_escape")
    assert escape.status == "loaded" and escape.web_dir is None
    assert "leads outside the plugin folder" in escape.warnings[0]


def test_plugins_import_as_custom_nodes_modules(loaded: Loaded) -> None:
    import custom_nodes.good_pack  # noqa: PLC0415 - the loader's module name is importable

    assert custom_nodes.good_pack.__name__ == "custom_nodes.good_pack"
    assert sys.modules["custom_nodes.v1_pack.lists"].V1Upper.__module__ == "custom_nodes.v1_pack.lists"
    assert loaded.modules["v1_pack"].V1Number.RELATIVE_PYTHON_MODULE == "custom_nodes.v1_pack"


# ---- allow, deny, disabled -----------------------------------------------------------------------------

def test_allow_list_loads_only_the_named_plugins() -> None:
    result = load(allow={"good_pack"})
    assert [p.name for p in result.report.loaded] == ["good_pack"]
    assert {p.cause for p in result.report.disabled} == {"not in the allow list"}
    assert "V1Number" not in result.registry and "GoodGreet" in result.registry


def test_deny_list_skips_the_named_plugins() -> None:
    result = load(deny={"v1_pack", "raises_on_import"})
    assert {p.name: p.cause for p in result.report.disabled} == {"v1_pack": "in the deny list",
                                                                 "raises_on_import": "in the deny list"}
    assert "V1Number" not in result.registry and "GoodGreet" in result.registry


def test_disable_all_loads_nothing_unless_allowed() -> None:
    none = load(disabled=True)
    assert none.report.loaded == [] and none.report.failed == []
    assert len(none.registry) == len(core_registry())
    assert {p.cause for p in none.report.disabled} == {"all plugins are disabled (--disable-all-custom-nodes)"}
    some = load(disabled=True, allow={"raising_node"})
    assert [p.name for p in some.report.loaded] == ["raising_node"]


def test_v1_plugins_need_the_compat_modules_and_say_so() -> None:
    uninstall_compat_modules()
    try:
        result = load(allow={"v1_pack", "good_pack"})
    finally:
        install_compat_modules()
    v1 = result.report.get("v1_pack")
    assert v1.status == "failed"
    assert v1.cause.startswith("needs ComfyUI module 'comfy', which diffloom does not provide")
    assert result.report.get("good_pack").status == "loaded"


def test_reloading_gives_fresh_plugin_modules(loaded: Loaded) -> None:
    again = load(allow={"good_pack"})
    assert again.modules["good_pack"] is not loaded.modules["good_pack"]
    assert again.registry["GoodGreet"] is not loaded.registry["GoodGreet"]


# ---- running diffloom-style plugin nodes ----------------------------------------------------------------

def test_good_pack_nodes_run(loaded: Loaded) -> None:
    prompt = {"1": {"class_type": "GoodGreet", "inputs": {"name": "plugins"}},
              "2": {"class_type": "Shout", "inputs": {"text": ["1", 0]}},
              "3": {"class_type": "GoodShow", "inputs": {"text": ["2", 0]}},
              "4": {"class_type": "GoodCount", "inputs": {"steps": 3}},
              "5": {"class_type": "Show", "inputs": {"value": ["4", 0]}}}
    result, events = run(loaded, prompt)
    assert result.ok, result.error
    assert result.outputs["3"] == {"text": ["HELLO PLUGINS!"]}
    assert result.outputs["5"]["text"] == ["3"]
    progress = [(d["value"], d["max"], d["node"]) for e, d in events if e == "progress"]
    assert progress == [(1, 3, "4"), (2, 3, "4"), (3, 3, "4")]
    assert ("good_pack.counted", {"steps": 3}) in events


def test_file_node_reruns_only_when_the_file_changes(loaded: Loaded, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("first", encoding="utf-8")
    prompt = {"1": {"class_type": "GoodReadFile", "inputs": {"path": str(note)}},
              "2": {"class_type": "GoodShow", "inputs": {"text": ["1", 0]}}}
    reads = loaded.modules["good_pack"].READS
    executor = Executor(loaded.registry)
    first, _ = run(loaded, prompt, executor)
    second, _ = run(loaded, prompt, executor)
    note.write_text("second", encoding="utf-8")
    third, _ = run(loaded, prompt, executor)
    assert [r.outputs["2"]["text"] for r in (first, second, third)] == [["first"], ["first"], ["second"]]
    assert second.executed == [] and sorted(second.cached) == ["1", "2"]
    assert reads.count(str(note)) == 2


def test_a_raising_plugin_node_fails_its_prompt_with_the_plugin_named(loaded: Loaded) -> None:
    executor = Executor(loaded.registry)
    for class_type, message in (("ExplodingNode", "exploded on 5"), ("V1Exploding", "V1 node divided 5 by zero")):
        result, events = run(loaded, {"1": {"class_type": "Number", "inputs": {"value": 5}},
                                      "2": {"class_type": class_type, "inputs": {"value": ["1", 0]}},
                                      "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}, executor)
        assert result.status == "error"
        assert result.error["plugin"] == "raising_node" and result.error["node_id"] == "2"
        assert result.error["exception_message"] == f"[plugin raising_node] {message}"
        assert [e for e, _ in events].count("execution_error") == 1
    # the same executor goes on serving
    ok, _ = run(loaded, {"1": {"class_type": "GoodGreet", "inputs": {"name": "again"}},
                         "2": {"class_type": "GoodShow", "inputs": {"text": ["1", 0]}}}, executor)
    assert ok.ok and ok.outputs["2"] == {"text": ["hello again"]}


# ---- running the ComfyUI V1 plugin ---------------------------------------------------------------------

def test_v1_list_mapping(loaded: Loaded) -> None:
    upper = loaded.modules["v1_pack"].V1Upper
    before = upper.CALLS
    result, _ = run(loaded, {"1": {"class_type": "V1SplitWords", "inputs": {"text": "a bb ccc"}},
                             "2": {"class_type": "V1Upper", "inputs": {"word": ["1", 0]}},
                             "3": {"class_type": "V1JoinWords", "inputs": {"words": ["2", 0], "sep": "+"}},
                             "4": {"class_type": "V1ShowText", "inputs": {"value": ["3", 0]}}})
    assert result.ok, result.error
    assert result.outputs["4"]["text"] == ["A+BB+CCC"]
    assert upper.CALLS - before == 3


def test_v1_lazy_input_skips_the_unused_branch(loaded: Loaded) -> None:
    runs = loaded.modules["raising_node"].RUNS
    before = list(runs)
    prompt = {"1": {"class_type": "V1Number", "inputs": {"value": 7}},
              "2": {"class_type": "V1Exploding", "inputs": {"value": ["1", 0]}},
              "3": {"class_type": "V1LazySwitch", "inputs": {"use_b": False, "a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "V1ShowText", "inputs": {"value": ["3", 0]}}}
    result, _ = run(loaded, prompt)
    assert result.ok, result.error
    assert result.outputs["4"]["text"] == ["7"] and runs == before
    prompt["3"]["inputs"]["use_b"] = True
    failed, _ = run(loaded, prompt)
    assert failed.status == "error" and failed.error["node_id"] == "2" and runs == [*before, "V1Exploding"]


def test_v1_node_expansion_with_graph_builder(loaded: Loaded) -> None:
    result, events = run(loaded, {"1": {"class_type": "V1Number", "inputs": {"value": 6}},
                                  "2": {"class_type": "V1Multiply", "inputs": {"value": ["1", 0], "times": 4}},
                                  "3": {"class_type": "V1ShowText", "inputs": {"value": ["2", 0]}}})
    assert result.ok, result.error
    assert result.outputs["3"]["text"] == ["24"]
    children = [n for n in result.executed if n.startswith("2.")]
    assert sorted(children) == ["2.0.0.1", "2.0.0.2", "2.0.0.3", "2.0.0.4", "2.0.0.5"]
    shown = [d for e, d in events if e == "executing" and d["node"] in children]
    assert shown and all(d["display_node"] == "2" for d in shown)


def test_v1_is_changed_controls_the_cache(loaded: Loaded) -> None:
    module = loaded.modules["v1_pack"]
    prompt = {"1": {"class_type": "V1Token", "inputs": {"label": "x"}},
              "2": {"class_type": "V1ShowText", "inputs": {"value": ["1", 0]}}}
    executor = Executor(loaded.registry)
    module.CHANGES["token"] = 10
    first, _ = run(loaded, prompt, executor)
    calls = module.CALLS.count("V1Token")
    second, _ = run(loaded, prompt, executor)
    assert module.CALLS.count("V1Token") == calls and second.executed == []
    module.CHANGES["token"] = 11
    third, _ = run(loaded, prompt, executor)
    assert module.CALLS.count("V1Token") == calls + 1
    assert [r.outputs["2"]["text"] for r in (first, third)] == [["10"], ["11"]]


def test_v1_validate_inputs(loaded: Loaded) -> None:
    prompt = {"1": {"class_type": "V1Even", "inputs": {"value": 3}},
              "2": {"class_type": "V1ShowText", "inputs": {"value": ["1", 0]}}}
    result, _ = run(loaded, prompt)
    assert result.status == "invalid"
    assert "value must be even, got 3" in json.dumps(result.error)
    prompt["1"]["inputs"]["value"] = 4
    ok, _ = run(loaded, prompt)
    assert ok.ok and ok.outputs["2"]["text"] == ["4"]


def test_v1_async_nodes_overlap(loaded: Loaded) -> None:
    log = loaded.modules["v1_pack"].ASYNC_LOG
    log.clear()
    result, _ = run(loaded, {"1": {"class_type": "V1Sleep", "inputs": {"value": 1, "seconds": 0.2}},
                             "2": {"class_type": "V1Sleep", "inputs": {"value": 2, "seconds": 0.2}},
                             "3": {"class_type": "V1Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
                             "4": {"class_type": "V1ShowText", "inputs": {"value": ["3", 0]}}})
    assert result.ok, result.error
    assert result.outputs["4"]["text"] == ["3"]
    starts = [t for _, kind, t in log if kind == "start"]
    ends = [t for _, kind, t in log if kind == "end"]
    assert len(starts) == 2 and max(starts) < min(ends), "the second sleep started only after the first ended"


def test_v1_execution_blocker(loaded: Loaded) -> None:
    prompt = {"1": {"class_type": "V1Number", "inputs": {"value": 2}},
              "2": {"class_type": "V1Gate", "inputs": {"value": ["1", 0], "block": True, "message": ""}},
              "3": {"class_type": "V1ShowText", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "V1ShowText", "inputs": {"value": ["1", 0]}}}
    silent, events = run(loaded, prompt)
    assert silent.ok and "3" not in silent.outputs and silent.outputs["4"]["text"] == ["2"]
    assert not any(e == "execution_error" for e, _ in events)
    prompt["2"]["inputs"]["message"] = "gate closed"
    loud, events = run(loaded, prompt)
    errors = [d for e, d in events if e == "execution_error"]
    assert loud.ok and len(errors) == 1
    assert errors[0]["exception_type"] == "ExecutionBlocked" and errors[0]["exception_message"] == "gate closed"
    prompt["2"]["inputs"]["block"] = False
    passed, _ = run(loaded, prompt)
    assert passed.outputs["3"]["text"] == ["2"]


def test_v1_hidden_inputs_progress_and_send_sync(loaded: Loaded) -> None:
    prompt = {"7": {"class_type": "V1Progress", "inputs": {"steps": 2, "delay": 0.0}},
              "8": {"class_type": "V1ShowText", "inputs": {"value": ["7", 0]}}}
    result, events = run(loaded, prompt, extra_data={"extra_pnginfo": {"workflow": {}}, "client_id": "c1"})
    assert result.ok, result.error
    assert result.outputs["8"] == {"text": ["2"], "workflow_seen": [True]}
    assert [(d["value"], d["max"], d["node"]) for e, d in events if e == "progress"] == [(1, 2, "7"), (2, 2, "7")]
    assert ("v1_pack.shown", {"node": "8", "text": "2", "nodes_in_prompt": 2}) in events


def test_v1_routes_mount_bare_and_under_api(loaded: Loaded) -> None:
    from nodes.compat.server import PromptServer, mount_routes  # noqa: PLC0415

    app = web.Application()
    problems = mount_routes(app)
    assert problems == []
    paths = {r.resource.canonical for r in app.router.routes() if r.method == "GET"}
    assert {"/v1_pack/ping", "/api/v1_pack/ping"} <= paths
    # the plugin was imported more than once in this process: its latest handler is the one mounted
    handler = next(r.handler for r in app.router.routes() if r.resource.canonical == "/v1_pack/ping")
    latest = [r for r in PromptServer.instance.routes if getattr(r, "path", "") == "/v1_pack/ping"][-1]
    assert handler is latest.handler
