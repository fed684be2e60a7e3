"""The chart's `helm test` script (helm/chatpop/files/health_check.py) against real processes."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

from chatpop_common.devstack import free_ports
from tests.deploy.conftest import CHART

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

SCRIPT = CHART / "files" / "health_check.py"


async def run_check(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_every_service_passes_the_helm_test_check(stack: Stack) -> None:
    targets = [f"--grpc={name}={address}" for name, address in stack.addresses.items()]
    code, output = await run_check(*targets, f"--http=edge={stack.base_url}/readyz", "--timeout=30")
    assert code == 0, output
    assert output.count("ok ") == 5


async def test_a_missing_service_fails_the_check_and_is_named(stack: Stack) -> None:
    (closed,) = free_ports(1)
    code, output = await run_check(
        f"--grpc=rooms={stack.address('rooms')}", f"--grpc=ghost=127.0.0.1:{closed}", "--timeout=1"
    )
    assert code == 1
    assert "ok   rooms" in output
    assert "FAIL ghost" in output
