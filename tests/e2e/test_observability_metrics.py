"""Metrics scraped from a running platform: gRPC RED for unary and streaming calls, the chat KPIs,
and every metric the shipped dashboards and alerts query.

One module fixture drives a little chat through the observed stack (sockets, sends, a reconnect with
resume, a burst that hits the send rate limit, a history read, a tip paid in payments' test mode)
between two scrapes of every service's /metrics; the tests compare the scrapes as Prometheus would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.promql import EXTERNAL_METRICS, alert_queries, dashboard_queries, metric_names
from tests.e2e.chat import ChatSocket, bearer, create_room, join, new_id, open_room

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

SERVICES = ("edge", "identity", "rooms", "messaging", "payments")


@dataclass(frozen=True)
class Scrape:
    """Every sample of every service: (service, sample name, sorted labels) → value."""

    samples: dict[tuple[str, str, tuple[tuple[str, str], ...]], float]

    def total(self, name: str, service: str | None = None, **labels: str) -> float:
        return sum(
            value
            for (svc, sample, sample_labels), value in self.samples.items()
            if sample == name
            and (service is None or svc == service)
            and all(dict(sample_labels).get(k) == v for k, v in labels.items())
        )

    def names(self) -> set[str]:
        return {sample for _svc, sample, _labels in self.samples}

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
            for _svc, sample, sample_labels in self.samples
        )


async def scrape(stack: Stack) -> Scrape:
    samples: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for service in SERVICES:
            response = await http.get(stack.metrics_url(service))
            assert response.status_code == 200, service
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    key = (service, sample.name, tuple(sorted(sample.labels.items())))
                    samples[key] = sample.value
    return Scrape(samples)


@dataclass(frozen=True)
class Traffic:
    before: Scrape
    during: Scrape
    after: Scrape
    rate_limited_frames: int


def _fulfilled_tips(scrape: Scrape) -> float:
    return scrape.total("chatpop_payments", "payments", kind="tip", state="fulfilled")


async def _tip(http: httpx.AsyncClient) -> None:
    """A registered host's room takes a tip, paid with the test mode's card and fulfilled."""
    email = f"observed-{new_id()[:12]}@example.com"
    registered = await http.post(
        "/api/v1/auth/register", json={"email": email, "password": "observed passphrase"}
    )
    assert registered.status_code == 201, registered.text
    host = registered.json()["access_token"]
    for path in (
        "/api/v1/payments/payout-account/onboarding",
        "/api/v1/payments/payout-account/test-complete",
    ):
        onboarded = await http.post(
            path, json={} if path.endswith("onboarding") else None, headers=bearer(host)
        )
        assert onboarded.status_code == 200, onboarded.text
    room = await create_room(http, host, name="tipped room")
    buyer = await join(http, room["code"], f"mt{new_id()[:8]}")
    ordered = await http.post(
        f"/api/v1/rooms/{room['code']}/orders",
        json={"idempotency_key": new_id(), "tip": {"amount_cents": 500}},
        headers=bearer(buyer["room_token"]),
    )
    assert ordered.status_code == 201, ordered.text
    order_url = f"/api/v1/payments/orders/{ordered.json()['order']['id']}"
    paid = await http.post(
        f"{order_url}/test-confirm", json={"outcome": "succeed"}, headers=bearer(buyer["room_token"])
    )
    assert paid.status_code == 200, paid.text
    deadline = time.monotonic() + 15
    while (await http.get(order_url, headers=bearer(buyer["room_token"]))).json()["order"][
        "state"
    ] != "fulfilled":
        assert time.monotonic() < deadline, "the tip was never fulfilled"
        await asyncio.sleep(0.1)


def _timed_tip_fulfilments(scrape: Scrape) -> float:
    return scrape.total("chatpop_payments_fulfilment_seconds_count", "payments", kind="tip")


async def _wait_for_payment(stack: Stack, before: Scrape) -> Scrape:
    """The scrape once payments counted the tip fulfilled (its periodic count by state) and timed its
    fulfilment (observed by the outbox handler a moment after the order reads fulfilled)."""
    deadline = time.monotonic() + 15
    while True:
        current = await scrape(stack)
        counted = _fulfilled_tips(current) >= _fulfilled_tips(before) + 1
        timed = _timed_tip_fulfilments(current) >= _timed_tip_fulfilments(before) + 1
        if (counted and timed) or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
async def traffic(observed_stack: Stack) -> AsyncIterator[Traffic]:
    stack = observed_stack
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as http:
        before = await scrape(stack)
        room = await open_room(http, name="observed room")
        alice = await join(http, room.code, f"ma{new_id()[:8]}")
        bob = await join(http, room.code, f"mb{new_id()[:8]}")

        sender = await ChatSocket.open(stack.ws_url, room.code, alice["room_token"])
        reader = await ChatSocket.open(stack.ws_url, room.code, bob["room_token"])
        for text in ("one", "two", "three"):
            ack = await sender.ack_or_error(await sender.send(text))
            assert ack["type"] == "ack", ack
        last_seen = max(f["seq"] for f in [ack])
        await reader.wait_for_seq(last_seen)
        during = await scrape(stack)

        # Bob drops off, misses two messages, and comes back resuming after the last one he saw.
        await reader.close()
        for text in ("four", "five"):
            ack = await sender.ack_or_error(await sender.send(text))
            assert ack["type"] == "ack", ack
        resumed = await ChatSocket.open(stack.ws_url, room.code, f"{bob['room_token']}&after_seq={last_seen}")
        await resumed.wait_for_seq(ack["seq"])
        await resumed.close()

        # A burst beyond the default send limit (10 per minute, burst 10).
        ids = [await sender.send(f"burst {i}") for i in range(12)]
        answers = [await sender.ack_or_error(i) for i in ids]
        limited = sum(1 for a in answers if a["type"] == "error" and a["code"] == "rate_limited")
        await sender.close()

        page = await http.get(f"/api/v1/rooms/{room.code}/messages", headers=bearer(alice["room_token"]))
        assert page.status_code == 200, page.text

        await _tip(http)
        after = await _wait_for_payment(stack, before)
        yield Traffic(before=before, during=during, after=after, rate_limited_frames=limited)


async def test_grpc_red_metrics_count_unary_and_streaming_calls(traffic: Traffic) -> None:
    before, after = traffic.before, traffic.after
    # The edge hands its sockets' sends to messaging in batches on long-lived SendStream calls: each
    # batch a message in, its answer a message out, each send answered on its own inside it (rate
    # limits included: chatpop_rate_limited_total). The streams outlive the traffic, so they are
    # counted as started and by their messages, not yet as handled.
    sends = {
        "grpc_service": "chatpop.messaging.v1.MessagingService",
        "grpc_method": "SendStream",
        "grpc_type": "bidi_stream",
    }
    assert after.total("grpc_server_started_total", "messaging", **sends) >= 1
    batches = after.total("grpc_server_msg_received_total", "messaging", **sends) - before.total(
        "grpc_server_msg_received_total", "messaging", **sends
    )
    answered = after.total("grpc_server_msg_sent_total", "messaging", **sends) - before.total(
        "grpc_server_msg_sent_total", "messaging", **sends
    )
    assert batches >= 1 and answered >= batches
    assert traffic.rate_limited_frames > 0
    subscribe = {"grpc_method": "Subscribe", "grpc_type": "server_stream"}
    assert after.total("grpc_server_started_total", "messaging", **subscribe) > before.total(
        "grpc_server_started_total", "messaging", **subscribe
    )
    assert after.total("grpc_server_msg_sent_total", "messaging", **subscribe) > before.total(
        "grpc_server_msg_sent_total", "messaging", **subscribe
    )
    # The other services count their calls too (joins go through rooms and identity).
    for service in ("identity", "rooms"):
        assert after.total("grpc_server_handled_total", service) > before.total(
            "grpc_server_handled_total", service
        )


async def test_chat_kpis_exist_and_move(traffic: Traffic) -> None:
    before, during, after = traffic.before, traffic.during, traffic.after

    def moved(name: str, service: str, **labels: str) -> float:
        return after.total(name, service, **labels) - before.total(name, service, **labels)

    assert during.total("chatpop_ws_connections", "edge") >= 2
    assert moved("chatpop_messages_accepted_total", "messaging") >= 10
    assert moved("chatpop_messages_published_total", "messaging") >= 10
    assert moved("chatpop_messages_delivered_total", "edge") >= 10
    assert moved("chatpop_send_to_deliver_seconds_count", "edge") >= 10
    assert moved("chatpop_rate_limited_total", "messaging") == traffic.rate_limited_frames
    assert moved("chatpop_resume_total", "edge", outcome="exact") >= 1
    assert moved("chatpop_resume_reads_total", "messaging", source="hot_cache") >= 1
    for source in ("postgres", "reload", "nothing_missed"):
        assert after.has("chatpop_resume_reads_total", source=source)
    assert moved("chatpop_hot_cache_requests_total", "messaging", result="hit") >= 1
    assert after.has("chatpop_hot_cache_requests_total", result="miss")
    # Orders by state, counted from payments' table (other tests' orders stay in it).
    assert _fulfilled_tips(after) == _fulfilled_tips(before) + 1
    assert (
        moved("chatpop_payments_events_total", "payments", type="payment_intent.succeeded", outcome="paid")
        == 1
    )
    assert moved("chatpop_payments_fulfilment_seconds_count", "payments", kind="tip") == 1


async def test_every_dashboard_and_alert_query_reads_metrics_the_services_export(traffic: Traffic) -> None:
    exported = traffic.after.names()
    queries = dashboard_queries() + alert_queries()
    assert queries
    missing = []
    for where, query in queries:
        for name in metric_names(query):
            if name not in exported and name not in EXTERNAL_METRICS:
                missing.append(f"{where}: {name}")
    assert not missing, "queried but not exported:\n" + "\n".join(sorted(set(missing)))


async def test_the_name_check_notices_a_metric_that_does_not_exist(traffic: Traffic) -> None:
    names = metric_names('sum(rate(chatpop_messages_acepted_total{namespace=~"x"}[5m]))')
    assert names == {"chatpop_messages_acepted_total"}
    assert not names <= traffic.after.names()
