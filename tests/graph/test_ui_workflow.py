"""UI ("workflow", litegraph) to API ("prompt") conversion, on hand-written UI files of versions 0.4 and 1."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph import ui_workflow
from graph.ui_workflow import (INTERNAL_ERROR_PREFIX, ConversionProblem, WorkflowConversionError,
                               convert_ui_to_api, is_api_prompt, is_ui_workflow, to_api)

DATA = Path(__file__).parent / "data" / "ui_workflows"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


NODE_INFO: dict[str, dict[str, Any]] = load("node_info.json")


def node(workflow: dict[str, Any], node_id: int) -> dict[str, Any]:
    return next(n for n in workflow["nodes"] if n["id"] == node_id)


def convert(workflow: dict[str, Any]) -> dict[str, Any]:
    return convert_ui_to_api(workflow, NODE_INFO)


def problems_of(workflow: Any) -> list[ConversionProblem]:
    with pytest.raises(WorkflowConversionError) as info:
        convert_ui_to_api(workflow, NODE_INFO)
    assert info.value.problems, "an error must list its problems"
    return info.value.problems


# --- the default txt2img graph ------------------------------------------------------------------------


def test_default_graph_v04_converts_to_the_contract_prompt() -> None:
    result = convert(load("txt2img_v04.json"))
    assert result == load("txt2img_api.json")
    assert list(result["5"]["inputs"]["model"]) == ["1", 0]
    json.dumps(result)  # plain JSON, ready for POST /prompt


def test_default_graph_v1_link_objects_native_reroutes_and_floating_links() -> None:
    workflow = load("txt2img_v1.json")
    assert any("parentId" in link for link in workflow["links"]) and workflow["floatingLinks"]
    assert convert(workflow) == load("txt2img_api.json")


def test_custom_title_becomes_meta_title() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 2)["title"] = "Positive prompt"
    assert convert(workflow)["2"]["_meta"] == {"title": "Positive prompt"}


@pytest.mark.parametrize("values", [
    [156680208700286, "randomize", 20, 8, "euler", "normal", 1],
    [156680208700286, "increment", 20, 8, "euler", "normal", 1],
    [156680208700286, True, 20, 8, "euler", "normal", 1],  # very old files: a boolean toggle
    [156680208700286, False, 20, 8, "euler", "normal", 1],
    [156680208700286, 20, 8, "euler", "normal", 1],  # saved without the control value
])
def test_control_after_generate_value_is_skipped_in_every_form(values: list[Any]) -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 5)["widgets_values"] = values
    assert convert(workflow)["5"]["inputs"] == load("txt2img_api.json")["5"]["inputs"]


def test_missing_widget_values_take_the_schema_defaults() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 4)["widgets_values"] = [768]
    del node(workflow, 7)["widgets_values"]
    result = convert(workflow)
    assert result["4"]["inputs"] == {"width": 768, "height": 512, "batch_size": 1}
    assert result["7"]["inputs"] == {"filename_prefix": "ComfyUI", "images": ["6", 0]}


def test_extra_trailing_widget_values_are_ignored() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 4)["widgets_values"] = [512, 512, 1, "left over"]
    assert convert(workflow)["4"]["inputs"] == {"width": 512, "height": 512, "batch_size": 1}


def test_list_literal_is_wrapped_so_it_does_not_read_as_a_link() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 3)["widgets_values"] = [["text", "watermark"]]
    assert convert(workflow)["3"]["inputs"]["text"] == {"__value__": ["text", "watermark"]}


# --- reroutes, primitives, muted, bypassed, converted widgets, notes ---------------------------------


def test_feature_graph_converts_exactly() -> None:
    assert convert(load("features_v04.json")) == load("features_api.json")


def test_reroute_chain_and_bypassed_lora_resolve_to_the_checkpoint() -> None:
    result = convert(load("features_v04.json"))
    # KSampler <- Reroute 11 <- Reroute 10 <- LoraLoader (bypassed, MODEL output 0 -> model input 0) <- checkpoint
    assert result["5"]["inputs"]["model"] == ["1", 0]
    assert result["13"]["inputs"]["model"] == ["1", 0]
    # CLIP output 1 of the bypassed LoRA passes its clip input through
    assert result["3"]["inputs"]["clip"] == ["1", 1]
    assert "2" not in result and not {"10", "11", "15"} & set(result)


def test_primitive_feeds_two_inputs_directly_and_through_a_reroute() -> None:
    result = convert(load("features_v04.json"))
    # both samplers hold stale seeds (999 and 7) in their own widgets; the primitive's value wins
    assert result["5"]["inputs"]["seed"] == 42
    assert result["13"]["inputs"]["seed"] == 42
    assert "12" not in result


def test_converted_widget_with_a_link_takes_the_link_and_keeps_the_other_values_aligned() -> None:
    inputs = convert(load("features_v04.json"))["5"]["inputs"]
    assert inputs["steps"] == ["14", 0]  # the stale widget value 30 is skipped, not shifted
    assert (inputs["cfg"], inputs["sampler_name"], inputs["scheduler"], inputs["denoise"]) == \
        (7.5, "dpmpp_2m", "karras", 1)


def test_dict_widgets_values_are_keyed_by_input_name() -> None:
    assert convert(load("features_v04.json"))["16"]["inputs"] == {"width": 640, "height": 448, "batch_size": 2}


def test_muted_node_is_dropped_and_its_consumer_loses_the_input() -> None:
    result = convert(load("features_v04.json"))
    assert "8" not in result
    assert result["9"] == {"class_type": "PreviewImage", "inputs": {}, "_meta": {"title": "Preview Image"}}


def test_muted_node_feeding_a_converted_widget_removes_that_input() -> None:
    workflow = load("features_v04.json")
    node(workflow, 14)["mode"] = 2
    inputs = convert(workflow)["5"]["inputs"]
    assert "steps" not in inputs  # as the editor does: validation then reports the missing input
    assert inputs["cfg"] == 7.5


def test_notes_are_ignored() -> None:
    result = convert(load("features_v04.json"))
    assert not {"17", "18"} & set(result)
    assert all(n["class_type"] not in ("Note", "MarkdownNote") for n in result.values())


def test_bypassed_node_rewires_by_type_not_by_index() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 5)["mode"] = 4  # KSampler: output 0 is LATENT; its LATENT input is #3, not #0
    result = convert(workflow)
    assert "5" not in result
    assert result["6"]["inputs"]["samples"] == ["4", 0]


def test_bypassed_node_without_a_matching_input_drops_the_consumer_input() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 6)["mode"] = 4  # VAEDecode: IMAGE output, LATENT and VAE inputs
    result = convert(workflow)
    assert result["7"]["inputs"] == {"filename_prefix": "ComfyUI"}


def test_chained_bypassed_nodes_are_all_skipped() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 5)["mode"] = 4
    workflow["nodes"].append({"id": 8, "type": "KSampler", "mode": 4,
                              "inputs": [{"name": "latent_image", "type": "LATENT", "link": 7}],
                              "outputs": [{"name": "LATENT", "type": "LATENT", "links": [10]}],
                              "widgets_values": [1, "fixed", 20, 8, "euler", "normal", 1]})
    workflow["links"][6] = [7, 5, 0, 8, 0, "LATENT"]
    workflow["links"].append([10, 8, 0, 6, 0, "LATENT"])
    node(workflow, 6)["inputs"][0]["link"] = 10
    assert convert(workflow)["6"]["inputs"]["samples"] == ["4", 0]


def test_muted_or_bypassed_nodes_of_unknown_types_are_not_errors() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 6)["type"] = "SomePluginDecode"
    node(workflow, 6)["mode"] = 2
    assert "6" not in convert(workflow)
    node(workflow, 6)["mode"] = 4
    assert convert(workflow)["7"]["inputs"] == {"filename_prefix": "ComfyUI"}


def test_long_reroute_chain_resolves_without_recursion() -> None:
    workflow = load("txt2img_v04.json")
    first, count = 100, 3000
    for i in range(count):
        workflow["nodes"].append({"id": first + i, "type": "Reroute", "mode": 0,
                                  "inputs": [{"name": "", "type": "*", "link": first + i}],
                                  "outputs": [{"name": "", "type": "IMAGE", "links": [first + i + 1]}]})
        origin = 6 if i == 0 else first + i - 1
        workflow["links"].append([first + i, origin, 0, first + i, 0, "IMAGE"])
    workflow["links"].append([first + count, first + count - 1, 0, 7, 0, "IMAGE"])
    node(workflow, 7)["inputs"][0]["link"] = first + count
    assert convert(workflow)["7"]["inputs"]["images"] == ["6", 0]


def test_reroute_cycle_is_an_error_not_a_hang() -> None:
    workflow = load("txt2img_v04.json")
    workflow["nodes"] += [{"id": 20, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 21}],
                           "outputs": [{"name": "", "type": "*", "links": [20]}]},
                          {"id": 21, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 20}],
                           "outputs": [{"name": "", "type": "*", "links": [21, 22]}]}]
    workflow["links"] += [[20, 20, 0, 21, 0, "*"], [21, 21, 0, 20, 0, "*"], [22, 21, 0, 7, 0, "IMAGE"]]
    node(workflow, 7)["inputs"][0]["link"] = 22
    [problem] = problems_of(workflow)
    assert (problem.node_id, problem.node_type) == ("7", "SaveImage")
    assert "cycle" in problem.message and "'images'" in problem.message


def test_extra_virtual_types_are_dropped_when_named() -> None:
    workflow = load("txt2img_v04.json")
    workflow["nodes"].append({"id": 30, "type": "Fast Groups Bypasser (rgthree)", "mode": 0,
                              "inputs": [], "outputs": [{"name": "OPT_CONNECTION", "type": "*", "links": []}]})
    [problem] = problems_of(workflow)
    assert problem.node_id == "30" and "unknown node type" in problem.message
    result = convert_ui_to_api(workflow, NODE_INFO, virtual_types={"Fast Groups Bypasser (rgthree)"})
    assert result == load("txt2img_api.json")


# --- widget value layouts that differ between editor versions ------------------------------------------


@pytest.mark.parametrize("values", [["example.png", "image"], ["example.png"], ["example.png", None],
                                    ["example.png", "upload"]])
def test_image_upload_button_value_is_skipped_when_present(values: list[Any]) -> None:
    workflow = {"nodes": [{"id": 1, "type": "LoadImage", "mode": 0, "inputs": [],
                           "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": []}],
                           "widgets_values": values}], "links": [], "version": 0.4}
    assert convert(workflow)["1"]["inputs"] == {"image": "example.png"}


@pytest.mark.parametrize("values", [["cat.png", "red", "image"], ["cat.png", "image", "red"], ["cat.png", "red"]])
def test_upload_value_after_the_input_or_after_the_required_widgets(values: list[Any]) -> None:
    workflow = {"nodes": [{"id": 1, "type": "LoadImageMask", "inputs": [], "outputs": [],
                           "widgets_values": values}], "links": []}
    assert convert(workflow)["1"]["inputs"] == {"image": "cat.png", "channel": "red"}


def test_upload_combo_holding_a_file_that_is_not_in_the_list_keeps_it() -> None:
    workflow = {"nodes": [{"id": 1, "type": "LoadImage", "widgets_values": ["pasted/image (3).png", "image"]}],
                "links": []}
    assert convert(workflow)["1"]["inputs"] == {"image": "pasted/image (3).png"}


@pytest.mark.parametrize("values", [
    [" | ", "!", True],  # current editors: forceInput inputs have no widget
    ["", " | ", "", "!", "", True],  # old editors stored a hidden widget value for each of them
])
def test_force_input_inputs_are_not_widgets(values: list[Any]) -> None:
    workflow = {"nodes": [{"id": 1, "type": "TextJoin", "inputs": [], "outputs": [],
                           "widgets_values": values}], "links": []}
    assert convert(workflow)["1"]["inputs"] == {"separator": " | ", "suffix": "!", "upper": True}


@pytest.mark.parametrize("values", [
    [7, "randomize", "gpu", "fixed", "", "hello"],  # old editor: seed control, combo control + filter text
    [7, "gpu", "fixed", "hello"],
    [7, "gpu", "hello"],
    [7, True, "gpu", "fixed", "hello"],
])
def test_seed_without_declared_control_and_combo_controls(values: list[Any]) -> None:
    workflow = {"nodes": [{"id": 1, "type": "SeedPicker", "inputs": [], "outputs": [],
                           "widgets_values": values}], "links": []}
    assert convert(workflow)["1"]["inputs"] == {"seed": 7, "mode": "gpu", "note": "hello"}


def test_schemas_without_input_order_use_declaration_order() -> None:
    schemas = copy.deepcopy(NODE_INFO)
    for schema in schemas.values():
        del schema["input_order"]
    assert convert_ui_to_api(load("txt2img_v04.json"), schemas) == load("txt2img_api.json")


def test_input_order_decides_the_widget_order() -> None:
    schemas = copy.deepcopy(NODE_INFO)
    schemas["EmptyLatentImage"]["input_order"]["required"] = ["batch_size", "height", "width"]
    workflow = load("txt2img_v04.json")
    node(workflow, 4)["widgets_values"] = [2, 448, 640]
    assert convert_ui_to_api(workflow, schemas)["4"]["inputs"] == {"width": 640, "height": 448, "batch_size": 2}


def test_malformed_schema_entries_are_read_as_having_no_widgets() -> None:
    schemas = copy.deepcopy(NODE_INFO)
    schemas["VAEDecode"] = {"input": "not a mapping"}
    schemas["SaveImage"]["input"]["required"]["filename_prefix"] = "STRING"
    result = convert_ui_to_api(load("txt2img_v04.json"), schemas)
    assert result["6"] == {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]},
                           "_meta": {"title": "VAEDecode"}}
    assert result["7"]["inputs"] == {"images": ["6", 0]}


def test_linked_undeclared_input_is_kept_by_name() -> None:
    workflow = load("txt2img_v04.json")
    workflow["links"].append([40, 1, 0, 7, 1, "MODEL"])
    node(workflow, 7)["inputs"].append({"name": "extra_model", "type": "MODEL", "link": 40})
    assert convert(workflow)["7"]["inputs"]["extra_model"] == ["1", 0]


# --- subgraphs -------------------------------------------------------------------------------------------


def test_subgraph_is_flattened_with_colon_ids() -> None:
    result = convert(load("subgraph_v1.json"))
    assert result == load("subgraph_api.json")
    assert "20" not in result


def test_subgraph_promoted_widget_falls_back_to_the_inner_value() -> None:
    workflow = load("subgraph_v1.json")
    del node(workflow, 20)["widgets_values"]
    assert convert(workflow)["20:1"]["inputs"]["text"] == "placeholder prompt"


def test_subgraph_promoted_widget_dict_form() -> None:
    workflow = load("subgraph_v1.json")
    node(workflow, 20)["widgets_values"] = {"text": "a dict-form prompt"}
    assert convert(workflow)["20:1"]["inputs"]["text"] == "a dict-form prompt"


def test_subgraph_input_linked_from_outside_replaces_the_promoted_widget() -> None:
    workflow = load("subgraph_v1.json")
    output = {"name": "STRING", "type": "STRING", "links": [9], "widget": {"name": "text"}}
    workflow["nodes"].append({"id": 9, "type": "PrimitiveNode", "mode": 0, "outputs": [output],
                              "widgets_values": ["from a primitive"]})
    workflow["links"].append({"id": 9, "origin_id": 9, "origin_slot": 0, "target_id": 20, "target_slot": 3,
                              "type": "STRING"})
    node(workflow, 20)["inputs"][3]["link"] = 9
    assert convert(workflow)["20:1"]["inputs"]["text"] == "from a primitive"


def test_nested_subgraphs_and_an_input_wired_straight_to_an_output() -> None:
    assert convert(load("subgraph_nested_v1.json")) == {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd15.safetensors"},
              "_meta": {"title": "Load Checkpoint"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1},
              "_meta": {"title": "Empty Latent Image"}},
        "30:2:1": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["1", 2]},
                   "_meta": {"title": "VAE Decode"}},
        "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "nested", "images": ["30:2:1", 0]},
              "_meta": {"title": "Save Image"}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0]}, "_meta": {"title": "VAE Decode"}},
    }


def test_muted_subgraph_instance_drops_its_nodes_and_consumer_inputs() -> None:
    workflow = load("subgraph_v1.json")
    node(workflow, 20)["mode"] = 2
    result = convert(workflow)
    assert not [key for key in result if key.startswith("20:")]
    assert result["6"]["inputs"] == {"vae": ["1", 2]}


def test_bypassed_subgraph_instance_passes_its_matching_input() -> None:
    workflow = load("subgraph_v1.json")
    node(workflow, 20)["mode"] = 4
    result = convert(workflow)
    assert not [key for key in result if key.startswith("20:")]
    assert result["6"]["inputs"]["samples"] == ["4", 0]


def test_bypassed_node_inside_a_subgraph() -> None:
    workflow = load("subgraph_v1.json")
    inner_sampler = next(n for n in workflow["definitions"]["subgraphs"][0]["nodes"] if n["id"] == 3)
    inner_sampler["mode"] = 4
    result = convert(workflow)
    assert "20:3" not in result
    assert result["6"]["inputs"]["samples"] == ["4", 0]


# --- errors ---------------------------------------------------------------------------------------------


def test_unknown_node_type_is_named() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 6)["type"] = "VAEDecodeFancy"
    [problem] = problems_of(workflow)
    assert (problem.node_id, problem.node_type) == ("6", "VAEDecodeFancy")
    assert "unknown node type 'VAEDecodeFancy'" in problem.message


def test_link_id_missing_from_links_is_an_error() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 6)["inputs"][1]["link"] = 77
    [problem] = problems_of(workflow)
    assert (problem.node_id, problem.node_type) == ("6", "VAEDecode")
    assert "'vae'" in problem.message and "link 77" in problem.message


def test_link_to_a_missing_node_is_an_error() -> None:
    workflow = load("txt2img_v1.json")
    next(link for link in workflow["links"] if link["id"] == 8)["origin_id"] = 99
    [problem] = problems_of(workflow)
    assert (problem.node_id, problem.node_type) == ("6", "VAEDecode")
    assert "node 99" in problem.message and "does not exist" in problem.message


def test_negative_output_slot_is_an_error() -> None:
    workflow = load("txt2img_v04.json")
    workflow["links"][7] = [8, 1, -1, 6, 1, "VAE"]
    [problem] = problems_of(workflow)
    assert problem.node_id == "6" and "output slot -1" in problem.message


def test_every_problem_is_reported_at_once() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 4)["type"] = "NoSuchLatent"
    node(workflow, 6)["inputs"][0]["link"] = 500
    problems = problems_of(workflow)
    assert {(p.node_id, p.node_type) for p in problems} == {("4", "NoSuchLatent"), ("6", "VAEDecode")}
    text = str(WorkflowConversionError(problems))
    assert "NoSuchLatent 4" in text and "VAEDecode 6" in text


def test_subgraph_instance_without_a_definition_is_an_unknown_type() -> None:
    workflow = load("subgraph_v1.json")
    del workflow["definitions"]
    [problem] = problems_of(workflow)
    assert problem.node_id == "20" and problem.node_type == "9a3e7c10-4b2d-4f8e-a1c6-7d5e9b2f0a48"


def test_subgraph_that_contains_itself_is_an_error() -> None:
    workflow = load("subgraph_v1.json")
    definition = workflow["definitions"]["subgraphs"][0]
    definition["nodes"].append({"id": 9, "type": definition["id"], "inputs": [], "outputs": []})
    problems = problems_of(workflow)
    assert any(p.node_id == "20:9" and "contains itself" in p.message for p in problems)


def test_legacy_group_node_is_named_in_a_clear_error() -> None:
    workflow = load("txt2img_v04.json")
    workflow["extra"]["groupNodes"] = {"Decode": {"nodes": [], "links": [], "external": []}}
    node(workflow, 6)["type"] = "workflow>Decode"
    [problem] = problems_of(workflow)
    assert problem.node_id == "6" and "legacy group node 'workflow>Decode'" in problem.message


def test_subgraphs_that_expand_to_too_many_nodes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_workflow, "MAX_EXPANDED_NODES", 5000)  # the real limit is slower to reach
    # seven levels of ten instances each would be ten million nodes
    definitions = [{"id": "leaf", "nodes": [{"id": 1, "type": "SaveImage", "widgets_values": ["x"]}], "links": []}]
    for level in range(7):
        definitions.append({"id": f"level{level}", "links": [],
                            "nodes": [{"id": i, "type": definitions[-1]["id"]} for i in range(10)]})
    workflow = {"version": 1, "nodes": [{"id": 1, "type": "level6"}], "links": [],
                "definitions": {"subgraphs": definitions}}
    [problem] = problems_of(workflow)
    assert "more than 5000 nodes after expanding subgraphs" in problem.message


def test_huge_widget_value_list_is_read_quickly() -> None:
    workflow = load("txt2img_v04.json")
    node(workflow, 4)["widgets_values"] = [640, 448, 2] + [0] * 1_000_000
    assert convert(workflow)["4"]["inputs"] == {"width": 640, "height": 448, "batch_size": 2}


@pytest.mark.parametrize("workflow, fragment", [
    ([1, 2], "must be a JSON object"),
    ({"nodes": "x", "links": []}, "'nodes' must be a list"),
    ({"nodes": [{"id": 1}], "links": []}, "no 'type'"),
    ({"nodes": [{"type": "SaveImage"}], "links": []}, "no valid 'id'"),
    ({"nodes": [7], "links": []}, "not an object"),
    ({"nodes": [], "links": [[1, 2]]}, "neither"),
    ({"nodes": [], "links": [{"id": 1, "origin_id": "a", "origin_slot": "x", "target_id": 2, "target_slot": 0}]},
     "non-integer"),
    ({"nodes": [{"id": 1, "type": "SaveImage", "inputs": "images"}], "links": []}, "'inputs' must be a list"),
    ({"nodes": [{"id": 1, "type": "SaveImage"}, {"id": 1, "type": "PreviewImage"}], "links": []}, "duplicate"),
    ({"nodes": [], "links": {}}, "'links' must be a list"),
    ({"nodes": [], "definitions": {"subgraphs": [{"name": "no id"}]}}, "without a string 'id'"),
])
def test_malformed_files_raise_a_conversion_error(workflow: Any, fragment: str) -> None:
    problems = problems_of(workflow)
    assert any(fragment in p.message for p in problems), problems


# --- format detection --------------------------------------------------------------------------------


def test_is_ui_workflow_and_to_api() -> None:
    ui, api = load("txt2img_v04.json"), load("txt2img_api.json")
    assert is_ui_workflow(ui) and not is_ui_workflow(api) and not is_ui_workflow([1])
    assert is_api_prompt(api) and not is_api_prompt(ui) and is_api_prompt({})
    assert to_api(api, NODE_INFO) is api
    assert to_api(ui, NODE_INFO) == api
    with pytest.raises(WorkflowConversionError):
        to_api({"3": "KSampler"}, NODE_INFO)
    with pytest.raises(WorkflowConversionError):
        to_api("not json", NODE_INFO)


# --- robustness: whatever the file holds, the caller gets a result or a WorkflowConversionError ------------

_JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-3, 30), st.floats(allow_nan=True),
                         st.text(max_size=4), st.sampled_from(["*", "IMAGE", "LATENT", "Reroute", "PrimitiveNode",
                                                               "-10", "-20", "fixed", "image"]))
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                     max_leaves=8)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, prefix + (index,))
    return found


_FIXTURES = ["txt2img_v04.json", "txt2img_v1.json", "features_v04.json", "subgraph_v1.json",
             "subgraph_nested_v1.json"]
_LOADED = {name: load(name) for name in _FIXTURES}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(_FIXTURES), picks=st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), _JSON),
                                                          min_size=1, max_size=3))
def test_mutated_files_never_leak_other_exceptions(name: str, picks: list[tuple[int, bool, Any]]) -> None:
    workflow = copy.deepcopy(_LOADED[name])
    for pick, delete, replacement in picks:
        paths = [p for p in _paths(workflow) if p]
        path = paths[pick % len(paths)]
        parent = workflow
        for step in path[:-1]:
            parent = parent[step]
        if delete and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    try:
        result = convert(workflow)
    except WorkflowConversionError as error:
        assert not any(p.message.startswith(INTERNAL_ERROR_PREFIX) for p in error.problems), error.problems
    else:
        assert isinstance(result, dict)
        json.dumps(result)
