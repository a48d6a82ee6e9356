"""Field readers for client messages: each names the field in its error, so that a client's
author sees what was wrong. Pure; shared by signaling.messages and signaling.control_messages."""

from __future__ import annotations

import math
from typing import Any

from signaling.errors import BadMessage, Re

JsonObject = dict[str, Any]
MAX_ID_CHARS = 64
PCS = ("publisher", "subscriber")


def read_str(obj: JsonObject, key: str, re: Re, *, optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadMessage(f"'{key}' must be a string", re=re)
    return value


def read_bool(obj: JsonObject, key: str, re: Re, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise BadMessage(f"'{key}' must be true or false", re=re)
    return value


def read_int(obj: JsonObject, key: str, re: Re) -> int:
    value = obj.get(key)
    # bool is an int in Python but not in JSON's sense
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadMessage(f"'{key}' must be an integer", re=re)
    return value


def read_str_list(obj: JsonObject, key: str, re: Re) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadMessage(f"'{key}' must be a list of strings", re=re)
    return tuple(value)


def read_pc(obj: JsonObject, re: Re, allowed: tuple[str, ...] = PCS) -> str:
    pc = obj.get("pc")
    if pc not in allowed:
        raise BadMessage(f"'pc' must be one of {', '.join(allowed)}", re=re)
    return str(pc)


def read_id(obj: JsonObject) -> Re:
    if "id" not in obj or obj["id"] is None:
        return None
    value = obj["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadMessage("'id' must be a string or an integer")
    if len(str(value)) > MAX_ID_CHARS:
        raise BadMessage("'id' is over 64 characters")
    return value


def read_number(o: JsonObject, key: str, re: Re, top: float, *, optional: bool = False) -> Any:
    """A finite JSON number from 0 to `top` (not a boolean), as a float."""
    value = o.get(key)
    if value is None and optional:
        return None
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not 0 <= value <= top):
        raise BadMessage(f"'{key}' must be a number from 0 to {top:g}", re=re)
    return float(value)
