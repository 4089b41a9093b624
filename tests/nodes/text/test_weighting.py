"""Prompt weighting syntax, checked by hand against ComfyUI's rules."""
from __future__ import annotations

import pytest

from nodes.text.weighting import parse_weights


@pytest.mark.parametrize(("text", "expected"), [
    ("a photo of a cat", [("a photo of a cat", 1.0)]),
    ("a (cat:1.2) photo", [("a ", 1.0), ("cat", 1.2), (" photo", 1.0)]),
    ("(cat)", [("cat", pytest.approx(1.1))]),
    ("((cat))", [("cat", pytest.approx(1.21))]),
    ("(((cat)))", [("cat", pytest.approx(1.331))]),
    # an explicit weight replaces the enclosing one; bare groups inside it multiply it
    ("((cat:0.5))", [("cat", 0.5)]),
    ("(a (b) c:1.5)", [("a ", 1.5), ("b", pytest.approx(1.65)), (" c", 1.5)]),
    ("(a (b:0.8) c)", [("a ", pytest.approx(1.1)), ("b", 0.8), (" c", pytest.approx(1.1))]),
    # escapes are literal parentheses at the enclosing weight
    (r"\(cat\)", [("(cat)", 1.0)]),
    (r"(a \(b\):1.3)", [("a (b)", 1.3)]),
    # a colon that is not a weight stays text; the group still counts as a bare group
    ("(a:b)", [("a:b", pytest.approx(1.1))]),
    ("(ratio 16:9)", [("ratio 16", 9.0)]),  # as in ComfyUI: whatever follows the last colon and parses is the weight
    ("(:1.5)", [(":1.5", pytest.approx(1.1))]),
    ("(cat: 1.5 )", [("cat", 1.5)]),
    ("(cat:0)", [("cat", 0.0)]),
    # malformed input: unmatched '(' leaves the rest as text, unmatched ')' is text
    ("a (cat", [("a ", 1.0), ("(cat", 1.0)]),
    ("a ((b) c", [("a ", 1.0), ("((b) c", 1.0)]),
    ("a) (b)", [("a) ", 1.0), ("b", pytest.approx(1.1))]),
    ("()", []),
    ("", []),
])
def test_parse_weights(text: str, expected: list) -> None:
    assert parse_weights(text) == expected
