"""`comfy_api.latest.io`: ComfyUI's V3 node schema (io.ComfyNode, io.Schema, typed inputs and outputs).

A V3 node class declares itself with `define_schema()` and runs as the classmethod `execute(...)`.
`ComfyNode` also answers the V1 questions (INPUT_TYPES, RETURN_TYPES, FUNCTION, ...) from that
schema, so diffloom registers, validates and runs V3 nodes through the same adapter as V1 classes.
As in ComfyUI, every call runs on a fresh subclass with the hidden values bound (`cls.hidden`), so
class attributes set by one run never reach another.
"""
from __future__ import annotations

import inspect
import weakref
from abc import ABCMeta
from collections.abc import Callable
from enum import Enum
from typing import Any, ClassVar

from graph.nodedef import ExecutionBlocker

# ------------------------------------------------------------------------------------------ inputs


class Input:
    """One input of a V3 schema; `as_v1()` gives the (TYPE, options) pair of V1's INPUT_TYPES."""

    io_type: ClassVar[str] = "*"

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False,  # noqa: A002 - V3's name
                 tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict[str, Any] | None = None,
                 raw_link: bool | None = None, advanced: bool | None = None, force_input: bool | None = None,
                 **widget: Any) -> None:
        self.id = id
        self.optional = optional
        options = {"display_name": display_name, "tooltip": tooltip, "lazy": lazy, "rawLink": raw_link,
                   "advanced": advanced, "forceInput": force_input, **_v1_widget_options(widget), **(extra_dict or {})}
        self.options: dict[str, Any] = {k: v for k, v in options.items() if v is not None}

    def as_v1(self) -> tuple[Any, dict[str, Any]]:
        return self.io_type, dict(self.options)


def _v1_widget_options(widget: dict[str, Any]) -> dict[str, Any]:
    """V3's keyword names -> V1's option names (display_mode -> display, upload=UploadType.image -> image_upload...)."""
    renamed = {"display_mode": "display", "dynamic_prompts": "dynamicPrompts", "default_input": "defaultInput"}
    out: dict[str, Any] = {}
    for key, value in widget.items():
        if key == "upload" and value is not None:
            out[value.value if isinstance(value, Enum) else str(value)] = True
            continue
        out[renamed.get(key, key)] = value.value if isinstance(value, Enum) else value
    return out


class Output:
    """One output of a V3 schema."""

    io_type: ClassVar[str] = "*"

    def __init__(self, id: str | None = None, display_name: str | None = None,  # noqa: A002 - V3's name
                 tooltip: str | None = None, is_output_list: bool = False, **extra: Any) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


