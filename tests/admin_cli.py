"""`python -m chatpop_identity.admin` as a separate process, as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from chatpop_common.localrun import REPO_ROOT, service_pythonpath


@dataclass(frozen=True)
class CliResult:
    status: int
    out: str
    err: str


async def admin_cli(database_url: str, *args: str) -> CliResult:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONPATH": service_pythonpath(inherited=os.environ.get("PYTHONPATH", "")),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatpop_identity.admin",
        *args,
        env=env,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())
