"""Where a tier leaves what it keeps for a person to read (service logs, failure screenshots).

`make test` spreads the slow tiers over pytest-xdist worker processes, each with its own datastores
and services; a worker's logs go to a folder of its own (gw0, gw1, …), so that workers never clear or
overwrite each other's files. Run in one process, a tier writes straight into its folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from chatpop_common.localrun import REPO_ROOT

ROOT = REPO_ROOT / "test-artifacts"


def tier_artifacts(tier: str) -> Path:
    """The tier's folder in test-artifacts/ (screenshots meant to be looked at, named by test)."""
    return ROOT / tier


def worker_artifacts(tier: str) -> Path:
    """The tier's folder for this process: its worker's subfolder under pytest-xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return tier_artifacts(tier) / worker if worker else tier_artifacts(tier)
