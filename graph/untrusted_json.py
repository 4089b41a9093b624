"""Parse JSON that arrives from outside (request bodies, websocket messages) under the rules a browser keeps.

Python's `json.loads` accepts more than JSON: `NaN` and `Infinity`, numbers that overflow to
infinity, lone UTF-16 surrogates (`"\\ud800"`, which no UTF-8 file or SQLite text can hold), and
nesting so deep that it raises RecursionError (or leaves so little stack that the next recursive
step does). Accepted, such values travel into the queue and the history, where they break every
browser that reads them (`JSON.parse` refuses NaN) or the store itself. `loads_untrusted` refuses
them up front with a message that says what was wrong.
"""
from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "UntrustedJSONError", "loads_untrusted"]

MAX_JSON_DEPTH = 128
"""Deepest nesting of lists and objects accepted; real workflows stay below 20."""


class UntrustedJSONError(ValueError):
    """Text that is not JSON, or JSON that diffloom does not accept (the message says which rule)."""


def _no_constant(name: str) -> Any:
    raise UntrustedJSONError(f"{name} is not a JSON number (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UntrustedJSONError(f"the number {text[:40]} is too large for a 64-bit float")
    return value


def _check_text(text: str, where: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UntrustedJSONError(f"{where} holds a lone UTF-16 surrogate ({text[exc.start]!r}); "
                                     "JSON text must be valid Unicode") from None


def check_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise UntrustedJSONError if a parsed value nests deeper than max_depth or holds a lone surrogate."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, "a string")
        elif isinstance(item, (list, dict)):
            if depth >= max_depth:
                raise UntrustedJSONError(f"the JSON nests lists and objects more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key, "an object key")
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def loads_untrusted(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse raw as strict JSON (see the module docstring); UntrustedJSONError says why it was refused."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except UntrustedJSONError:
        raise
    except RecursionError:
        raise UntrustedJSONError(f"the JSON nests lists and objects more than {max_depth} levels deep") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, bad UTF-8, too many integer digits
        raise UntrustedJSONError(str(exc)) from None
    check_value(value, max_depth)
    return value
