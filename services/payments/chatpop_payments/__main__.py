"""`python -m chatpop_payments`: the payments gRPC server."""

from __future__ import annotations

from chatpop_common.server import run
from chatpop_common.settings import load_settings
from chatpop_payments.app import build
from chatpop_payments.settings import Settings


def main() -> int:
    # Every field comes from the environment, which mypy cannot see.
    settings = load_settings("payments", lambda: Settings())  # type: ignore[call-arg]
    run("payments", settings, lambda: build(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
