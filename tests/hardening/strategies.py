"""Hypothesis strategies for hostile input: JSON values, API prompts and UI workflows built from a node schema.

The prompt and workflow strategies start from the nodes' `/object_info` (V1 shape), so that many
drawn cases are valid or nearly valid and reach deep into validation, conversion and execution,
while the rest carry wrong types, huge and non-finite numbers, odd unicode, links to missing nodes,
to themselves and around cycles, and structures that are not what they should be at all.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

HOSTILE_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "\udcff", "\u202egnp.exe", "\ufeff", "..", "../../etc/passwd",
                "..\\..\\win.ini", "/etc/passwd", "C:\\x", "%2e%2e%2f", "\uff0e\uff0e/", "名前", "😀" * 3,
                "x" * 5000, "NaN", "Infinity", "[\"1\", 0]", "null", "__proto__", "constructor"]
HOSTILE_NUMBERS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63 - 1, 2**64, 10**30, -10**30,
                   0.5, -0.0, 1e308, -1e308, 5e-324, float("inf"), float("-inf"), float("nan"), True, False]
CLEAN_TEXT = [t for t in HOSTILE_TEXT if not any("\ud800" <= c <= "\udfff" for c in t)]
"""The hostile strings that strict JSON can carry (no lone surrogates)."""
NODE_IDS = ["1", "2", "3", "4", "5", "6", "7", "10", "0", "-1", "01", "a", "ñ", "1:2", "\u202e", "\ud800", ""]
VIRTUAL = ["Reroute", "PrimitiveNode", "Note", "MarkdownNote"]


def scalars(*, json_clean: bool = False) -> st.SearchStrategy[Any]:
    """Plain and hostile JSON scalars; `json_clean` leaves out what strict JSON cannot carry (NaN, lone surrogates)."""
    numbers = [n for n in HOSTILE_NUMBERS if not json_clean or not isinstance(n, float) or math.isfinite(n)]
    texts = CLEAN_TEXT if json_clean else HOSTILE_TEXT
    return st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(numbers),
                     st.floats(allow_nan=not json_clean, allow_infinity=not json_clean),
                     st.text(max_size=20), st.sampled_from(texts))


def json_values(max_leaves: int = 12, *, json_clean: bool = False) -> st.SearchStrategy[Any]:
    """Nested JSON-like values (lists and objects with hostile keys and scalars)."""
    keys = st.one_of(st.text(max_size=8), st.sampled_from((CLEAN_TEXT if json_clean else HOSTILE_TEXT)[:18]))
    return st.recursive(scalars(json_clean=json_clean),
                        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
                        max_leaves=max_leaves)


def deep(depth: int, leaf: Any = 1) -> Any:
    """A value nested `depth` lists deep, alternating lists and objects."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _declared(schema: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, type, options) of a node's required and optional inputs."""
    found = []
    inputs = schema.get("input", {})
    for section in ("required", "optional"):
        for name, spec in (inputs.get(section) or {}).items():
            kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 else {}
            found.append((name, kind, options if isinstance(options, Mapping) else {}))
    return found


def _widget_value(draw: st.DrawFn, kind: Any, options: Mapping[str, Any], json_clean: bool = False) -> Any:
    """A value of the input's own type, often at or just beyond its limits."""
    if isinstance(kind, (list, tuple)):
        choices = [c for c in kind if isinstance(c, str)]
        return draw(st.sampled_from(choices)) if choices and draw(st.booleans()) else draw(st.text(max_size=10))
    if kind == "COMBO":
        choices = [c for c in options.get("options", []) if isinstance(c, str)]
        return draw(st.sampled_from(choices)) if choices else draw(st.text(max_size=10))
    lo, hi = options.get("min"), options.get("max")
    if kind == "INT":
        lo_i = int(lo) if isinstance(lo, (int, float)) else -2**63
        hi_i = int(hi) if isinstance(hi, (int, float)) else 2**63
        return draw(st.one_of(st.integers(lo_i, hi_i), st.sampled_from([lo_i, hi_i, lo_i - 1, hi_i + 1]),
                              st.integers(lo_i, hi_i).map(str)))
    if kind == "FLOAT":
        lo_f = float(lo) if isinstance(lo, (int, float)) else -1e9
        hi_f = float(hi) if isinstance(hi, (int, float)) else 1e9
        return draw(st.one_of(st.floats(lo_f, hi_f), st.sampled_from([lo_f, hi_f, lo_f - 1, hi_f + 1])))
    if kind == "BOOLEAN":
        return draw(st.one_of(st.booleans(), st.sampled_from(["true", "false", 0, 1, "yes"])))
    if kind == "STRING":
        return draw(st.one_of(st.text(max_size=30), st.sampled_from(CLEAN_TEXT if json_clean else HOSTILE_TEXT)))
    return draw(scalars(json_clean=json_clean))


