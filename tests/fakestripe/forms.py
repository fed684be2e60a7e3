"""Stripe's form encoding: `metadata[order_id]=1`, `expand[]=x`, `expand[0]=x`, `a[b][0][c]=y`.

`decode` turns the pairs of a query string or form body into nested dicts and lists, as Stripe reads
them; the `param_*` readers take one value out with Stripe's wording when it is of the wrong kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from tests.fakestripe.errors import invalid_request

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
# Keys under these names are the caller's own words, never list positions.
_FREE_FORM = {"metadata"}


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        _insert(root, _split(key), value)
    return {name: _finish(name, node) for name, node in root.items()}


def decode_text(text: str) -> dict[str, Any]:
    return decode(parse_qsl(text, keep_blank_values=True))


def _split(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    return [head, *_SEGMENT.findall("[" + rest)]


def _insert(node: dict[str, Any], parts: list[str], value: str) -> None:
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        name = part if part != "" else str(len(node))
        if last:
            node[name] = value
            return
        child = node.get(name)
        if not isinstance(child, dict):
            child = {}
            node[name] = child
        node = child


def _finish(name: str, node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if name not in _FREE_FORM and node and all(key.isdigit() for key in node):
        return [_finish("", node[key]) for key in sorted(node, key=int)]
    return {key: _finish("" if name in _FREE_FORM else key, value) for key, value in node.items()}


def flatten(params: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every leaf's name in bracket notation (`transfer_data[destination]`), for unknown-parameter checks."""
    names: list[str] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if isinstance(value, dict):
            names.extend(flatten(value, name) or [name])
        else:
            names.append(name)
    return names


def refuse_unknown(params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Stripe refuses a parameter it does not know; `allowed` names top-level parameters, or nested
    ones as `parent[child]` (a parent given alone accepts any children, as `metadata` does)."""
    known = set(allowed) | {"expand"}
    for key, value in params.items():
        if key not in known:
            raise invalid_request(f"Received unknown parameter: {key}", param=key)
        nested = {name.split("[", 1)[1][:-1] for name in known if name.startswith(key + "[")}
        if nested and isinstance(value, dict):
            for child in value:
                if child not in nested:
                    raise invalid_request(
                        f"Received unknown parameter: {key}[{child}]", param=f"{key}[{child}]"
                    )


def param_str(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise invalid_request(f"Missing required param: {name}.", param=name, code="parameter_missing")
        return None
    if not isinstance(value, str):
        raise invalid_request(f"Invalid string: {value!r}", param=name)
    return value


def param_int(params: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    text = param_str(params, name, required=required)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise invalid_request(f"Invalid integer: {text}", param=name) from None


def param_bool(params: Mapping[str, Any], name: str, default: bool = False) -> bool:
    text = param_str(params, name)
    if text is None:
        return default
    if text not in ("true", "false"):
        raise invalid_request(f"Invalid boolean: {text}", param=name)
    return text == "true"


def param_list(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise invalid_request(f"Invalid array: {name}", param=name)


def param_dict(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid object: {name}", param=name)
    return value


def param_metadata(params: Mapping[str, Any], current: Mapping[str, str] | None = None) -> dict[str, str]:
    """Metadata merged as Stripe merges it: keys set to "" are removed, `metadata=""` clears all."""
    merged = dict(current or {})
    value = params.get("metadata")
    if value == "":
        return {}
    for key, item in param_dict(params, "metadata").items():
        if not isinstance(item, str):
            raise invalid_request(f"Invalid metadata value for {key}", param=f"metadata[{key}]")
        if item == "":
            merged.pop(key, None)
        else:
            merged[key] = item
    if len(merged) > 50:
        raise invalid_request("You can specify up to 50 keys in metadata.", param="metadata")
    return merged
