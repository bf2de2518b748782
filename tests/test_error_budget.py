"""The error budget on whole jobs (``pipeline.budget``), run as a user runs them (``annotator run``
in its own process, embedded Ray or Beam's DirectRunner), with the tiny official-API model made
to fail by its own graph (``tests/reliability/tiny_model.py``):

* a model that fails on every image stops the job within its first batches: non-zero exit, one
  line that names the cause and the node, no error row for the images it never could label;
* a model that fails on one image in twenty writes one error row per such image and exits 0;
* a failed warm-up stops the job before any image;
* more inference errors than ``--max-error-rate`` stop the job, and the summary says so.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.photos import photo_bytes
from tests.reliability.common import run_cli, spec_toml, tiny_model_folder
from tests.reliability.tiny_model import MARK_RGB

pytestmark = pytest.mark.slow
RUNNERS = ["ray", "beam"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("models")
    return {fail: tiny_model_folder(base / (fail or "good"), fail=fail) for fail in ("images", "marked", "always")}


def photos(folder: Path, n: int, marked: set[int] = frozenset()) -> Path:
    """``n`` small photos; those in ``marked`` get a magenta top-left corner (the "marked" model
    fails on them)."""
    folder.mkdir(parents=True)
    for i in range(n):
        im = Image.open(io.BytesIO(photo_bytes(i)))
        if i in marked:
            im.paste(MARK_RGB, (0, 0, 16, 16))
        im.save(folder / f"img{i:03d}.jpg", quality=90)
    return folder


def job(tmp_path: Path, src: Path, model: str, runner: str, batch_size: int = 2, **top) -> tuple[int, str, str, Path]:
    """``annotator run`` as a user's shell runs it: without the RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER that
    tests/conftest.py sets for this process (the embedded Ray must stay on loopback by itself)."""
    out = tmp_path / f"out-{runner}"
    compute = {"batch_size": batch_size, "shard_attempts": 2}
    if runner == "beam":
        compute["beam_options"] = {"direct_num_workers": 1}
    spec = spec_toml(tmp_path / f"{runner}.toml", str(src), str(out), model, compute, runner=runner, **top)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    proc = run_cli("run", "--spec", str(spec), env=env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr, out


def summary(out: Path) -> dict:
    return json.loads((out / "_summary.json").read_text())


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_model_that_fails_on_every_image_stops_within_its_first_batches(models, runner, tmp_path):
    src = photos(tmp_path / "in", 40)
    rc, stdout, stderr, out = job(tmp_path, src, models["images"], runner)
    assert rc == 1, stdout + stderr
    stop = [line for line in stderr.splitlines() if line.startswith("annotator run: stopped:")]
    assert len(stop) == 1, stderr
    # the cause (TensorFlow's own error from the model) and the node it ran on
    assert "failed on every image of its first 3 batches" in stop[0]
    assert "InvalidArgumentError" in stop[0] and "tiny model fails: images" in stop[0]
    assert re.search(rf"on {re.escape(socket.gethostname())}:\d+", stop[0]), stop[0]
    s = summary(out)
    assert s["stopped"] and s["stopped"] in stop[0]
    # no error row was committed for images the model never could label, and the job did not go
    # through its 20 shards of 2: at most the first batches (and what was in flight) reached the model
    assert s["images"] == 0 and s["errors_by_reason"] == {}
    assert s["shards_committed"] == 0
    assert json.loads((out / "_progress.json").read_text())["state"] == "stopped"


@pytest.mark.parametrize("runner", RUNNERS)
def test_one_image_in_twenty_failing_costs_one_error_row_each_and_exits_0(models, runner, tmp_path):
    marked = {7, 27}
    src = photos(tmp_path / "in", 40, marked)
    rc, stdout, stderr, out = job(tmp_path, src, models["marked"], runner)
    assert rc == 0, stdout + stderr
    s = summary(out)
    assert s["stopped"] is None and s["images"] == 40 and s["images_error"] == 2
    if runner == "ray":  # the embedded Ray on loopback (it once took eth0: ray was imported too early)
        assert {a["node_ip"] for a in s["actors"].values()} == {"127.0.0.1"}
    assert s["errors_by_reason"] == {"inference_error": 2}
    from annotator.outputs.dataset import read_table

    t = read_table(str(out)).to_pandas().set_index("image_id")
    failed = t[t["status"] != "ok"]
    assert sorted(Path(u).name for u in failed["source_uri"]) == [f"img{i:03d}.jpg" for i in sorted(marked)]
    assert all("tiny model fails: marked" in e for e in failed["error"])


def test_more_inference_errors_than_the_budget_stop_the_job(models, tmp_path):
    """120 images, one in four failing (the first batches each hold a good image, so only the rate
    rule can stop it): 25 % > --max-error-rate 0.05."""
    marked = set(range(3, 120, 4))
    src = photos(tmp_path / "in", 120, marked)
    rc, stdout, stderr, out = job(tmp_path, src, models["marked"], "ray", batch_size=8, shard_size=8)
    assert rc == 1, stdout + stderr
    s = summary(out)
    assert "images" in s["stopped"] and "failed in inference, more than --max-error-rate 0.05" in s["stopped"]
    assert "annotator run: stopped: error budget:" in stderr
    # and with a budget that allows it, the same job goes through
    lenient = tmp_path / "lenient"
    lenient.mkdir()
    rc, stdout, stderr, out = job(lenient, src, models["marked"], "ray", batch_size=8, shard_size=8,
                                  max_error_rate=0.5)
    assert rc == 0, stdout + stderr
    assert summary(out)["errors_by_reason"] == {"inference_error": len(marked)}


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_failed_warm_up_stops_the_job_before_any_image(models, runner, tmp_path):
    src = photos(tmp_path / "in", 6)
    rc, stdout, stderr, out = job(tmp_path, src, models["always"], runner)
    assert rc != 0, stdout + stderr
    assert "warm-up call failed" in stderr and "tiny model fails: always" in stderr, stderr[-3000:]
    assert not list(out.glob("parts/*.parquet"))


def test_a_programming_error_is_never_an_error_row(models, tmp_path):
    """A bug in inference (here our own inference object, replaced by one with a TypeError in it)
    fails the shard and stops the job; no row may blame the image."""
    from annotator.pipeline import plan, stages
    from annotator.pipeline.budget import MARK
    from annotator.pipeline.infer import InferenceSettings

    src = photos(tmp_path / "in", 4)
    p = plan.create(plan.PlanOptions(str(src)), str(tmp_path / "_plan"))
    (batch,) = list(stages.read_shard({**p.rows()[0], "only": ""}, p.uri))
    decoded = stages.decode_batch(batch)
    stage = stages.InferenceStage(models["marked"], InferenceSettings())  # fails on marked images only
    good = stage(decoded)
    assert good["status"].to_pylist() == ["ok"] * 4 and good["_stop"].to_pylist() == [""] * 4

    class Buggy:
        def __call__(self, inputs):
            return inputs.shape  # AttributeError: a list has no shape

    stage.inference = Buggy()
    bad = stage(decoded)
    assert all(f.startswith("programming_error: AttributeError") for f in bad["_fail"].to_pylist())
    assert not any(e and e.startswith("inference_error") for e in bad["error"].to_pylist())
    stop = set(bad["_stop"].to_pylist())
    assert len(stop) == 1 and stop.pop().startswith(f"{MARK}a programming error in inference")
