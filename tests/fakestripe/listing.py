"""Stripe's list answers: `{"object": "list", "data", "has_more", "url"}`, newest first, paged with
`limit` (1 to 100, default 10), `starting_after` / `ending_before`, and `created` filters
(`created=<t>` or `created[gt|gte|lt|lte]=<t>`)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from tests.fakestripe.errors import invalid_request, no_such
from tests.fakestripe.forms import param_int, param_str

PAGING = ("limit", "starting_after", "ending_before")
_BOUNDS: dict[str, Callable[[int, int], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def created_filter(params: Mapping[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    value = params.get("created")
    if value is None or value == "":
        return items
    if isinstance(value, str):
        exact = param_int(params, "created")
        return [item for item in items if item["created"] == exact]
    if not isinstance(value, dict):
        raise invalid_request("Invalid created filter", param="created")
    bounds: dict[str, int] = {}
    for op in value:
        if op not in _BOUNDS:
            raise invalid_request(f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
        number = param_int(value, op)
        if number is not None:
            bounds[op] = number

    return [
        item for item in items if all(_BOUNDS[op](item["created"], bound) for op, bound in bounds.items())
    ]


def page(items: list[dict[str, Any]], params: Mapping[str, Any], url: str, kind: str) -> dict[str, Any]:
    """One page of `items` (already filtered, newest first)."""
    limit = param_int(params, "limit")
    if limit is None:
        limit = 10
    if not 1 <= limit <= 100:
        raise invalid_request(
            "This value must be greater than or equal to 1 and less than or equal to 100.", param="limit"
        )
    after = param_str(params, "starting_after")
    before = param_str(params, "ending_before")
    ids = [item["id"] for item in items]
    if after is not None:
        if after not in ids:
            raise no_such(kind, after, param="starting_after")
        rest = items[ids.index(after) + 1 :]
        chosen, has_more = rest[:limit], len(rest) > limit
    elif before is not None:
        if before not in ids:
            raise no_such(kind, before, param="ending_before")
        newer = items[: ids.index(before)]
        chosen, has_more = newer[-limit:], len(newer) > limit
    else:
        chosen, has_more = items[:limit], len(items) > limit
    return {"object": "list", "data": chosen, "has_more": has_more, "url": url}
