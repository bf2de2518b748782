"""The Beam runner (DirectRunner, the real default model behind RunInference) writes what the Ray
runner writes: the same rows, file metadata and fingerprint; it resumes where a run stopped; its
workers commit only while the output lock names their job."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotator import cli
from annotator.outputs.dataset import read_table
from annotator.pipeline import layout, sink, stages
from annotator.pipeline.lock import LockLostError, OutputLock
from annotator.pipeline.shards import to_ipc
from annotator.runners import beam, ray_data
from tests.helpers.jobs import assert_same_labels, by_id, job_spec
from tests.helpers.photos import write_photos

pytestmark = pytest.mark.slow


def test_beam_and_ray_write_the_same_dataset(ray_cluster, default_model_path, tmp_path, capsys):
    """Both runners on the same photos; Beam goes through the CLI."""
    photos, ray_out, beam_out = (str(tmp_path / n) for n in ("photos", "ray", "beam"))
    write_photos(tmp_path / "photos", 5)
    (tmp_path / "photos" / "corrupt.jpg").write_text("<html>not a photo</html>")
    r = ray_data.run(job_spec(photos, ray_out))
    rc = cli.main(["run", photos, beam_out, "--runner", "beam", "--shard-size", "4", "--batch-size", "2",
                   "--num-aug", "1", "--no-progress"])
    assert rc == 0
    assert "6 (5 ok, 1 errors)" in capsys.readouterr().out
    b = json.loads((tmp_path / "beam" / "_summary.json").read_text())
    assert (r["runner"], b["runner"]) == ("ray", "beam")
    assert b["fingerprint"] == r["fingerprint"]  # the runner is not part of what the labels depend on
    for key in ("images", "images_ok", "images_error", "people", "shards_committed", "errors_by_reason",
                "people_per_image"):
        assert b[key] == r[key], key
    assert b["images_ok"] == 5 and b["errors_by_reason"] == {"not_an_image": 1}
    assert b["stage_seconds"]["infer"] > 0 and len(b["actors"]) == 1
    assert not (tmp_path / "beam" / layout.RUNS).exists()  # the round outcomes are cleaned up

    rows_r, rows_b = by_id(read_table(ray_out)), by_id(read_table(beam_out))
    assert len(rows_b) == 6
    assert_same_labels(rows_b, rows_r, atol={"joints2d": 1e-2, "joints3d_cam": 0.5})  # px, mm
    part = sink.DatasetSink(beam_out).committed()["000000"]["part"]
    meta_b = pq.read_schema(tmp_path / "beam" / part).metadata
    assert meta_b == pq.read_schema(tmp_path / "ray" / part).metadata and meta_b  # model, skeleton, settings


@pytest.fixture(scope="module")
def beam_output(default_model_path, tmp_path_factory):
    """8 photos in 2 shards, annotated under Beam (each test works on its own copy)."""
    base = tmp_path_factory.mktemp("beam")
    write_photos(base / "photos", 8)
    summary = beam.run(job_spec(str(base / "photos"), str(base / "out"), runner="beam"))
    assert summary["shards_committed"] == 2 and summary["images_ok"] == 8
    return base


def _copy(base, tmp_path):
    """The shared input (read only) and a copy of the output (the plan names the input's path)."""
    shutil.copytree(base / "out", tmp_path / "out")
    return base / "photos", tmp_path / "out"


def test_beam_resumes_where_a_run_stopped(beam_output, tmp_path):
    photos, out = _copy(beam_output, tmp_path)
    before = by_id(read_table(str(out)))
    # as if the job had died before committing the second shard: its commit record is missing
    (out / "_commits" / layout.record_name("000001")).unlink()
    again = beam.run(job_spec(str(photos), str(out), runner="beam"))
    assert again["shards_skipped"] == 1 and again["shards_committed"] == 1 and again["images"] == 4
    assert again["steady_images_per_second"] is None or again["steady_images_per_second"] > 0
    after = by_id(read_table(str(out)))
    assert sorted(after) == sorted(before) and len(after) == 8  # nothing lost, nothing twice
    assert json.loads((out / "_manifest.json").read_text())["rows"] == 8


def _element(out, shard_id: str, fail: str = "") -> tuple[str, list[tuple[str, bytes]]]:
    """A shard's rows as the inference stage hands them to the commit (grouped by commit group: here
    the shard alone), in two pieces: the label columns of a committed part plus the driver-only columns."""
    part = sink.DatasetSink(str(out)).committed()[shard_id]
    t = sink.DatasetSink(str(out)).read_part(part).replace_schema_metadata(None)
    n = t.num_rows
    extras = {"_shard_rows": pa.array([n] * n, pa.int64()), "_fail": pa.array([fail] * n, pa.string()),
              "_read_s": pa.array([0.0] * n), "_read_retries": pa.array([0] * n, pa.int64()),
              "_decode_s": pa.array([0.0] * n), "_infer_s": pa.array([0.1] * n),
              "_actor": pa.array(["test:1"] * n), "_gpu": pa.array([""] * n),
              "_model_load": pa.array(["load1"] * n), "_decode_pid": pa.array([1] * n, pa.int64()),
              "_done_at": pa.array([0.0] * n), "_stop": pa.array([""] * n), "_up_hint": pa.nulls(n, pa.string())}
    for name in stages.EXTRA_COLUMNS:
        t = t.append_column(name, extras[name])
    return shard_id, [(shard_id, to_ipc(t.slice(0, 1))), (shard_id, to_ipc(t.slice(1)))]


def test_commit_dofn_needs_the_lock_and_skips_failed_shards(beam_output, tmp_path):
    _, out = _copy(beam_output, tmp_path)
    ok, failing = _element(out, "000000"), _element(out, "000000", fail="timeout: inference exceeded 1 s")
    record = out / "_commits" / layout.record_name("000000")
    record.unlink()  # the shard is to be committed again
    fp = json.loads((out / "_fingerprint.json").read_text())["fingerprint"]

    def dofn(token: str) -> beam.CommitShard:
        fn = beam.CommitShard(str(out), None, {}, fp, "attempt2", token, {"000000": None}, {}, attempt=1)
        fn.setup()
        return fn

    with OutputLock(str(out)) as lock:
        with pytest.raises(LockLostError):  # another job holds the output: nothing is written
            list(dofn("someone-else").process(ok))
        assert not record.exists()
        assert list(dofn(lock.token).process(failing)) == [
            {"shard": "000000", "fail": "timeout: inference exceeded 1 s"}]
        assert not record.exists()
        (done,) = dofn(lock.token).process(ok)
    assert done["record"]["rows"] == 4 and done["record"]["attempt"] == "attempt2"
    assert done["run_stats"]["actors"] == {"test:1": {"images": 4, "gpu": "", "model_loads": 1, "load_ids": ["load1"]}}
    assert json.loads(record.read_text())["sha256"] == done["record"]["sha256"]
