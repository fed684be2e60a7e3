"""A peer that comes back after an outage is used again within about a second of listening.

gRPC's default reconnect backoff (1 s, growing 1.6 times up to 120 s) would leave a channel
waiting seconds to minutes after a restarted service is ready; `insecure_channel` caps it.
"""

from __future__ import annotations

import time

import grpc

from chatpop_common.clients import insecure_channel
from chatpop_common.devstack import free_port

PING = "/chatpop.test.v1.Probe/Ping"
# With gRPC's defaults, after a 6 s outage the next attempt comes about 9 s after the peer left,
# some 3 s after it is back: long enough apart to tell the two schedules apart.
OUTAGE = 6.0


def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _serve(port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "chatpop.test.v1.Probe", {"Ping": grpc.unary_unary_rpc_method_handler(_echo)}
            )
        ]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def test_a_restarted_peer_is_called_again_within_a_second_of_listening() -> None:
    port = free_port()
    server = await _serve(port)
    channel = insecure_channel(f"127.0.0.1:{port}")
    ping = channel.unary_unary(PING)
    try:
        assert await ping(b"before", timeout=5) == b"before"

        await server.stop(None)
        time.sleep(OUTAGE)  # the channel keeps trying (and failing) meanwhile, on its own threads
        server = await _serve(port)
        back = time.monotonic()
        # Calls wait for a ready connection (waitForReady), as every call the edge makes does.
        assert await ping(b"after", timeout=10) == b"after"
        waited = time.monotonic() - back
        assert waited < 1.5, f"the first call after the restart took {waited:.2f}s"
    finally:
        await channel.close()
        await server.stop(None)
