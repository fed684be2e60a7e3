"""`python -m chatpop_identity`: serve IdentityService until SIGTERM."""

from __future__ import annotations

from chatpop_common.server import run
from chatpop_common.settings import load_settings
from chatpop_identity.app import build
from chatpop_identity.settings import Settings


def main() -> int:
    # Every field comes from the environment, which mypy cannot see.
    settings = load_settings("identity", lambda: Settings())  # type: ignore[call-arg]
    run("identity", settings, lambda: build(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
