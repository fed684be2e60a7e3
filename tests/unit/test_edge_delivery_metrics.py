"""Deliveries counted per turn of the loop record exactly what one observe per frame would have."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Histogram

from chatpop_edge.metrics import (
    DELIVERIES,
    MESSAGES_DELIVERED,
    SEND_TO_DELIVER,
    WS_FRAMES_SENT,
    HistogramTally,
)

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 1)
AMOUNTS = [0.0, 0.004, 0.005, 0.0050001, 0.01, 0.3, 1.0, 2.5, 99.0, 0.024999, 0.025]


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_a_tally_flushed_equals_one_observe_per_amount() -> None:
    registry = CollectorRegistry()
    observed = Histogram("observed_seconds", "each observed", buckets=BUCKETS, registry=registry)
    tallied = Histogram("tallied_seconds", "tallied", buckets=BUCKETS, registry=registry)
    tally = HistogramTally(tallied)
    for amount in AMOUNTS * 3:
        observed.observe(amount)
        tally.observe(amount)
    assert _samples(tallied)[("tallied_seconds_count", "")] == 0  # nothing until flushed
    tally.flush()
    tally.flush()  # a second flush adds nothing
    want = {
        (name.replace("observed", "tallied"), le): value for (name, le), value in _samples(observed).items()
    }
    got = _samples(tallied)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


async def test_deliveries_reach_the_metrics_once_the_loop_turns() -> None:
    def value(name: str) -> float:
        return sum(
            sample.value
            for metric in (WS_FRAMES_SENT, MESSAGES_DELIVERED, SEND_TO_DELIVER)
            for sample in metric.collect()[0].samples
            if sample.name == name
        )

    frames, delivered = value("chatpop_ws_frames_sent_total"), value("chatpop_messages_delivered_total")
    latencies = value("chatpop_send_to_deliver_seconds_count")
    DELIVERIES.written(3)
    DELIVERIES.delivered_after(0.002)
    DELIVERIES.delivered_after(0.2)
    DELIVERIES.written(1)
    assert value("chatpop_ws_frames_sent_total") == frames
    await asyncio.sleep(0)
    assert value("chatpop_ws_frames_sent_total") == frames + 4
    assert value("chatpop_messages_delivered_total") == delivered + 2
    assert value("chatpop_send_to_deliver_seconds_count") == latencies + 2


def test_observations_since_a_moment_are_those_of_each_delay() -> None:
    registry = CollectorRegistry()
    observed = Histogram("one_seconds", "each", buckets=BUCKETS, registry=registry)
    tallied = Histogram("many_seconds", "at once", buckets=BUCKETS, registry=registry)
    tally = HistogramTally(tallied)
    now = 1_000.0
    created = [now - amount for amount in AMOUNTS] + [now + 5]  # one from the future counts as 0
    for at in created:
        observed.observe(max(0.0, now - at))
    tally.observe_since(now, created)
    tally.flush()
    got = _samples(tallied)
    for (name, le), value in _samples(observed).items():
        assert got[(name.replace("one", "many"), le)] == pytest.approx(value), (name, le)
