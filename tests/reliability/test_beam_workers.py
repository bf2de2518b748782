"""Beam with two worker processes (DirectRunner, ``direct_running_mode = "multi_processing"``,
``direct_num_workers = 2``) writes the output of the Ray runner's uninterrupted run: the same
rows, each once, every part verified. Both workers labelled rows (the summary names each model
holder by host:pid), and neither is the driver: the work really left the driver's process."""

from __future__ import annotations

import subprocess

import pytest

from tests.reliability.common import PYTHON, REPO, assert_same, rows_by_id, spec_toml, summary

pytestmark = pytest.mark.slow

TWO_PROCESSES = {"direct_num_workers": 2, "direct_running_mode": "multi_processing"}


def test_beam_with_two_worker_processes_equals_ray(ray_cluster, tiny_model, photos, reference, tmp_path):
    out = tmp_path / "out"
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(out), tiny_model, {"beam_options": TWO_PROCESSES},
                     runner="beam")
    proc = subprocess.Popen([PYTHON, "-m", "annotator.cli", "run", "--spec", str(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)
    stdout, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, stdout[-4000:]
    s = summary(str(out))
    assert s["runner"] == "beam" and s["shards_failed"] == 0 and s["images"] == 16
    pids = {int(name.rsplit(":", 1)[1]) for name, a in s["actors"].items() if a["images"] > 0}
    assert len(pids) == 2 and proc.pid not in pids, s["actors"]
    assert_same(rows_by_id(str(out)), reference)
