"""REST values out of bounds through a real edge (uvicorn) in front of fake gRPC services.

A seq past the services' int64, a number given as a string or a boolean, a room code no room can
have: each is a 422 `invalid_request` naming the field, as the OpenAPI document says, never a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from test_edge_support import (
    FakeServices,
    assert_matches_openapi,
    edge_settings,
    fake_services,
    json_or_none,
    running_edge,
    unique,
)

from chatpop_edge.models import MAX_SEQ

BIG = 2**63


@dataclass
class Edge:
    fakes: FakeServices
    http: httpx.AsyncClient
    openapi: dict[str, Any]
    access_token: str
    code: str
    room_token: str

    async def call(
        self, method: str, url: str, template: str, *, token: str, expect: int, **kwargs: Any
    ) -> Any:
        response = await self.http.request(
            method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs
        )
        assert response.status_code == expect, response.text
        body = json_or_none(response.content)
        assert_matches_openapi(self.openapi, method, template, response.status_code, body)
        return body


@pytest_asyncio.fixture(scope="module")
async def edge() -> AsyncIterator[Edge]:
    async with (
        fake_services() as fakes,
        running_edge(edge_settings(fakes)) as base_url,
        httpx.AsyncClient(base_url=base_url) as http,
    ):
        openapi = (await http.get("/api/v1/openapi.json")).json()
        access = (await http.post("/api/v1/auth/anonymous")).json()["access_token"]
        bearer = {"Authorization": f"Bearer {access}"}
        room = (await http.post("/api/v1/rooms", json={"name": "Bounds"}, headers=bearer)).json()
        joined = await http.post(
            f"/api/v1/rooms/{room['code']}/join", json={"username": "Bounds"}, headers=bearer
        )
        yield Edge(fakes, http, openapi, access, room["code"], joined.json()["room_token"])


def invalid_field(body: Any) -> str:
    """The field a 422 `invalid_request` names."""
    assert body["error"]["code"] == "invalid_request", body
    return str(body["error"]["message"]).split(":")[0]


@pytest.mark.parametrize(
    "before_seq", [str(BIG), str(MAX_SEQ + 1), "1" + "0" * 400, "0", "-1", "1.5", "true"]
)
async def test_history_before_a_seq_out_of_range_is_422(edge: Edge, before_seq: str) -> None:
    body = await edge.call(
        "GET",
        f"/api/v1/rooms/{edge.code}/messages?before_seq={before_seq}",
        "/api/v1/rooms/{code}/messages",
        token=edge.room_token,
        expect=422,
    )
    assert invalid_field(body) == "query.before_seq"


async def test_history_before_the_largest_seq_is_the_newest_page(edge: Edge) -> None:
    body = await edge.call(
        "GET",
        f"/api/v1/rooms/{edge.code}/messages?before_seq={MAX_SEQ}",
        "/api/v1/rooms/{code}/messages",
        token=edge.room_token,
        expect=200,
    )
    assert body["has_more"] is False


@pytest.mark.parametrize("reply_to_seq", [BIG, MAX_SEQ + 1, 2**64, 0, "5", True, 1.5, 1.0, [1], {"seq": 1}])
async def test_a_reply_to_a_seq_out_of_range_is_422(edge: Edge, reply_to_seq: Any) -> None:
    client_msg_id = unique("bounded-")
    body = await edge.call(
        "POST",
        f"/api/v1/rooms/{edge.code}/messages",
        "/api/v1/rooms/{code}/messages",
        token=edge.room_token,
        json={"client_msg_id": client_msg_id, "text": "hi", "reply_to_seq": reply_to_seq},
        expect=422,
    )
    assert invalid_field(body) == "reply_to_seq"
    assert client_msg_id not in {m.client_msg_id for log in edge.fakes.messaging.log.values() for m in log}


async def test_a_reply_to_the_largest_seq_reaches_messaging(edge: Edge) -> None:
    body = await edge.call(
        "POST",
        f"/api/v1/rooms/{edge.code}/messages",
        "/api/v1/rooms/{code}/messages",
        token=edge.room_token,
        json={"client_msg_id": "largest", "text": "far away", "reply_to_seq": MAX_SEQ},
        expect=201,
    )
    assert body["message"]["reply_to_seq"] == MAX_SEQ


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"retention_days": "30"}, "retention_days"),
        ({"retention_days": True}, "retention_days"),
        ({"slow_mode_seconds": False}, "slow_mode_seconds"),
        ({"slow_mode_seconds": 10**30}, "slow_mode_seconds"),
        ({"anonymous_names_per_network": 2.0}, "anonymous_names_per_network"),
        ({"media": {"photo": 1}}, "media.photo"),
        ({"name": 12}, "name"),
        ({"name": "x" * 201}, "name"),
    ],
)
async def test_room_fields_of_the_wrong_type_or_size_are_422(
    edge: Edge, fields: dict[str, Any], field: str
) -> None:
    created = await edge.call(
        "POST",
        "/api/v1/rooms",
        "/api/v1/rooms",
        token=edge.access_token,
        json={"name": "Typed", **fields},
        expect=422,
    )
    assert invalid_field(created) == field
    updated = await edge.call(
        "PATCH",
        f"/api/v1/rooms/{edge.code}",
        "/api/v1/rooms/{code}",
        token=edge.access_token,
        json=fields,
        expect=422,
    )
    assert invalid_field(updated) == field


@pytest.mark.parametrize("code", ["a%0Ab", "A" * 33, "%F0%9F%98%80", "a%00b", "a.b"])
async def test_a_room_code_no_room_can_have_is_422(edge: Edge, code: str) -> None:
    body = await edge.call(
        "GET", f"/api/v1/rooms/{code}", "/api/v1/rooms/{code}", token=edge.access_token, expect=422
    )
    assert invalid_field(body) == "path.code"


async def test_a_bearer_token_longer_than_any_of_ours_is_401_at_the_edge(edge: Edge) -> None:
    """Refused by the edge itself, before any service is asked to parse it."""
    forged = "x" * 5000
    body = await edge.call("GET", "/api/v1/auth/me", "/api/v1/auth/me", token=forged, expect=401)
    assert body["error"] == {"code": "invalid_token", "message": "The token is not valid."}
    body = await edge.call(
        "GET",
        f"/api/v1/rooms/{edge.code}/messages",
        "/api/v1/rooms/{code}/messages",
        token=forged,
        expect=401,
    )
    assert body["error"] == {"code": "invalid_token", "message": "The token is not valid."}
