"""`python -m chatpop_rooms`: the rooms gRPC server."""

from __future__ import annotations

from chatpop_common.server import run
from chatpop_rooms.app import build
from chatpop_rooms.settings import Settings


def main() -> None:
    settings = Settings()  # type: ignore[call-arg]
    run("rooms", settings, lambda: build(settings))


if __name__ == "__main__":
    main()
