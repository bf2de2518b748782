"""``annotator run`` end to end, as a user runs it: a subprocess, a real local Ray, the real model,
a folder with good and bad files; the Parquet read back with pyarrow and pandas."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from annotator.labels import schema
from tests.helpers.jobs import annotator

pytestmark = pytest.mark.slow  # runs a job


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory, samples_dir):
    d = tmp_path_factory.mktemp("in")
    shutil.copy(samples_dir / "pose2sim_cam01_f030.jpg", d / "a_person.jpg")
    shutil.copy(samples_dir / "astronaut.png", d / "b_astronaut.png")
    good = (samples_dir / "pose2sim_cam02_f030.jpg").read_bytes()
    (d / "c_truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "d_not_an_image.jpg").write_text("<html>404 not found</html>")
    (d / "e_empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("not an input: not an image extension")
    return d


@pytest.fixture(scope="module")
def run_output(input_dir, tmp_path_factory, default_model_path):
    out = tmp_path_factory.mktemp("out") / "labels"
    proc = annotator("run", str(input_dir), str(out), "--shard-size", "2", "--batch-size", "2",
                      "--num-aug", "1", "--no-progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_run_writes_a_readable_dataset(run_output):
    out, stdout = run_output
    assert str(out) in stdout and "people" in stdout
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == 5 and len(manifest["parts"]) == 3
    table = pq.read_table(out / "parts")
    assert table.num_rows == 5
    assert table.schema.equals(schema.arrow_schema(), check_metadata=False)
    meta = schema.read_metadata(pq.read_schema(out / manifest["parts"][0]))
    assert meta["schema_version"] == schema.version()
    assert len(meta["skeleton"]["joint_names"]) == 33 and meta["model"]["sha256"]
    df = pd.read_parquet(out / "parts").set_index("image_id")
    assert sorted(df.index) == ["a_person.jpg", "b_astronaut.png", "c_truncated.jpg", "d_not_an_image.jpg",
                                "e_empty.png"]
    assert (df.loc[["a_person.jpg", "b_astronaut.png"], "status"] == "ok").all()
    for name in ("a_person.jpg", "b_astronaut.png"):
        people = df.loc[name, "people"]
        assert len(people) >= 1
        assert len(people[0]["joints3d_cam"]) == 33 and len(people[0]["joints2d"]) == 33
        assert 500 < people[0]["joints3d_cam"][23][2] < 10_000  # hip depth in mm


def test_bad_files_become_error_rows(run_output):
    out, _ = run_output
    df = pd.read_parquet(out / "parts").set_index("image_id")
    errors = df[df.status == "error"]
    assert set(errors.index) == {"c_truncated.jpg", "d_not_an_image.jpg", "e_empty.png"}
    assert errors.loc["c_truncated.jpg", "error"].startswith("truncated")
    assert errors.loc["d_not_an_image.jpg", "error"].startswith("not_an_image")
    assert errors.loc["e_empty.png", "error"].startswith("empty_file")
    assert (errors.num_people == 0).all()


def test_status_json_agrees_with_the_files(run_output):
    out, _ = run_output
    proc = annotator("status", str(out), "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    assert st["shards_committed"] == st["shards_total"] == 3
    assert (st["rows"], st["rows_ok"], st["rows_error"]) == (5, 2, 3)
    assert st["errors_by_reason"] == {"truncated": 1, "not_an_image": 1, "empty_file": 1}


def test_rerun_skips_committed_shards(run_output, input_dir):
    out, _ = run_output
    before = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("part-*.parquet")}
    proc = annotator("run", str(input_dir), str(out), "--shard-size", "2", "--batch-size", "2",
                      "--num-aug", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("part-*.parquet")}
    assert after == before  # nothing rewritten
    assert pq.read_table(out / "parts").num_rows == 5
