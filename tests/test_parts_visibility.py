"""``parts/`` holds committed parts only: a process killed (SIGKILL) between writing a part and its
commit record, or between the record and the publish, leaves a ``parts/`` whose glob reads exactly
what the manifest reader reads, and the next run keeps them equal (the attempt is redone, or the
committed part is published). On the local disk and the GCS emulator; a real job killed mid-run in
the slow test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotator.pipeline import encode, layout, sink
from tests.helpers import emulators

REPO = Path(__file__).resolve().parent.parent

# writes shards 0 and 1, then dies at STEP (``commit``: after the part's attempt is written, before
# its commit record; ``publish``: after the record, before the part appears in parts/) of shard 2
KILLED_WRITER = """
import json, os, signal, sys
from annotator.pipeline import encode, sink
uri, step, so = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def table(shard, ids):
    return encode.to_table([encode.ImageRecord(image_id=i, source_uri="/x/" + i, shard=shard) for i in ids])

s = sink.DatasetSink(uri, fingerprint="fp", storage_options=so)
s.makedirs()
records = {sid: s.write_shard(sid, table(sid, [sid + "a", sid + "b"])) for sid in ("000000", "000001")}
s.write_manifest(records, final=False)
setattr(sink.CommitSink, step, lambda self, *a, **k: os.kill(os.getpid(), signal.SIGKILL))
s.write_shard("000002", table("000002", ["000002a"]))
"""


def _table(shard: str, ids: list[str]):
    return encode.to_table([encode.ImageRecord(image_id=i, source_uri="/x/" + i, shard=shard) for i in ids])


def _kill_while_writing(uri: str, step: str, so: dict | None = None) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, uri, step, json.dumps(so or {})], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def _glob_ids(out: layout.Output) -> list[str]:
    """What a glob of parts/ reads (pyarrow's dataset reader, as pandas and friends use it)."""
    return sorted(pq.read_table(out.path(layout.PARTS), filesystem=out.fs).column("image_id").to_pylist())


def _manifest_ids(out: layout.Output) -> list[str]:
    return sorted(out.read_table().column("image_id").to_pylist())


def _check_kill_and_rerun(uri: str, step: str, so: dict | None = None) -> None:
    _kill_while_writing(uri, step, so)
    out = layout.Output(uri, so)
    attempts = out.listing(layout.ATTEMPTS, recursive=True)
    assert [p.rsplit("/", 1)[-1] for p in attempts] == ["part-000002.parquet"]  # the killed attempt
    assert sorted(out.listing(layout.PARTS)) == ["parts/part-000000.parquet", "parts/part-000001.parquet"]
    assert (out.read_json("_commits/part-000002.json") is not None) == (step == "publish")
    assert out.read_json(layout.MANIFEST)["final"] is False
    # the glob equals the manifest reader: no part without its commit record is visible
    assert _glob_ids(out) == _manifest_ids(out) == ["000000a", "000000b", "000001a", "000001b"]

    # the next run: a record whose part was not published is published (rolled forward, not recomputed),
    # a shard without record is written again; then both reads agree on all three shards
    rerun = sink.DatasetSink(uri, fingerprint="fp", storage_options=so)
    committed = rerun.committed()
    if step == "publish":
        assert set(committed) == {"000000", "000001", "000002"}
        assert committed["000002"] == out.read_json("_commits/part-000002.json")  # same attempt, same bytes
    else:
        assert set(committed) == {"000000", "000001"}
        committed["000002"] = rerun.write_shard("000002", _table("000002", ["000002a"]))
    rerun.write_manifest(committed, final=True)
    assert out.listing(layout.ATTEMPTS, recursive=True) == {}  # a final manifest removes dead attempts
    assert _glob_ids(out) == _manifest_ids(out) == ["000000a", "000000b", "000001a", "000001b", "000002a"]
    assert sorted(out.listing(layout.PARTS)) == out.read_json(layout.MANIFEST)["parts"]


@pytest.mark.parametrize("step", ["commit", "publish"])
def test_kill_between_write_and_commit_local(tmp_path, step):
    _check_kill_and_rerun(str(tmp_path / "out"), step)


@pytest.fixture(scope="module")
def gcs():
    with emulators.gcs() as (so, fs):
        fs.mkdir("vis")
        yield so, fs


@pytest.mark.parametrize("step", ["commit", "publish"])
def test_kill_between_write_and_commit_gcs(gcs, step):
    so, fs = gcs
    _check_kill_and_rerun(f"gs://vis/{step}", step, so)
    # on the object store too, parts/ got only whole, committed objects; the attempts are gone
    assert not any("_attempts" in p for p in fs.find(f"vis/{step}"))


def test_a_running_jobs_manifest_is_rebuilt_from_commit_records(tmp_path):
    """A non-final manifest may be behind the commits; readers then use the commit records."""
    s = sink.DatasetSink(str(tmp_path / "o"), fingerprint="fp")
    s.makedirs()
    first = {"000000": s.write_shard("000000", _table("000000", ["a"]))}
    s.write_manifest(first, final=False)
    s.write_shard("000001", _table("000001", ["b"]))
    out = layout.Output(str(tmp_path / "o"))
    assert [r["shard"] for r in out.records()] == ["000000", "000001"]
    assert _glob_ids(out) == _manifest_ids(out) == ["a", "b"]


# a real job (its own process, on the test's Ray) that dies right before its third commit record
KILLED_JOB = """
import os, signal, sys
from annotator.pipeline import sink
from annotator.runners import ray_data
from tests.helpers.jobs import job_spec

src, out, address = sys.argv[1:4]
real, calls = sink.CommitSink.commit, []

def commit(self, record):
    calls.append(record["shard"])
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, record)

sink.CommitSink.commit = commit
ray_data.run(job_spec(src, out, shard_size=2, compute={"ray_address": address}))
"""


@pytest.mark.slow  # runs a job
def test_job_killed_between_write_and_commit_then_rerun(ray_cluster, default_model_path, tmp_path):
    import duckdb

    from tests.helpers.jobs import annotator
    from tests.helpers.photos import write_photos

    src, out_dir = tmp_path / "in", tmp_path / "out"
    ids = write_photos(src, 8)
    address = ray_cluster.get_runtime_context().gcs_address
    proc = subprocess.run([sys.executable, "-c", KILLED_JOB, str(src), str(out_dir), address], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    out = layout.Output(str(out_dir))
    assert out.listing(layout.ATTEMPTS, recursive=True)  # the killed commit's part, never published
    glob_ids = _glob_ids(out)
    assert glob_ids == _manifest_ids(out) and 2 <= len(glob_ids) <= 4  # one or two shards made it

    rerun = annotator("run", str(src), str(out_dir), "--shard-size", "2", "--batch-size", "2", "--num-aug", "1",
                      "--cpus-per-actor", "0.5", "--no-progress", "--ray-address", address)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _glob_ids(out) == _manifest_ids(out) == sorted(ids)  # each image once
    assert sorted(out.listing(layout.PARTS)) == out.read_json(layout.MANIFEST)["parts"]
    assert out.listing(layout.ATTEMPTS, recursive=True) == {}
    # the tools people reach for first read parts/ directly
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM read_parquet('{out_dir}/parts/*.parquet')").fetchone()[0] == len(ids)
