"""`python -m chatpop_rooms`: the rooms gRPC server."""

from __future__ import annotations

from chatpop_common.server import run
from chatpop_common.settings import load_settings
from chatpop_rooms.app import build
from chatpop_rooms.settings import Settings


def main() -> int:
    # Every field comes from the environment, which mypy cannot see.
    settings = load_settings("rooms", lambda: Settings())  # type: ignore[call-arg]
    run("rooms", settings, lambda: build(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
