"""The front door: the README's two quick-start commands, install.sh, CI and the pinned constraints agree.

python -m pytest -q tests/test_install.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
CUDA_PREFIXES = ("torch", "triton", "nvidia-", "cuda-")


def quick_start_commands() -> dict[str, str]:
    """The README's quick-start commands, keyed by their comment line ("# 1. ...")."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    return {lines[i]: lines[i + 1] for i in range(0, len(lines), 2)}


def pinned_versions() -> dict[str, list[str]]:
    """Package name -> pinned versions (one per environment marker) in requirements/constraints.txt."""
    pins: dict[str, list[str]] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins.setdefault(canonicalize_name(match[1]), []).append(match[2])
    return pins


def test_quick_start_is_two_commands_through_install_sh():
    commands = quick_start_commands()
    assert list(commands) == [
        "# 1. install and run the demo sweep (local Ray, MLflow in ./mlflow.db, checkpoints in ./sweeps, toy world)",
        "# 2. install and run the tests",
    ]
    demo, tests = commands.values()
    assert "bash install.sh &&" in demo and demo.endswith("python -m orchestrator.sweep grids/demo.yaml")
    assert "bash install.sh dev &&" in tests and tests.endswith("python -m pytest -q -n 2")


def test_ci_runs_the_readme_test_command():
    """.ci/run reads its command out of the README: the extraction finds exactly the README's line."""
    script = (ROOT / ".ci" / "run").read_text()
    sed = re.search(r"sed -n '([^']+)' README.md", script)
    assert sed, ".ci/run no longer reads its test command from README.md"
    extracted = subprocess.run(["sed", "-n", sed[1], "README.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert extracted.stdout.strip() == quick_start_commands()["# 2. install and run the tests"]
    assert "&& ruff check . && ruff format --check . && $pytest_part" in script, ".ci/run no longer checks style"


def test_install_sh_rejects_an_unknown_target():
    result = subprocess.run(["bash", "install.sh", "gpu"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown argument 'gpu'" in result.stderr


def test_constraints_pin_every_dependency_within_the_pyproject_ranges():
    """A dependency added to pyproject.toml without `bash requirements/lock.sh` fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["postgres"]]
    pins = pinned_versions()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name.startswith(CUDA_PREFIXES):
            continue
        assert name in pins, f"{name} is not pinned in requirements/constraints.txt: run bash requirements/lock.sh"
        for version in pins[name]:
            assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} not in {requirement}"


@pytest.mark.parametrize("prefix", CUDA_PREFIXES)
def test_constraints_leave_torch_and_cuda_to_the_machine(prefix):
    assert not [name for name in pinned_versions() if name.startswith(prefix)]