def _is_widget(kind: Any) -> bool:
    return isinstance(kind, (list, tuple)) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def _valid_value(draw: st.DrawFn, kind: Any, options: Mapping[str, Any]) -> Any:
    """A value the input accepts."""
    if isinstance(kind, (list, tuple)) or kind == "COMBO":
        choices = [c for c in (kind if isinstance(kind, (list, tuple)) else options.get("options", []))
                   if isinstance(c, str)]
        return draw(st.sampled_from(choices)) if choices else ""
    lo, hi = options.get("min"), options.get("max")
    if kind == "INT":
        return draw(st.integers(int(lo) if lo is not None else -2**31, int(hi) if hi is not None else 2**31))
    if kind == "FLOAT":
        return draw(st.floats(float(lo) if lo is not None else -1e6, float(hi) if hi is not None else 1e6))
    if kind == "BOOLEAN":
        return draw(st.booleans())
    return draw(st.text(max_size=12))


def _valid_dag(draw: st.DrawFn, info: Mapping[str, Any], ids: list[str]) -> dict[str, Any]:
    """A prompt every input of which is right: links only to earlier nodes, of the right type."""
    prompt: dict[str, Any] = {}
    produced: list[tuple[str, int, str]] = []  # (node id, slot, type)
    classes = sorted(info)
    outputs = [c for c in classes if info[c].get("output_node")]
    for index, node_id in enumerate(ids + ["out"]):
        if index == len(ids):  # end on an output node, so that most of these prompts can run
            if not outputs or any(prompt[n].get("class_type") in outputs for n in prompt):
                break
            class_type = draw(st.sampled_from(outputs))
        else:
            class_type = draw(st.sampled_from(classes))
        inputs: dict[str, Any] = {}
        ok = True
        for name, kind, options in _declared(info[class_type]):
            optional = name in (info[class_type].get("input", {}).get("optional") or {})
            if _is_widget(kind):
                if not optional or draw(st.booleans()):
                    inputs[name] = _valid_value(draw, kind, options)
                continue
            sources = [(n, s) for n, s, t in produced if t == kind or "*" in (t, kind)]
            if sources and (not optional or draw(st.booleans())):
                inputs[name] = list(draw(st.sampled_from(sources)))
            elif not optional:
                ok = False
        if not ok:
            continue
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        produced += [(node_id, slot, t) for slot, t in enumerate(info[class_type].get("output", []))]
    return prompt


def _mutate(draw: st.DrawFn, prompt: dict[str, Any], *, json_clean: bool) -> None:
    """One hostile change to a node of the prompt."""
    if not prompt:
        return
    texts = CLEAN_TEXT if json_clean else HOSTILE_TEXT
    node_id = draw(st.sampled_from(sorted(prompt)))
    node = prompt[node_id]
    inputs = node.get("inputs") if isinstance(node, dict) else None
    kind = draw(st.integers(0, 7))
    if kind == 0 or not isinstance(inputs, dict) or not inputs:
        prompt[node_id] = draw(st.one_of(json_values(4, json_clean=json_clean),
                                         st.fixed_dictionaries({"class_type": st.sampled_from(texts + VIRTUAL),
                                                                "inputs": st.just(inputs or {})})))
        return
    name = draw(st.sampled_from(sorted(inputs)))
    if kind == 1:
        inputs[name] = draw(scalars(json_clean=json_clean))
    elif kind == 2:
        inputs[name] = [draw(st.sampled_from([node_id, "missing", "99"] + sorted(prompt))),
                        draw(st.sampled_from([0, 1, -1, 7, 2**63]))]
    elif kind == 3:
        del inputs[name]
    elif kind == 4:  # a link back from the first node closes a cycle
        first = sorted(prompt)[0]
        target = prompt[first].get("inputs") if isinstance(prompt[first], dict) else None
        if isinstance(target, dict) and target:
            target[draw(st.sampled_from(sorted(target)))] = [node_id, 0]
    elif kind == 5:
        inputs[name] = deep(draw(st.integers(50, 300)))
    elif kind == 6:
        inputs[draw(st.sampled_from(texts[:12]))] = draw(json_values(4, json_clean=json_clean))
    else:
        inputs[name] = {"__value__": draw(json_values(4, json_clean=json_clean))}


