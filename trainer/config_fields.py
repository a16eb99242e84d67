"""The JSON types of the config's fields as pydantic checks them, and its refusals in words.

A value has the JSON type its schema states: not "3" for an integer, nor 1 or "yes" for a
boolean (pydantic's strict types), but 2.0 is the integer 2, as in JSON Schema (`WHOLE`, after
a field's bounds). Unless the check is strict, what a command line gives counts too: "true" or
"false" for a boolean, one number for a list of one. trainer.config declares the fields; a
refusal says what the field's published schema allows (`allowed`) unless the field `Says` it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    PlainValidator,
    Strict,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)

from trainer.errors import ConfigError

PRINTABLE = r"[^\x00-\x1f\x7f]{0,1024}"


class Says(str):
    """A field's refusal in words where its schema's bounds would not say it clearly."""


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _boolean(value: Any, info: ValidationInfo) -> Any:
    loose = (info.context or {}).get("loose") and isinstance(value, str)
    return value.lower() == "true" if loose and value.lower() in ("true", "false") else value


def _listed(value: Any, info: ValidationInfo) -> Any:
    if (info.context or {}).get("loose") and type(value) in (int, float):
        value = [value]
    return tuple(value) if isinstance(value, list) else value


def _printable(value: Any) -> str:
    # Python's own match, not pydantic's strings: those refuse what os.fsdecode makes of a file
    # name that is not UTF-8 (lone surrogates).
    if isinstance(value, str) and re.fullmatch(PRINTABLE, value):
        return value
    raise ValueError("not printable text")


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict(), BeforeValidator(_boolean)]
WHOLE = BeforeValidator(_whole)
LISTED = BeforeValidator(_listed)
Printable = Annotated[str, PlainValidator(_printable),
                      WithJsonSchema({"type": "string", "pattern": f"^({PRINTABLE})$"})]


def refusal(exc: ValidationError, values: Mapping[str, Any], schema: Mapping[str, Any],
            hints: Mapping[str, Any]) -> ConfigError:
    """The first problem found (the first unknown key by name, else the first field in order)
    as a ConfigError naming the key and what its value must be. `hints`: the config's type hints
    with their metadata, where a field's Says is found."""
    errors, props = exc.errors(), schema["properties"]
    unknown = sorted(str(e["loc"][0]) for e in errors if e["loc"][0] not in props)
    if unknown:
        return ConfigError(unknown[0], f"unknown key; valid keys are: {', '.join(sorted(props))}")
    key = str(errors[0]["loc"][0])
    says = [m for m in getattr(hints[key], "__metadata__", ()) if isinstance(m, Says)]
    return ConfigError(key, f"must be {says[0] if says else allowed(props[key])} "
                            f"(got {short(values[key])})")


def allowed(prop: Mapping[str, Any]) -> str:
    """The values a property of the config's JSON Schema allows, in words."""
    if "enum" in prop:
        return "one of " + ", ".join(prop["enum"])
    if prop["type"] == "array":
        return f"a list of at most {prop['maxItems']} numbers in {_interval(prop['items'])}"
    if prop["type"] == "integer":
        return f"an integer between {prop['minimum']} and {prop['maximum']}"
    if prop["type"] == "number":
        return f"a number in {_interval(prop)}"
    return "true or false" if prop["type"] == "boolean" else "a string"


def _interval(prop: Mapping[str, Any]) -> str:
    low = f"[{prop['minimum']}" if "minimum" in prop else f"({prop['exclusiveMinimum']}"
    return low + (f", {prop['maximum']}]" if "maximum" in prop else
                  f", {prop['exclusiveMaximum']})")


def short(value: Any) -> str:
    """repr(value) for a message, cut short (an int of 4,300+ digits has no repr at all)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"
