"""A single-file diffloom plugin whose node parameter has no spec: the declaration raises at import."""
from __future__ import annotations

from graph.api import node


@node(outputs="INT")
def NoSpec(value: int = 3) -> int:
    """Forgot to say what `value` is."""
    return value
