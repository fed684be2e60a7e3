"""Outgoing mail: where the SMTP server is (SMTP_URL), and a client that delivers one message.

`smtp://user:pass@host:587` speaks STARTTLS whenever the server offers it; `smtps://…:465` is TLS
from the first byte. Both are checked at start-up, so a typo stops the process instead of every
reset mail failing later. Failures are logged and counted, never shown to whoever asked for the mail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import getaddresses
from urllib.parse import unquote, urlsplit

import aiosmtplib
from prometheus_client import Counter

log = logging.getLogger(__name__)

MAIL_SENT = Counter("chatpop_identity_mail_sent", "Mails the SMTP server accepted.", ["kind"])
MAIL_FAILURES = Counter(
    "chatpop_identity_mail_failures", "Mails that could not be handed to the SMTP server.", ["kind"]
)

_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse SMTP_URL; ValueError with a reason a person can act on."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"SMTP_URL is not a valid URL ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError("SMTP_URL must start with smtp:// (STARTTLS when offered) or smtps:// (TLS)")
        if not parts.hostname:
            raise ValueError("SMTP_URL names no host, e.g. smtp://user:password@mail.example.com:587")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("SMTP_URL takes no path, query or fragment: smtp://user:password@host:port")
        if port == 0:
            raise ValueError("SMTP_URL has port 0")
        if (parts.password is not None) and not parts.username:
            raise ValueError("SMTP_URL has a password but no user name")
        return cls(
            host=parts.hostname,
            port=port or _DEFAULT_PORTS[scheme],
            implicit_tls=scheme == "smtps",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    def describe(self) -> str:
        """Where mail goes, without the password, for logs."""
        who = f"{self.username}@" if self.username else ""
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{who}{self.host}:{self.port}"


def parse_sender(raw: str) -> Address:
    """MAIL_FROM as an address (`ChatPop <no-reply@example.com>` or a bare address); ValueError otherwise."""
    found = getaddresses([raw.strip()]) if raw.strip() else []
    if len(found) != 1:
        raise ValueError("MAIL_FROM must be one address, like `ChatPop <no-reply@example.com>`")
    name, address = found[0]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() for ch in address):
        raise ValueError("MAIL_FROM must be one address, like `ChatPop <no-reply@example.com>`")
    return Address(display_name=name, username=local, domain=domain)


class SmtpMailer:
    """Delivers one message per connection: reset mails are rare, so nothing is kept open."""

    def __init__(self, config: SmtpConfig, *, timeout: float) -> None:
        self.config = config
        self._timeout = timeout

    async def send(self, message: EmailMessage, *, kind: str) -> bool:
        """True when the server accepted the message; False (logged and counted) otherwise."""
        try:
            await aiosmtplib.send(
                message,
                hostname=self.config.host,
                port=self.config.port,
                username=self.config.username,
                password=self.config.password,
                use_tls=self.config.implicit_tls,
                # None: upgrade with STARTTLS when the server offers it.
                start_tls=False if self.config.implicit_tls else None,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            MAIL_FAILURES.labels(kind).inc()
            # The reason, never the recipient: logs are not the place for people's addresses.
            log.warning(
                "could not send a %s mail through %s: %s: %s",
                kind,
                self.config.describe(),
                exc.__class__.__name__,
                exc,
            )
            return False
        MAIL_SENT.labels(kind).inc()
        return True
