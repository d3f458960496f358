"""scripts/_venv.sh (scripts/run, scripts/test): pip runs only when the install is missing or
pyproject.toml changed since, not at every start. A stand-in .venv/bin/python logs what it is
asked to do."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
# Stand-in for the venv's python: logs pip installs, and makes the wsq script as pip would.
echo "$*" >>"$(dirname "$0")/../../pip.log"
touch "$(dirname "$0")/wsq" && chmod +x "$(dirname "$0")/wsq"
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "wsq"\nversion = "1"\n')
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return tmp_path


def _ensure(project: Path, extras: str) -> list[str]:
    """Run ensure_venv EXTRAS in a set -euo pipefail script, as scripts/run does; the pip
    installs so far."""
    subprocess.run(
        [
            "bash",
            "-c",
            f'set -euo pipefail; . "$0"; ensure_venv "{extras}"',
            ROOT / "scripts" / "_venv.sh",
        ],
        cwd=project,
        check=True,
        timeout=30,
    )
    log = project / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def test_installs_once_then_only_when_pyproject_changes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _ensure(project, "") == ["-m pip install -q --disable-pip-version-check -e ."]
    assert len(_ensure(project, "")) == 1  # the next start: no pip
    (project / "pyproject.toml").write_text('[project]\nname = "wsq"\nversion = "2"\n')
    assert len(_ensure(project, "")) == 2  # changed: installed again
    assert len(_ensure(project, "")) == 2


def test_extras_are_installed_once_and_cover_the_plain_install(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert _ensure(project, "[test]")[-1].endswith("-e .[test]")
    assert len(_ensure(project, "[test]")) == 1
    assert len(_ensure(project, "")) == 1  # [test] has the package already
    (project / "pyproject.toml").write_text('[project]\nname = "wsq"\nversion = "2"\n')
    assert _ensure(project, "")[-1].endswith("-e .")
    assert _ensure(project, "[test]")[-1].endswith("-e .[test]")  # new pyproject, new extras
    assert len(_ensure(project, "[test]")) == 3
    assert len(_ensure(project, "")) == 3


def test_a_missing_wsq_script_or_stamp_means_install(tmp_path: Path) -> None:
    project = _project(tmp_path)
    assert len(_ensure(project, "")) == 1
    (project / ".venv" / "bin" / "wsq").unlink()
    assert len(_ensure(project, "")) == 2
    (project / ".venv" / ".wsq-installed").unlink()
    assert len(_ensure(project, "")) == 3
