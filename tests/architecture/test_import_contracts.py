"""The import contracts of pyproject.toml (docs/architecture.md) hold, and a broken one is caught.

`make test` runs `lint-imports` before pytest; these tests run the same command on the tree and on
copies of it with one forbidden import added, so a contract that could never fail would show here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("annotator", "trainer_worker", "webapp")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", "--config", "pyproject.toml"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "migrations")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # The ML package reaching up into the web app (a model, for a label).
        ("trainer_worker/training/uses_models.py", "from annotator.models import SafetyLabel",
         "free of the web app, Django and"),
        # The shared vocabulary growing a Django dependency.
        ("trainer_worker/vocabulary/uses_django.py", "from django.db import models", "free of the web app, Django and"),
        # A Celery adapter other than trainer_worker.tasks.
        ("trainer_worker/other_tasks.py", "from annotator.services.training.worker import run_execute",
         "Only the Celery adapter"),
        # A service importing the task module that imports it: an import cycle.
        ("annotator/services/uses_tasks.py", "from annotator.tasks import generate_trace", "No import cycles"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tree_copy: Path, module: str, line: str, contract: str):
    (tree_copy / module).write_text(f'"""Breaks a contract on purpose."""\n\n{line}\n')
    result = lint_imports(tree_copy)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[1]
    assert contract in broken, result.stdout