@st.composite
def api_prompts(draw: st.DrawFn, info: Mapping[str, Any], *, max_nodes: int = 8,
                json_clean: bool = False) -> dict[str, Any]:
    """An API-format prompt over the classes of `info`: valid, a few hostile changes away, or hostile throughout."""
    count = draw(st.integers(1, max_nodes))
    ids = draw(st.lists(st.sampled_from(NODE_IDS[:10]), min_size=count, max_size=count, unique=True))
    style = draw(st.integers(0, 3))
    if style <= 1:
        prompt = _valid_dag(draw, info, ids)
        for _ in range(0 if style == 0 else draw(st.integers(1, 3))):
            _mutate(draw, prompt, json_clean=json_clean)
        return prompt
    return draw(_hostile_prompts(info, ids, json_clean=json_clean))


@st.composite
def _hostile_prompts(draw: st.DrawFn, info: Mapping[str, Any], ids: list[str], *,
                     json_clean: bool = False) -> dict[str, Any]:
    """Every node drawn on its own: wrong types, missing and dangling links, junk nodes."""
    classes = sorted(info)
    texts = CLEAN_TEXT if json_clean else HOSTILE_TEXT
    extra_ids = [i for i in NODE_IDS[10:] if not json_clean or i in CLEAN_TEXT or i.isascii()]
    ids = ids + draw(st.lists(st.sampled_from(extra_ids), max_size=2, unique=True))
    link_targets = ids + ["99", "missing"]
    prompt: dict[str, Any] = {}
    for node_id in ids:
        roll = draw(st.integers(0, 39))
        if roll == 0:
            prompt[node_id] = draw(json_values(4, json_clean=json_clean))
            continue
        class_type = draw(st.sampled_from(classes)) if roll > 2 else draw(st.sampled_from(texts + VIRTUAL))
        inputs: dict[str, Any] = {}
        for name, kind, options in _declared(info.get(class_type, {})):
            choice = draw(st.integers(0, 11))
            if choice == 0:
                continue
            if choice <= 4 or (not _is_widget(kind) and choice <= 8):
                slot = draw(st.one_of(st.integers(0, 2), st.sampled_from([-1, 5, 2**63, 2**64])))
                inputs[name] = [draw(st.sampled_from(link_targets)), slot]
            elif choice <= 9:
                inputs[name] = _widget_value(draw, kind, options, json_clean)
            elif choice == 10:
                inputs[name] = draw(json_values(6, json_clean=json_clean))
            else:
                inputs[name] = {"__value__": draw(json_values(4, json_clean=json_clean))}
        broken_inputs = draw(st.integers(0, 29)) == 0
        node: dict[str, Any] = {"class_type": class_type,
                                "inputs": draw(scalars(json_clean=json_clean)) if broken_inputs else inputs}
        if draw(st.integers(0, 7)) == 0:
            node["_meta"] = draw(json_values(3, json_clean=json_clean))
        prompt[node_id] = node
    return prompt


