"""A sub-module of the good plugin."""
from __future__ import annotations

from graph.api import In, node


@node(category="good_pack", outputs="STRING", display_name="Shout it")
def Shout(text: str = In("STRING")) -> str:
    """Upper-case text."""
    return text.upper() + "!"
