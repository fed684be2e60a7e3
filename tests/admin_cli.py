"""`python -m chatpop_common.admin` as a separate process, as an operator runs it, against running services.

The CLI finds the services by IDENTITY_ADDR / ROOMS_ADDR / MESSAGING_ADDR and proves itself with
SERVICE_TOKEN_SECRET. A test gives it a running platform (the e2e `Stack`: its identity process's
environment has all four) or those settings as a mapping (`cli_env`, for services run in-process).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from chatpop_common.localrun import REPO_ROOT, service_pythonpath
from chatpop_common.processes import ServiceSpec

CLI_MODULE = "chatpop_common.admin"
CLI_SETTINGS = ("IDENTITY_ADDR", "ROOMS_ADDR", "MESSAGING_ADDR", "SERVICE_TOKEN_SECRET")


class Platform(Protocol):
    """A running platform whose processes know the services' addresses and the shared secret."""

    @property
    def specs(self) -> Mapping[str, ServiceSpec]: ...


Target = Platform | Mapping[str, str]


def cli_env(
    identity_addr: str, service_token_secret: str, *, rooms_addr: str = "", messaging_addr: str = ""
) -> dict[str, str]:
    """The CLI's settings for services run one by one (an empty address keeps the CLI's default)."""
    env = {"IDENTITY_ADDR": identity_addr, "SERVICE_TOKEN_SECRET": service_token_secret}
    if rooms_addr:
        env["ROOMS_ADDR"] = rooms_addr
    if messaging_addr:
        env["MESSAGING_ADDR"] = messaging_addr
    return env


def _settings(target: Target) -> dict[str, str]:
    if isinstance(target, Mapping):
        return dict(target)
    identity = target.specs["identity"].env
    return {name: identity[name] for name in CLI_SETTINGS}


@dataclass(frozen=True)
class CliResult:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        """The one object the command printed."""
        assert self.status == 0, self.err
        return json.loads(self.out)

    def lines(self) -> list[Any]:
        """The objects a listing printed, one a line."""
        assert self.status == 0, self.err
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def error(self) -> dict[str, Any]:
        """The error a failed command printed on stderr ({call, status, code, message})."""
        assert self.status != 0, self.out
        found: dict[str, Any] = json.loads(self.err.strip().splitlines()[-1])["error"]
        return found


async def admin_cli(target: Target, *args: str, without: tuple[str, ...] = ()) -> CliResult:
    """Run the CLI with `args`; `without` leaves settings out of its environment."""
    env = {
        **{name: value for name, value in os.environ.items() if name not in CLI_SETTINGS},
        **_settings(target),
        "PYTHONPATH": service_pythonpath(inherited=os.environ.get("PYTHONPATH", "")),
    }
    for name in without:
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        CLI_MODULE,
        *args,
        env=env,
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(), err.decode())


async def grant_admin(target: Target, email: str) -> str:
    """Make the account an admin on the command line; its id."""
    granted = await admin_cli(target, "admins", "grant", email)
    body = granted.json()
    assert body["changed"] is True, body
    return str(body["user_id"])


ADMIN_PASSWORD = "an e2e admin passphrase"


async def new_admin(client: httpx.AsyncClient, target: Target, prefix: str = "admin") -> str:
    """A new account made admin on the command line, signed in again: an access token with the claim."""
    email = f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
    registered = await client.post("/api/v1/auth/register", json={"email": email, "password": ADMIN_PASSWORD})
    assert registered.status_code == 201, registered.text
    await grant_admin(target, email)
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])
