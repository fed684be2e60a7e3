"""python -m chatpop_messaging: serve MessagingService until SIGTERM."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from chatpop_common.server import run
from chatpop_messaging.app import build
from chatpop_messaging.settings import MessagingSettings


def main() -> int:
    try:
        # Every field has a default or comes from the environment; pydantic validates them here.
        settings = MessagingSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"messaging cannot start, its settings are invalid:\n{exc}", file=sys.stderr)
        return 2
    run("messaging", settings, lambda: build(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
