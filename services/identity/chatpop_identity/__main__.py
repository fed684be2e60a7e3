"""`python -m chatpop_identity`: serve IdentityService until SIGTERM."""

from __future__ import annotations

import functools
import sys

from pydantic import ValidationError

from chatpop_common.server import run
from chatpop_identity.app import build
from chatpop_identity.settings import Settings


def main() -> int:
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']).upper() or 'settings'}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"identity: cannot start: {problems}", file=sys.stderr)
        return 2
    run("identity", settings, functools.partial(build, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