@st.composite
def ui_workflows(draw: st.DrawFn, info: Mapping[str, Any], *, max_nodes: int = 7,
                 json_clean: bool = False) -> dict[str, Any]:
    """A UI-format (editor) workflow over the classes of `info`, with reroutes, primitives, modes, subgraphs."""
    classes = sorted(info)
    junk = json_values(3, json_clean=json_clean)
    subgraph_ids = ["sg-a", "sg-b"]
    type_pool = classes + VIRTUAL + subgraph_ids + ["workflow>group", "Unknown"]

    def graph(depth: int) -> dict[str, Any]:
        count = draw(st.integers(0, max_nodes))
        ids: list[Any] = draw(st.lists(st.one_of(st.integers(-20, 12), st.sampled_from(["1", "x", 1.0, None, True,
                                                                                           "-10", "-20"])),
                                       min_size=count, max_size=count))
        nodes, links = [], []
        link_id = 0
        for node_id in ids:
            node_type = draw(st.sampled_from(type_pool)) if draw(st.integers(0, 15)) else draw(junk)
            schema = info.get(node_type, {}) if isinstance(node_type, str) else {}
            declared = _declared(schema)
            inputs = []
            for name, kind, options in declared:
                if draw(st.integers(0, 2)) == 0:
                    continue
                link_id += 1
                entry: dict[str, Any] = {"name": name, "type": kind if isinstance(kind, str) else "COMBO",
                                         "link": link_id if draw(st.booleans()) else None}
                if draw(st.integers(0, 3)) == 0:
                    entry["widget"] = {"name": name} if draw(st.booleans()) else draw(junk)
                inputs.append(entry)
                if entry["link"] is not None:
                    origin = draw(st.sampled_from(ids + [99])) if ids else 99
                    fields = [link_id, origin, draw(st.integers(-1, 3)), node_id, len(inputs) - 1,
                              draw(st.sampled_from(["*", "HARD", "IMAGE", 0, None]))]
                    links.append(fields if draw(st.booleans()) else dict(zip(
                        ["id", "origin_id", "origin_slot", "target_id", "target_slot", "type"], fields)))
            if node_type in VIRTUAL or draw(st.integers(0, 5)) == 0:
                link_id += 1
                inputs.append({"name": draw(st.sampled_from(["", "value", "x"])), "type": "*", "link": link_id})
                links.append([link_id, draw(st.sampled_from(ids + [99])) if ids else 99, 0, node_id,
                              len(inputs) - 1, "*"])
            widgets: Any
            widget_kind = draw(st.integers(0, 5))
            if widget_kind <= 2:
                widgets = [_widget_value(draw, kind, options) for _, kind, options in declared]
                widgets = draw(st.permutations(widgets)) if widget_kind == 2 else widgets
                if draw(st.booleans()):
                    widgets.insert(draw(st.integers(0, len(widgets))), draw(st.sampled_from(
                        ["randomize", "fixed", "image", None, True, "increment"])))
            elif widget_kind == 3:
                widgets = {name: _widget_value(draw, kind, options) for name, kind, options in declared}
            else:
                widgets = draw(junk)
            node: dict[str, Any] = {"id": node_id, "type": node_type,
                                    "mode": draw(st.sampled_from([0, 0, 0, 2, 4, 1, -1, "x", None])),
                                    "inputs": inputs if draw(st.integers(0, 15)) else draw(junk),
                                    "outputs": [{"name": "out", "type": draw(st.sampled_from(["HARD", "*", "IMAGE"])),
                                                 "links": []}] if draw(st.integers(0, 10)) else draw(junk),
                                    "widgets_values": widgets}
            if draw(st.integers(0, 6)) == 0:
                node["title"] = draw(junk)
            nodes.append(node if draw(st.integers(0, 30)) else draw(junk))
        result: dict[str, Any] = {"nodes": nodes, "links": links if draw(st.integers(0, 15)) else draw(junk)}
        if depth == 0 and draw(st.integers(0, 2)) == 0:
            result["definitions"] = {"subgraphs": [{"id": sg, **graph(depth + 1),
                                                    "inputs": [{"name": "in", "type": "*"}],
                                                    "outputs": [{"name": "out", "type": "*"}]}
                                                   for sg in draw(st.lists(st.sampled_from(subgraph_ids), max_size=2))]}
        return result

    workflow = graph(0)
    workflow["version"] = draw(st.sampled_from([0.4, 1, "1", None]))
    if draw(st.integers(0, 5)) == 0:
        workflow["extra"] = {"groupNodes": draw(st.one_of(st.dictionaries(st.text(max_size=5), junk, max_size=2),
                                                          junk))}
    return workflow
