"""buf breaking: the protos must stay wire- and source-compatible with the main branch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

BUF = Path(sys.executable).parent / "buf"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)


def baseline_ref() -> str:
    """What to compare against: the main branch, its remote copy in a CI clone, else HEAD."""
    for ref in ("main", "origin/main", "HEAD"):
        if _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode == 0:
            return ref
    pytest.fail("no git history to compare the protos with (not a git checkout?)")


def buf_breaking(module: Path, against: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", str(module), "--against", against],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_protos_are_not_broken_against_main() -> None:
    ref = baseline_ref()
    kind = "branch" if ref == "main" else "ref"
    result = buf_breaking(REPO / "protos", f".git#{kind}={ref},subdir=protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_breaking_change_is_detected(tmp_path: Path) -> None:
    changed = tmp_path / "protos"
    shutil.copytree(REPO / "protos", changed, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    proto = changed / "chatpop" / "payments" / "v1" / "payments.proto"
    text = proto.read_text()
    renamed = text.replace("rpc GetConfig(", "rpc GetConfiguration(", 1)
    assert renamed != text
    proto.write_text(renamed)
    result = buf_breaking(changed, str(REPO / "protos"))
    assert result.returncode != 0
    assert "GetConfig" in result.stdout + result.stderr
