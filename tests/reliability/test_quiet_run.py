"""Quiet by default, end to end: ``annotator run`` on ``samples/images`` (the tiny model, an embedded
Ray, drivers as separate processes as users run them) writes nothing to stderr but annotator's own
lines (none here: ``--no-progress``, no warnings), while the engine lines it used to print (absl's
"All log messages before absl::InitializeLog()", oneDNN's "custom operations are on" from the
inference actor, Ray's own) are in ``OUTPUT/_logs/``; ``-v`` brings them back to the terminal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.reliability.common import run_cli

pytestmark = pytest.mark.slow

# what TensorFlow prints when it starts in the inference actor (one of them, whichever TF build)
TF_LINES = ("absl::InitializeLog", "oneDNN custom operations")


def _run(samples_dir, tiny_model, out: Path, *extra: str):
    proc = run_cli(*extra, "run", str(samples_dir), str(out), "--model", tiny_model, "--no-progress",
                   "--cpus-per-actor", "0.25", "--batch-size", "2", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def test_quiet_by_default_and_the_log_file_holds_the_engine_lines(samples_dir, tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = _run(samples_dir, tiny_model, out)
    assert proc.stderr == ""
    logs = list((out / "_logs").iterdir())
    assert len(logs) == 1 and logs[0].name.startswith("run-") and logs[0].suffix == ".log"
    assert f"log:      {logs[0]}" in proc.stdout.splitlines()
    text = logs[0].read_text()
    worker = [ln for ln in text.splitlines() if ln.startswith("(MapWorker(MapBatches(InferenceStage)) pid=")]
    assert any(t in ln for ln in worker for t in TF_LINES), text[-4000:]  # forwarded by Ray, into the file
    assert re.search(r"INFO annotator\.runners\.ray_cluster: Ray session: /", text)  # where Ray keeps the rest


def test_verbose_brings_the_engine_lines_back(samples_dir, tiny_model, tmp_path):
    out = tmp_path / "out"
    proc = _run(samples_dir, tiny_model, out, "-v")
    assert any(t in proc.stderr for t in TF_LINES), proc.stderr[-4000:]
    assert "INFO annotator." in proc.stderr
    (log,) = (out / "_logs").iterdir()
    assert "INFO annotator." in log.read_text()  # the file still has every log record
