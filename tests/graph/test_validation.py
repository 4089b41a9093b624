"""Validation collects every error, in ComfyUI's shape, naming node, input, value and rule."""
from __future__ import annotations

from typing import Any

from graph.validation import validate_prompt

from . import sample_nodes

REG = sample_nodes.registry()


def errors_of(outcome: Any, node_id: str) -> list[dict[str, Any]]:
    return outcome.response()["node_errors"][node_id]["errors"]


def test_valid_prompt_coerces_literals() -> None:
    outcome = validate_prompt({
        "1": {"class_type": "Number", "inputs": {"value": "7"}},
        "2": {"class_type": "Scale", "inputs": {"value": ["1", 0], "factor": 2}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }, REG)
    assert outcome.ok and outcome.outputs == ["3"]
    assert outcome.nodes["1"].inputs["value"] == 7
    assert isinstance(outcome.nodes["2"].inputs["factor"], float)


def test_every_error_is_collected_with_the_exact_shape() -> None:
    outcome = validate_prompt({
        "1": {"class_type": "Number", "inputs": {"value": 5000}},
        "2": {"class_type": "Number", "inputs": {"value": "abc"}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0]}},
        "4": {"class_type": "Describe", "inputs": {"value": ["2", 0], "mode": "medium", "prefix": "x",
                                                   "loud": "maybe"}},
        "5": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "6": {"class_type": "Show", "inputs": {"value": ["4", 0]}},
        "7": {"class_type": "Add", "inputs": {"a": ["4", 0], "b": ["9", 0]}},
        "8": {"class_type": "Show", "inputs": {"value": ["7", 0]}},
    }, REG)
    body = outcome.response()
    assert not outcome.ok
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["error"]["message"] == "Prompt outputs failed validation"
    assert set(body["node_errors"]) == {"1", "2", "3", "4", "7"}
    number = body["node_errors"]["1"]
    assert number["class_type"] == "Number" and number["dependent_outputs"] == ["5"]
    [too_big] = number["errors"]
    assert too_big == {"type": "value_bigger_than_max", "message": "Value bigger than max",
                       "details": "Number 1: input 'value' is 5000, must be <= 1000",
                       "extra_info": {"input_name": "value", "input_config": ["INT", {"default": 0, "min": -1000,
                                                                                       "max": 1000, "step": 1}],
                                      "received_value": 5000}}
    assert errors_of(outcome, "2")[0]["type"] == "invalid_input_type"
    assert "Number 2: input 'value' is 'abc', must be INT" in errors_of(outcome, "2")[0]["details"]
    assert errors_of(outcome, "3")[0]["type"] == "required_input_missing"
    assert errors_of(outcome, "3")[0]["details"] == "Add 3: required input 'b' (INT) is missing"
    kinds = sorted(e["type"] for e in errors_of(outcome, "4"))
    assert kinds == ["invalid_input_type", "value_not_in_list"]
    not_listed = next(e for e in errors_of(outcome, "4") if e["type"] == "value_not_in_list")
    assert not_listed["details"] == "Describe 4: input 'mode' is 'medium', must be one of ['short', 'long']"
    bad_link = errors_of(outcome, "7")
    assert {e["type"] for e in bad_link} == {"bad_linked_input", "return_type_mismatch"}
    assert "Add 7: input 'a' expects INT but is linked to output 0 (STRING) of Describe 4" in [
        e["details"] for e in bad_link]
    assert "Add 7: input 'b' links to node 9, which is not in the prompt" in [e["details"] for e in bad_link]
    assert sorted(set(sum((v["dependent_outputs"] for v in body["node_errors"].values()), []))) == ["5", "6", "8"]


def test_type_union_and_wildcard_links_are_accepted() -> None:
    outcome = validate_prompt({
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Describe", "inputs": {"value": ["1", 0], "mode": "short", "prefix": "", "loud": True}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 1]}},
    }, REG)
    assert outcome.ok, outcome.messages()


def test_valid_outputs_run_when_others_fail() -> None:
    outcome = validate_prompt({
        "1": {"class_type": "Number", "inputs": {"value": 1}},
        "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Number", "inputs": {"value": 99999}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
    }, REG)
    assert outcome.ok and outcome.outputs == ["2"]
    assert list(outcome.response()["node_errors"]) == ["3"]


