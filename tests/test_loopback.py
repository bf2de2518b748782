"""The embedded local Ray stays on loopback (house rule: a job run here reaches no other address),
also for a user's shell that does not set ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (tests/conftest.py
sets it for this process, so the job runs with it removed from its environment)."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers.photos import write_photos
from tests.reliability.common import run_cli, tiny_model_folder

pytestmark = pytest.mark.slow


def test_an_embedded_ray_job_advertises_only_loopback(tmp_path):
    model = tiny_model_folder(tmp_path / "model")
    write_photos(tmp_path / "in", 2)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = run_cli("run", str(tmp_path / "in"), str(tmp_path / "out"), "--model", model, "--no-progress",
                   "--cpus-per-actor", "0.25", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    actors = json.loads((tmp_path / "out" / "_summary.json").read_text())["actors"]
    assert actors and {a["node_ip"] for a in actors.values()} == {"127.0.0.1"}
