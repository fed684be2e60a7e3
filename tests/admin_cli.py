"""`python -m chatpop_identity.admin` as a separate process, as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass

import httpx

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


ADMIN_PASSWORD = "an e2e admin passphrase"


async def new_admin(client: httpx.AsyncClient, database_url: str, prefix: str = "admin") -> str:
    """A new account made admin on the command line, signed in again: an access token with the claim."""
    email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
    registered = await client.post("/api/v1/auth/register", json={"email": email, "password": ADMIN_PASSWORD})
    assert registered.status_code == 201, registered.text
    granted = await admin_cli(database_url, "grant", email)
    assert granted.status == 0, granted.err
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])
