"""Type names and typing helpers that V1 plugins annotate their nodes with (`comfy.comfy_types`)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from enum import StrEnum
from typing import Any, ClassVar, Literal, TypedDict

__all__ = ["CheckLazyMixin", "ComfyNodeABC", "FileLocator", "IO", "InputTypeDict", "InputTypeOptions"]


class IO(StrEnum):
    """The socket type names of the engine; a member is the plain string the schema uses (`IO.IMAGE == "IMAGE"`)."""

    ANY = "*"
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"
    STRING = "STRING"
    INT = "INT"
    FLOAT = "FLOAT"
    BOOLEAN = "BOOLEAN"
    COMBO = "COMBO"
    IMAGE = "IMAGE"
    MASK = "MASK"
    LATENT = "LATENT"
    CONDITIONING = "CONDITIONING"
    MODEL = "MODEL"
    CLIP = "CLIP"
    VAE = "VAE"
    CONTROL_NET = "CONTROL_NET"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    STYLE_MODEL = "STYLE_MODEL"
    GLIGEN = "GLIGEN"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    SAMPLER = "SAMPLER"
    SIGMAS = "SIGMAS"
    NOISE = "NOISE"
    GUIDER = "GUIDER"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    TOKENS = "TOKENS"


class InputTypeOptions(TypedDict, total=False):
    """The options dict of one V1 input: `("INT", {"default": 1, "min": 0, ...})`."""

    default: Any
    min: float
    max: float
    step: float
    round: float
    display: Literal["number", "slider", "color"]
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    label_on: str
    label_off: str
    tooltip: str
    forceInput: bool
    defaultInput: bool
    lazy: bool
    rawLink: bool
    control_after_generate: bool
    image_upload: bool
    image_folder: Literal["input", "output", "temp"]
    options: list[str]
    multi_select: bool
    advanced: bool


class InputTypeDict(TypedDict, total=False):
    """What a V1 `INPUT_TYPES()` returns."""

    required: dict[str, tuple[Any, ...]]
    optional: dict[str, tuple[Any, ...]]
    hidden: dict[str, str]


class ComfyNodeABC(ABC):
    """A base class V1 nodes may inherit to declare the class attributes the engine reads."""

    DESCRIPTION: ClassVar[str]
    CATEGORY: ClassVar[str]
    RETURN_TYPES: ClassVar[tuple[str, ...]]
    RETURN_NAMES: ClassVar[tuple[str, ...]]
    OUTPUT_TOOLTIPS: ClassVar[tuple[str, ...]]
    FUNCTION: ClassVar[str]
    OUTPUT_NODE: ClassVar[bool]
    INPUT_IS_LIST: ClassVar[bool]
    OUTPUT_IS_LIST: ClassVar[tuple[bool, ...]]
    DEPRECATED: ClassVar[bool]
    EXPERIMENTAL: ClassVar[bool]

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:  # noqa: N802 - ComfyUI's name
        """The node's inputs."""


class CheckLazyMixin:
    """Default lazy check: ask for every lazy input that has not been evaluated yet (its value is None)."""

    def check_lazy_status(self, **kwargs: Any) -> list[str]:
        return [name for name, value in kwargs.items() if value is None]


class FileLocator(TypedDict):
    """Where a file the UI shows lives: `{"filename", "subfolder", "type"}`."""

    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]