class ComfyType:
    """A V3 type: `io.Image.Input("image")`, `io.Image.Output()`, bound to its type name."""

    io_type: ClassVar[str] = "*"
    Input: ClassVar[type[Input]]
    Output: ClassVar[type[Output]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        io_type = cls.io_type
        base_input = cls.__dict__.get("Input", Input)
        base_output = cls.__dict__.get("Output", Output)
        cls.Input = type("Input", (base_input,), {"io_type": io_type, "__qualname__": f"{cls.__name__}.Input"})
        cls.Output = type("Output", (base_output,), {"io_type": io_type, "__qualname__": f"{cls.__name__}.Output"})


def _bound_type(name: str, io_type: str, base: type[ComfyType] | None = None, module: str = __name__) -> type[ComfyType]:
    """A ComfyType subclass for `io_type` (its Input and Output are bound to it when the class is made)."""
    return type(name, (base or ComfyType,), {"io_type": io_type, "__module__": module})


def Custom(io_type: str) -> type[ComfyType]:  # noqa: N802 - ComfyUI's name
    """A type of the plugin's own: `io.Custom("MY_TYPE").Input("thing")`."""
    return _bound_type(io_type, io_type)


ComfyTypeIO = ComfyType  # ComfyUI's bases for a type with inputs and outputs / inputs only
ComfyTypeI = ComfyType


def comfytype(io_type: str, **_: Any) -> Callable[[type[ComfyType]], type[ComfyType]]:
    """`@io.comfytype(io_type="MY_TYPE") class MyType(io.ComfyTypeIO): ...`: a plugin's own type."""
    def bind(cls: type[ComfyType]) -> type[ComfyType]:
        return _bound_type(cls.__name__, io_type, cls, cls.__module__)

    return bind


class UploadType(str, Enum):
    """`io.Combo.Input(..., upload=io.UploadType.image)`: the editor shows an upload button."""

    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class Combo(ComfyType):
    io_type = "COMBO"

    class Input(Input):
        def __init__(self, id: str, options: list[Any] | type[Enum] | None = None,  # noqa: A002
                     **kwargs: Any) -> None:
            super().__init__(id, **kwargs)
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            self.choices = list(options or [])
            if isinstance(self.options.get("default"), Enum):
                self.options["default"] = self.options["default"].value

        def as_v1(self) -> tuple[Any, dict[str, Any]]:
            return list(self.choices), dict(self.options)


class AnyType(ComfyType):
    io_type = "*"


class MultiType:
    """An input that accepts several types: `io.MultiType.Input("x", types=[io.Image, io.Mask])`."""

    class Input(Input):
        def __init__(self, id: str | Input, types: list[type[ComfyType] | str], **kwargs: Any) -> None:  # noqa: A002
            names = [t if isinstance(t, str) else t.io_type for t in types]
            if isinstance(id, Input):  # a widget input that also accepts links of these types
                kwargs = {**kwargs, **{k: v for k, v in id.options.items() if k != "display_name"},
                          "extra_dict": {"widgetType": id.io_type}}
                names = [id.io_type, *(n for n in names if n != id.io_type)]
                id = id.id  # noqa: A001
            super().__init__(id, **kwargs)
            self.types = names

        def as_v1(self) -> tuple[Any, dict[str, Any]]:
            return ",".join(self.types), dict(self.options)


# io.<Name> -> its type; Combo and MultiType above take inputs of their own shape.
_TYPE_NAMES = {
    "Int": "INT", "Float": "FLOAT", "String": "STRING", "Boolean": "BOOLEAN", "Image": "IMAGE", "Mask": "MASK",
    "Latent": "LATENT", "Conditioning": "CONDITIONING", "Model": "MODEL",
    "Clip": "CLIP", "Vae": "VAE", "ClipVision": "CLIP_VISION", "ClipVisionOutput": "CLIP_VISION_OUTPUT",
    "ControlNet": "CONTROL_NET", "Sampler": "SAMPLER", "Sigmas": "SIGMAS", "Noise": "NOISE", "Guider": "GUIDER",
    "UpscaleModel": "UPSCALE_MODEL", "StyleModel": "STYLE_MODEL", "Gligen": "GLIGEN", "LoraModel": "LORA_MODEL",
    "Audio": "AUDIO", "Video": "VIDEO", "Webcam": "WEBCAM",
}
for _name, _io_type in _TYPE_NAMES.items():
    globals()[_name] = _bound_type(_name, _io_type)


class Hidden(str, Enum):
    """The values the engine fills in; a node reads them as `cls.hidden.<name>`."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """`cls.hidden` during a call: every Hidden name, None where the schema did not ask for it."""

    def __init__(self, **values: Any) -> None:
        for member in Hidden:
            setattr(self, member.name, values.get(member.name))


# ------------------------------------------------------------------------------------------ schema


class Schema:
    """What a V3 node is: id, texts, inputs, outputs and behaviour flags.

    Fields newer ComfyUI versions add (price badges, ...) are accepted and kept in `extra`.
    """

    def __init__(self, node_id: str, display_name: str | None = None, category: str = "sd",
                 inputs: list[Input] | None = None, outputs: list[Output] | None = None,
                 hidden: list[Hidden] | None = None, description: str = "", search_aliases: list[str] | None = None,
                 is_input_list: bool = False, is_output_node: bool = False, is_deprecated: bool = False,
                 is_experimental: bool = False, is_api_node: bool = False, not_idempotent: bool = False,
                 enable_expand: bool = False, **extra: Any) -> None:
        self.node_id = node_id
        self.display_name = display_name
        self.category = category
        self.inputs = list(inputs or [])
        self.outputs = list(outputs or [])
        self.hidden = list(hidden or [])
        self.description = description
        self.search_aliases = list(search_aliases or [])
        self.is_input_list = is_input_list
        self.is_output_node = is_output_node
        self.is_deprecated = is_deprecated
        self.is_experimental = is_experimental
        self.is_api_node = is_api_node
        self.not_idempotent = not_idempotent
        self.enable_expand = enable_expand
        self.extra = extra


class NodeOutput:
    """What `execute` returns: the output values, and optionally `ui`, `expand` or `block_execution`."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict[str, Any] | None = None,
                 block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args or None


def _ui_dict(ui: Any) -> dict[str, Any] | None:
    if ui is None or isinstance(ui, dict):
        return ui
    if callable(getattr(ui, "as_dict", None)):
        return ui.as_dict()
    raise TypeError(f"NodeOutput ui must be a dict or a ui.* object, got {type(ui).__name__}")


# V1 attribute -> how to read it from the schema.
_V1_FROM_SCHEMA: dict[str, Callable[[Schema], Any]] = {
    "RETURN_TYPES": lambda s: tuple(o.io_type for o in s.outputs),
    "RETURN_NAMES": lambda s: tuple(o.display_name or o.id or o.io_type for o in s.outputs),
    "OUTPUT_TOOLTIPS": lambda s: tuple(o.tooltip for o in s.outputs),
    "OUTPUT_IS_LIST": lambda s: tuple(o.is_output_list for o in s.outputs),
    "CATEGORY": lambda s: s.category,
    "DESCRIPTION": lambda s: s.description,
    "OUTPUT_NODE": lambda s: s.is_output_node,
    "INPUT_IS_LIST": lambda s: s.is_input_list,
    "NOT_IDEMPOTENT": lambda s: s.not_idempotent,
    "DEPRECATED": lambda s: s.is_deprecated,
    "EXPERIMENTAL": lambda s: s.is_experimental,
    "SEARCH_ALIASES": lambda s: tuple(s.search_aliases),
}
# V1's names for V3's classmethods (the adapter reads their signatures).
_V1_METHODS = {"VALIDATE_INPUTS": "validate_inputs", "IS_CHANGED": "fingerprint_inputs"}
# Hidden inputs go under these V1 names, which no input of a plugin's own can have ("prompt" is common).
HIDDEN_PREFIX = "__hidden_"
_schemas: weakref.WeakKeyDictionary[type, Schema] = weakref.WeakKeyDictionary()


class _ComfyNodeType(ABCMeta):
    """Answers V1's class attributes (RETURN_TYPES, CATEGORY, VALIDATE_INPUTS, ...) from the schema.

    They are read when asked, not when the class is made: a schema may name things its module
    defines after the class, and a subclass may inherit `define_schema` and change what it reads.
    """

    def __getattr__(cls, name: str) -> Any:  # only for names the class itself does not have
        if name in _V1_FROM_SCHEMA:
            if cls not in _schemas:
                _schemas[cls] = cls.GET_SCHEMA()
            return _V1_FROM_SCHEMA[name](_schemas[cls])
        if name in _V1_METHODS:
            return getattr(cls, _V1_METHODS[name])  # AttributeError when the node does not define it
        raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")


class ComfyNode(metaclass=_ComfyNodeType):
    """Base class of V3 nodes: `define_schema()` and `execute(...)`, both classmethods."""

    hidden: ClassVar[HiddenHolder] = HiddenHolder()
    FUNCTION: ClassVar[str] = "EXECUTE_NORMALIZED"

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} must define define_schema()")

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError(f"{cls.__name__} must define execute()")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802 - ComfyUI's name
        schema = cls.define_schema()
        if not isinstance(schema, Schema):
            raise TypeError(f"{cls.__name__}.define_schema() must return an io.Schema, got {type(schema).__name__}")
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, dict[str, Any]]:  # noqa: N802 - read anew each time: combos list files
        schema = cls.GET_SCHEMA()
        declared: dict[str, dict[str, Any]] = {"required": {}, "optional": {}}
        for item in schema.inputs:
            declared["optional" if item.optional else "required"][item.id] = item.as_v1()
        declared["hidden"] = {HIDDEN_PREFIX + member.name: member.value for member in map(Hidden, schema.hidden)}
        return declared

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs: Any) -> Any:  # noqa: N802
        """Run `execute` on a subclass with the hidden values bound; the result in V1's dict form."""
        hidden = {key[len(HIDDEN_PREFIX):]: kwargs.pop(key) for key in list(kwargs) if key.startswith(HIDDEN_PREFIX)}
        if cls.INPUT_IS_LIST:  # every input arrives as a list then, the hidden ones too
            hidden = {k: v[0] if isinstance(v, list) and v else v for k, v in hidden.items()}
        bound = type(cls.__name__, (cls,), {"hidden": HiddenHolder(**hidden), "__module__": cls.__module__})
        result = bound.execute(**kwargs)
        if inspect.isawaitable(result):
            return _finish_async(result, len(cls.RETURN_TYPES))
        return _as_v1_result(result, len(cls.RETURN_TYPES))


async def _finish_async(result: Any, outputs: int) -> Any:
    return _as_v1_result(await result, outputs)


def _as_v1_result(result: Any, outputs: int) -> Any:
    if isinstance(result, ExecutionBlocker):
        return result
    if not isinstance(result, NodeOutput):
        raise TypeError(f"a V3 node's execute() must return io.NodeOutput, got {type(result).__name__}")
    if result.block_execution is not None:
        return {"result": tuple(ExecutionBlocker(result.block_execution) for _ in range(outputs))}
    out: dict[str, Any] = {"result": result.args}
    ui = _ui_dict(result.ui)
    if ui is not None:
        out["ui"] = ui
    if result.expand is not None:
        out["expand"] = result.expand
    return out


__all__ = ["AnyType", "Combo", "ComfyNode", "ComfyType", "ComfyTypeI", "ComfyTypeIO", "Custom", "FolderType", "Hidden",
           "HiddenHolder", "Input", "MultiType", "NodeOutput", "NumberDisplay", "Output", "Schema", "UploadType",
           "comfytype",
           *_TYPE_NAMES]
