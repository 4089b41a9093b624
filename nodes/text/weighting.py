"""ComfyUI's prompt weighting syntax: `(text:1.2)`, `(text)` = x1.1 per level, `\\(` `\\)` escapes.

An explicit `:weight` sets the weight of its group outright (it does not multiply the enclosing
weight); a bare group multiplies the enclosing weight by 1.1. There is no A1111 `[...]`
de-emphasis and no `BREAK`. An unmatched `(` makes the rest of the text literal, an unmatched
`)` is literal.
"""
from __future__ import annotations

__all__ = ["parse_weights", "BARE_GROUP_FACTOR"]

BARE_GROUP_FACTOR = 1.1
# Escaped parentheses become private-use characters while groups are found, then turn back into text.
_OPEN, _CLOSE = "\ue000", "\ue001"


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split `text` into (segment, weight) pairs in order; segments keep their spaces."""
    out: list[tuple[str, float]] = []
    _parse(text.replace("\\(", _OPEN).replace("\\)", _CLOSE), 1.0, out)
    return [(seg.replace(_OPEN, "(").replace(_CLOSE, ")"), w) for seg, w in out if seg]


def _parse(text: str, weight: float, out: list[tuple[str, float]]) -> None:
    depth, start, literal = 0, 0, []
    for i, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                if literal:
                    out.append(("".join(literal), weight))
                    literal = []
                start = i
            depth += 1
        elif ch == ")" and depth > 0:
            depth -= 1
            if depth == 0:
                _group(text[start + 1:i], weight, out)
        elif depth == 0:
            literal.append(ch)
    if depth > 0:
        literal.append(text[start:])  # unclosed group: its text, parentheses and all, is plain text
    if literal:
        out.append(("".join(literal), weight))


def _group(inner: str, weight: float, out: list[tuple[str, float]]) -> None:
    group_weight = weight * BARE_GROUP_FACTOR
    colon = inner.rfind(":")
    if colon > 0:
        try:
            group_weight = float(inner[colon + 1:])
            inner = inner[:colon]
        except ValueError:
            pass  # "(a:b)" is text with a colon, weighted like a bare group
    _parse(inner, group_weight, out)
