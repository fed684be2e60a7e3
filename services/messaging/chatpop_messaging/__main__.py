"""python -m chatpop_messaging: serve MessagingService until SIGTERM."""

from __future__ import annotations

from chatpop_common.server import run
from chatpop_common.settings import load_settings
from chatpop_messaging.app import build
from chatpop_messaging.settings import MessagingSettings


def main() -> int:
    # Every field comes from the environment, which mypy cannot see.
    settings = load_settings("messaging", lambda: MessagingSettings())  # type: ignore[call-arg]
    run("messaging", settings, lambda: build(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
