"""A config field's limits, written once in its metadata (`bounded`), and the three things
read from them: the value's JSON type (`coerce`), what is wrong with it (`problem`) and its
JSON Schema (`json_property`). trainer.config declares the fields."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping
from typing import Any

from trainer.errors import ConfigError

BOUND_KEYS = ("ge", "gt", "le", "lt", "choices", "pattern", "zero_allowed", "max_items",
              "message")
_KIND = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_SCHEMA = (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"),
           ("lt", "exclusiveMaximum"))


def bounded(text: str, **kw: Any) -> Any:
    """A field with its meaning and its limits: ge/gt/le/lt (numbers, or each item of a list),
    choices, pattern (strings, whole match), zero_allowed (0 also valid, outside the bounds),
    max_items (lists), message (instead of the one made from the bounds)."""
    bounds = {k: kw.pop(k) for k in BOUND_KEYS if k in kw}
    return dataclasses.field(metadata={"doc": text, **bounds}, **kw)


def coerce(key: str, hint: Any, value: Any, strict: bool = False) -> Any:
    """`value` as the field's type; ints are accepted for floats, lists for tuples (and,
    unless `strict`, "true"/"false" for booleans and one number for a list)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(hint) is tuple:
        value = [value] if number and not strict else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list of numbers (got {short(value)})")
        return tuple(coerce(key, typing.get_args(hint)[0], v, strict) for v in value)
    if hint is bool and not strict and isinstance(value, str) and value.lower() in (
            "true", "false"):
        return value.lower() == "true"
    if hint is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if hint is float and number:
        try:
            as_float = float(value)
        except OverflowError:  # an integer too large for a float
            as_float = math.inf
        if not math.isfinite(as_float):
            raise ConfigError(key, f"must be a finite number (got {short(value)})")
        return as_float
    if isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value
    raise ConfigError(key, f"must be {_KIND[hint]} (got {short(value)})")


def problem(meta: Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with `value` under a field's bounds (None: nothing)."""
    items = value if isinstance(value, tuple) else (value,)
    if "max_items" in meta and len(items) > meta["max_items"]:
        return f"must have at most {meta['max_items']} items"
    if "choices" in meta:
        ok = value in meta["choices"]
    elif "pattern" in meta:
        ok = re.fullmatch(meta["pattern"], value) is not None
    else:
        ok = (meta.get("zero_allowed") and value == 0) or all(_within(meta, x) for x in items)
    if ok:
        return None
    if "message" in meta:
        return meta["message"]
    if "choices" in meta:
        return f"must be one of {', '.join(meta['choices'])}"
    if isinstance(value, int) and "ge" in meta and "le" in meta:
        return f"must be between {meta['ge']} and {meta['le']}"
    low = f"[{meta['ge']}" if "ge" in meta else f"({meta.get('gt', '-inf')}"
    return f"must be in {low}, " + (f"{meta['le']}]" if "le" in meta else
                                    f"{meta.get('lt', 'inf')})")


def _within(meta: Mapping[str, Any], x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return True
    return (x >= meta.get("ge", x) and x <= meta.get("le", x)
            and ("gt" not in meta or x > meta["gt"]) and ("lt" not in meta or x < meta["lt"]))


def json_property(hint: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a field's values (without its default and description)."""
    bounds = {key: meta[name] for name, key in _SCHEMA if name in meta}
    if hint is bool:
        return {"type": "boolean"}
    if hint is str:
        return {"type": "string", **({"enum": list(meta["choices"])} if "choices" in meta else
                                     {"pattern": f"^({meta['pattern']})$"} if "pattern" in meta
                                     else {})}
    if typing.get_origin(hint) is tuple:
        return {"type": "array", "items": {"type": "number", **bounds},
                **({"maxItems": meta["max_items"]} if "max_items" in meta else {})}
    kind = "integer" if hint is int else "number"
    return {"type": kind, **({"anyOf": [{"const": 0}, bounds]} if meta.get("zero_allowed")
                             else bounds)}


def short(value: Any) -> str:
    """repr(value) for a message, cut short (an int of 4,300+ digits has no repr at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"
