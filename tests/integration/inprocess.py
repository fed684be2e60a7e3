"""Helpers for integration tests that run a service's gRPC server inside the test process."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def wait_serving(address: str, task: asyncio.Task[None]) -> None:
    """Return once the server at `address` answers health checks; fail if its task ends first."""
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if task.done():
                task.result()
                raise AssertionError(f"the server at {address} stopped before serving")
            try:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
