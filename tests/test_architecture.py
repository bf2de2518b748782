"""The layout is a contract: the import rules in pyproject.toml hold (import-linter), runner modules
stay thin, and the module paths that moved in 0.2 still import, with a warning, for one release."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def test_import_contract_is_kept():
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout
    for contract in ("layers", "engine-free", "estimator-pure", "acyclic"):  # every contract ran
        assert f"id = \"{contract}\"" in (REPO / "pyproject.toml").read_text()
    assert proc.stdout.count(" KEPT") == 4


def test_import_contract_fails_on_a_planted_violation(tmp_path):
    """The contract can fail: a copy of the package where the estimator imports the pipeline."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "annotator", copy / "annotator", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "annotator" / "estimator" / "camera.py", "a") as f:
        f.write("\nfrom annotator.pipeline import errors  # planted\n")
    proc = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "annotator.estimator.camera -> annotator.pipeline.errors" in proc.stdout


@pytest.mark.parametrize("module", sorted((REPO / "annotator" / "runners").glob("*.py")), ids=lambda p: p.name)
def test_runner_modules_are_thin(module: Path):
    """A runner file holds what talks to its engine; the rest lives in pipeline/ (issue 23's bound)."""
    assert len(module.read_text().splitlines()) <= 300


@pytest.mark.parametrize("old,new", [("annotator.layout", "annotator.pipeline.layout"),
                                     ("annotator.schema", "annotator.labels.schema"),
                                     ("annotator.tracking", "annotator.temporal.tracking"),
                                     ("annotator.submit", "annotator.runners.submit")])
def test_moved_module_paths_still_import_with_a_warning(old, new):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert [w.category for w in caught] == [DeprecationWarning]
    assert new in str(caught[0].message)
