"""Every REST operation, fuzzed from the OpenAPI document against the running platform.

Valid and invalid requests (the document's examples, boundary values from the coverage phase, then
generated ones) must never get a 5xx; every answer must be a status the operation documents, with a
body matching its documented schema; a request the document calls invalid must get a 4xx.

The operations are collected from the document the edge application builds (collection happens
before any process runs); the first test proves that the running edge serves exactly that document.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any

import httpx
import schemathesis
from schemathesis import Config
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from chatpop_edge.app import create_app
from chatpop_edge.routes.meta import OPENAPI_URL
from chatpop_edge.settings import EdgeSettings

if TYPE_CHECKING:
    from tests.fuzz.conftest import World

# Generated examples per operation and mode (the coverage phase adds its boundary cases on top).
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "30"))
# A fixed seed makes every run the same run, so a failure reproduces; FUZZ_SEED=<n> explores elsewhere.
SEED = int(os.environ.get("FUZZ_SEED", "20240601"))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Operations on a room's messages take its room token; everything else the session's access token.
# Most cases carry the token their operation takes; the rest the other kind, none, or a forged one.
TOKEN_CHOICES = {"right": 17, "other": 1, "none": 1, "forged": 1}
ROOM_TOKEN_PATHS = {
    "/api/v1/rooms/{code}/messages",
    "/api/v1/rooms/{code}/read",
    "/api/v1/rooms/{code}/participants",
    "/api/v1/rooms/{code}/media",
    "/api/v1/rooms/{code}/media/urls",
}
# Operations that use a room up get a fresh one when they get a real one.
ROOM_CONSUMING = {("POST", "/api/v1/rooms/{code}/close")}
# The share of cases that name the session's own room, so they get past "no such room".
REAL_ROOM_SHARE = 0.85
# Seeded, so a run repeats.
_chooser = random.Random(SEED)


def edge_document() -> dict[str, Any]:
    settings = EdgeSettings.model_validate(
        {
            "ip_hash_key": "fuzz-tier-ip-hash-key-0123456789",
            "media_url_key": "m" * 32,
            "service_token_secret": "s" * 32,
        }
    )
    return create_app(settings).openapi()


# Values past what the services' types hold, and characters that break naive handling: every integer
# and string field of every operation is given one of them often (only the ones the document allows
# when the case is meant to be valid).
INT64_MAX = 2**63 - 1
EDGE_INTEGERS = [0, -1, 2**31, 2**53 - 1, 2**53, INT64_MAX, INT64_MAX + 1, 2**64, -(2**63) - 1, 10**30]
EDGE_STRINGS = [
    *("\n", "a\nb", "two\r\nlines", "tab\tbed", "nul\x00led", " ", "\u202e", "\U0001f600"),
    *("%00", "a/../b", "\\", "'\"", "9" * 40),
]
DICTIONARIES = {"integer": ("edge-integers", 0.5), "string": ("edge-strings", 0.5)}


def _kind(schema: dict[str, Any]) -> str | None:
    types = {schema.get("type"), *(branch.get("type") for branch in schema.get("anyOf", []))}
    return next((kind for kind in DICTIONARIES if kind in types), None)


def _fields(document: dict[str, Any]) -> dict[str, str]:
    """`location.name` → integer or string, for every parameter and top-level request body field."""
    schemas = document["components"]["schemas"]
    fields: dict[str, str] = {}
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                fields[f"{parameter['in']}.{parameter['name']}"] = _kind(parameter["schema"]) or ""
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = body.get("schema", {}).get("$ref", "")
            if ref:
                for name, field in schemas[ref.rsplit("/", 1)[-1]].get("properties", {}).items():
                    fields[f"body.{name}"] = _kind(field) or ""
    return {name: kind for name, kind in fields.items() if kind}


def fuzz_config(document: dict[str, Any]) -> Config:
    return Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "dictionaries": {
                "edge-integers": {"values": EDGE_INTEGERS},
                "edge-strings": {"values": EDGE_STRINGS},
            },
            "parameters": {
                field: {"dictionary": DICTIONARIES[kind][0], "probability": DICTIONARIES[kind][1]}
                for field, kind in sorted(_fields(document).items())
            },
            # Requests carry the World's tokens (the security scheme is not fuzzed); no example
            # database, so a run leaves nothing behind.
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "with-security-parameters": False,
                "database": "none",
            },
            "phases": {"stateful": {"enabled": False}},
            # An invalid body may also be refused for its size (413) before anything reads it.
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
                }
            },
        }
    )


DOCUMENT = edge_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=fuzz_config(DOCUMENT))


def test_the_running_edge_serves_the_fuzzed_document(world: World) -> None:
    served = httpx.get(f"{world.base_url}{OPENAPI_URL}", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
def test_operation(case: schemathesis.Case, world: World) -> None:
    operation = case.operation
    real_room = _chooser.random() < REAL_ROOM_SHARE
    meta = case.meta
    path_is_invalid = meta is not None and meta.is_negative_at(ParameterLocation.PATH)
    if real_room and "code" in (case.path_parameters or {}) and not path_is_invalid:
        if (operation.method.upper(), operation.path) in ROOM_CONSUMING:
            case.path_parameters["code"] = world.new_room()
        else:
            case.path_parameters["code"] = world.room_code
    case.call_and_validate(
        base_url=world.base_url, headers=auth_header(world, operation.path), checks=CHECKS, timeout=10
    )


def auth_header(world: World, path: str) -> dict[str, str]:
    right, other = (world.room_token, world.access_token)
    if path not in ROOM_TOKEN_PATHS:
        right, other = other, right
    choice = _chooser.choices(list(TOKEN_CHOICES), weights=list(TOKEN_CHOICES.values()))[0]
    token = {"right": right, "other": other, "forged": right[:-4] + "AAAA", "none": ""}[choice]
    return {"Authorization": f"Bearer {token}"} if token else {}
