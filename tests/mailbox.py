"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, on a free port, with AUTH.

It keeps every message it accepts, parsed, so a test can wait for the mail a person would get and
follow its link. It requires the user name and password of `url`, so a client that ignores the
credentials in SMTP_URL fails.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from chatpop_common.devstack import free_port

USER = "chatpop-test"
PASSWORD = "s3cret:with/odd@chars"
LINK = re.compile(r"https?://\S+/reset-password\?token=[A-Za-z0-9_\-]+")


@dataclass
class Mail:
    """One accepted message: who it went to, and the message itself."""

    recipients: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, "the mail has no plain-text part"
        return str(part.get_content())

    @property
    def html(self) -> str | None:
        part = self.message.get_body(preferencelist=("html",))
        return None if part is None else str(part.get_content())

    def reset_link(self) -> str:
        found = LINK.findall(self.text)
        assert len(found) == 1, f"expected one reset link in the mail, found {found!r}"
        return str(found[0])


@dataclass
class Mailbox:
    host: str
    port: int
    _mails: list[Mail] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """SMTP_URL for this server, credentials included (percent-encoded)."""
        from urllib.parse import quote

        return f"smtp://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@{self.host}:{self.port}"

    def add(self, mail: Mail) -> None:
        with self._lock:
            self._mails.append(mail)

    def to(self, address: str) -> list[Mail]:
        """Every mail received for `address` so far, oldest first."""
        with self._lock:
            return [m for m in self._mails if address.lower() in (r.lower() for r in m.recipients)]

    async def wait_for(self, address: str, *, count: int = 1, timeout: float = 20.0) -> Mail:
        """The `count`-th mail for `address`, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while True:
            mails = self.to(address)
            if len(mails) >= count:
                return mails[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail #{count} for {address} within {timeout} s (got {len(mails)})")
            await asyncio.sleep(0.05)


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._mailbox.add(Mail(recipients=list(envelope.rcpt_tos), message=message))
        return "250 Message accepted for delivery"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == USER
        and auth_data.password.decode() == PASSWORD
    )
    return AuthResult(success=ok)


@contextmanager
def running_mailbox() -> Iterator[Mailbox]:
    """An SMTP server that requires AUTH (no TLS: it only listens on 127.0.0.1)."""
    mailbox = Mailbox(host="127.0.0.1", port=free_port())
    controller = Controller(
        _Handler(mailbox),
        hostname=mailbox.host,
        port=mailbox.port,
        authenticator=_authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
