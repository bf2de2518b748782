"""Commit protocol, manifest, checksums and the output lock, on the local disk and memory://."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from annotator import encode, layout, lock, schema, sink


def _table(shard: str, ids: list[str], errors: dict[str, str] | None = None) -> pa.Table:
    errors = errors or {}
    return encode.to_table([encode.ImageRecord(image_id=i, source_uri=f"/x/{i}", shard=shard, error=errors.get(i))
                            for i in ids])


@pytest.fixture(params=["file", "memory"])
def out_uri(request, tmp_path):
    return str(tmp_path / "out") if request.param == "file" else f"memory://sink-{tmp_path.name}/out"


def test_commit_and_manifest(out_uri):
    s = sink.DatasetSink(out_uri, fingerprint="fp1")
    s.makedirs()
    rec = s.write_shard("000001", _table("000001", ["b", "a", "c"], {"c": "truncated: cut"}), stats={"x": 1})
    assert (rec["rows"], rec["rows_ok"], rec["rows_error"]) == (3, 2, 1)
    assert rec["errors_by_reason"] == {"truncated": 1} and rec["fingerprint"] == "fp1"
    committed = s.committed()
    assert set(committed) == {"000001"}
    part = s.read_part(committed["000001"])
    assert part.column("image_id").to_pylist() == ["a", "b", "c"]  # sorted by id
    assert part.schema.equals(schema.arrow_schema(), check_metadata=False)
    s.write_manifest(committed, final=True, shards_total=2)
    table = layout.Output(out_uri).read_table()
    assert table.num_rows == 3
    assert s.read_json("_stats/part-000001.json")["x"] == 1
    # no attempt files are left behind where a rename committed the part
    assert [p.rsplit("/", 1)[-1] for p in s.fs.ls(s.path("parts"), detail=False)] == ["part-000001.parquet"]


def test_uncommitted_and_mismatched_parts_are_not_committed(out_uri):
    s = sink.DatasetSink(out_uri, fingerprint="fp")
    s.makedirs()
    s.write_shard("000000", _table("000000", ["a"]))
    s.write_shard("000001", _table("000001", ["b"]))
    # a part whose commit record never got written (crash between the two writes)
    s.fs.pipe_file(s.path("parts", "part-000002.parquet"), b"partial")
    # a repair that replaced the part but died before rewriting its record
    s.fs.pipe_file(s.path("parts", "part-000001.parquet"), b"other bytes")
    assert set(s.committed()) == {"000000"}


def test_final_manifest_is_trusted_and_checksums_verified(out_uri):
    s = sink.DatasetSink(out_uri, fingerprint="fp")
    s.makedirs()
    recs = {sid: s.write_shard(sid, _table(sid, [sid + "x"])) for sid in ("000000", "000001")}
    s.write_manifest(recs, final=True)
    # records not in a final manifest are still read
    recs["000002"] = s.write_shard("000002", _table("000002", ["z"]))
    assert set(s.committed()) == {"000000", "000001", "000002"}
    s.write_manifest(recs, final=True)
    # a part changed behind the manifest's back fails its checksum on read
    good = s.fs.cat_file(s.path("parts", "part-000000.parquet"))
    bad = bytearray(good)
    bad[-20] ^= 0xFF
    s.fs.pipe_file(s.path("parts", "part-000000.parquet"), bytes(bad))
    with pytest.raises(layout.ChecksumError, match="part-000000"):
        layout.Output(out_uri).read_table()


def test_reset_keeps_the_lock(out_uri):
    s = sink.DatasetSink(out_uri)
    s.makedirs()
    s.write_shard("000000", _table("000000", ["a"]))
    s.write_json("_manifest.json", {"parts": []})
    s.fs.pipe_file(s.path("_lock"), b"{}")
    s.reset()
    assert s.committed() == {} and s.read_json("_manifest.json") is None and s.fs.exists(s.path("_lock"))


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    out = str(tmp_path / "out")
    first = lock.OutputLock(out, heartbeat_s=0.2, stale_after_s=60)
    first.acquire()
    try:
        with pytest.raises(lock.LockedError, match=f"pid {os.getpid()}"):
            lock.OutputLock(out).acquire()
        time.sleep(0.5)
        assert json.loads((tmp_path / "out" / "_lock").read_text())["heartbeat_at"] > time.time() - 0.45
    finally:
        first.release()
    assert not (tmp_path / "out" / "_lock").exists()
    # a lock left by a process that died (SIGKILL: no release) is taken over at once on this host
    code = (f"from annotator import lock; lk = lock.OutputLock({out!r}); lk.acquire(); "
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], timeout=120)
    dead = json.loads((tmp_path / "out" / "_lock").read_text())
    assert dead["pid"] != os.getpid()
    with lock.OutputLock(out) as lk:
        assert json.loads((tmp_path / "out" / "_lock").read_text())["token"] == lk.token


def test_lock_goes_stale_without_heartbeat_and_the_old_owner_notices(tmp_path):
    out = f"memory://lock-{tmp_path.name}/out"
    old = lock.OutputLock(out, heartbeat_s=3600, stale_after_s=1)
    old.acquire()
    old.owner["host"] = "elsewhere"  # not this host: only the heartbeat can tell it is gone
    old.refresh()
    time.sleep(1.2)
    new = lock.OutputLock(out, stale_after_s=1)
    new.acquire()
    old.refresh()  # the old owner's next heartbeat finds the lock taken
    with pytest.raises(lock.LockLostError):
        old.check()
    new.release()