def test_unknown_class_type_is_an_invalid_prompt() -> None:
    outcome = validate_prompt({"1": {"class_type": "NoSuchNode", "inputs": {}},
                               "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}, REG)
    body = outcome.response()
    assert body["error"]["type"] == "invalid_prompt"
    assert "NoSuchNode" in body["error"]["message"]
    assert body["node_errors"]["1"]["errors"][0]["details"].startswith("NoSuchNode 1: node type 'NoSuchNode'")


def test_no_prompt_and_no_outputs() -> None:
    assert validate_prompt({}, REG).error["type"] == "no_prompt"
    assert validate_prompt([1, 2], REG).error["type"] == "invalid_prompt"
    only_numbers = validate_prompt({"1": {"class_type": "Number", "inputs": {"value": 1}}}, REG)
    assert only_numbers.error["type"] == "prompt_no_outputs"
    empty_targets = validate_prompt({"1": {"class_type": "Show", "inputs": {"value": 1}}}, REG, targets=[])
    assert empty_targets.error["type"] == "prompt_no_outputs"


def test_cycles_are_reported_on_every_member() -> None:
    outcome = validate_prompt({
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["3", 0]}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["3", 0]}},
        "3": {"class_type": "Number", "inputs": {"value": 1}},
        "4": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }, REG)
    assert outcome.error["type"] == "prompt_outputs_failed_validation"
    for node_id in ("1", "2"):
        assert [e["type"] for e in errors_of(outcome, node_id)] == ["dependency_cycle"]


def test_self_link_and_bad_output_index() -> None:
    outcome = validate_prompt({
        "1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 5]}},
        "2": {"class_type": "Number", "inputs": {"value": 1}},
        "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}},
    }, REG)
    details = [e["details"] for e in errors_of(outcome, "1")]
    assert "Add 1: input 'a' links to its own node" in details
    assert "Add 1: input 'b' links to output 5 of Number 2, which has 1 output" in details


def test_literal_on_a_socket_input_is_refused() -> None:
    outcome = validate_prompt({"1": {"class_type": "Describe", "inputs": {"value": 3, "mode": "short",
                                                                          "prefix": "", "loud": False}},
                               "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}, REG)
    [error] = errors_of(outcome, "1")
    assert error["type"] == "invalid_input_type"
    assert error["details"] == "Describe 1: input 'value' expects a link from a INT,FLOAT output, got the value 3"


def test_a_socket_with_a_widget_type_takes_values_of_that_type() -> None:
    class Strength:
        RETURN_TYPES = ("FLOAT",)
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls) -> dict[str, Any]:
            return {"required": {"amount": ("FLOAT,MASK", {"widgetType": "FLOAT", "min": 0.0, "default": 0.5})}}

        def run(self, amount: Any) -> tuple[Any]:
            return (amount,)

    reg = sample_nodes.registry()
    reg.add_v1({"Strength": Strength})

    def check(value: Any) -> list[dict[str, Any]]:
        outcome = validate_prompt({"1": {"class_type": "Strength", "inputs": {"amount": value}},
                                   "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}, reg)
        return outcome.response().get("node_errors", {}).get("1", {}).get("errors", [])

    assert check(0.25) == [] and check("0.75") == []  # as FLOAT widgets take them
    [low] = check(-1.0)
    assert low["type"] == "value_smaller_than_min"
    [text] = check("much")
    assert text["type"] == "invalid_input_type"


def test_primitive_sockets_accept_literals_like_widgets() -> None:
    outcome = validate_prompt({"1": {"class_type": "Add", "inputs": {"a": 1, "b": "2"}},
                               "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}, REG)
    assert outcome.ok and outcome.nodes["1"].inputs == {"a": 1, "b": 2}


def test_value_wrapper_protects_literal_lists_and_undeclared_literals_are_dropped() -> None:
    outcome = validate_prompt({"1": {"class_type": "Show", "inputs": {"value": {"__value__": ["a", 1]},
                                                                      "extra": 5}}}, REG)
    assert outcome.ok
    assert outcome.nodes["1"].inputs == {"value": ["a", 1]}
