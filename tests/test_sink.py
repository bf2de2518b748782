"""Commit protocol, manifest and checksums, on the local disk and memory://."""

from __future__ import annotations

import pyarrow as pa
import pytest

from annotator.labels import schema
from annotator.pipeline import encode, layout, sink


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


def test_running_manifest_carries_totals_and_readers_rebuild_the_list(out_uri):
    s = sink.DatasetSink(out_uri, fingerprint="fp")
    s.makedirs()
    recs = {"000000": s.write_shard("000000", _table("000000", ["a", "b"], {"b": "truncated: cut"})),
            "000001": s.write_shard("000001", _table("000001", ["c"]))}
    totals = sink.manifest_totals(recs.values())
    # a repair replaces a record: its old counts go out, the new ones in
    fixed = s.write_shard("000000", _table("000000", ["a", "b"]), repairs=1)
    sink.manifest_totals([recs["000000"]], totals, sign=-1)
    sink.manifest_totals([fixed], totals)
    recs["000000"] = fixed
    assert totals == {k: v for k, v in sink.manifest_totals(recs.values()).items()}
    assert (totals["rows"], totals["rows_error"], totals["errors_by_reason"]) == (3, 0, {})
    running = s.write_manifest(recs, final=False, totals=totals, shards_total=3)
    assert "records" not in running and "parts" not in running  # O(1) per rewrite, whatever the job's size
    assert (running["shards_committed"], running["rows"], running["shards_total"]) == (2, 3, 3)
    out = layout.Output(out_uri)
    assert [r["shard"] for r in out.records()] == ["000000", "000001"]  # rebuilt from _commits/
    assert out.read_table().num_rows == 3
    final = s.write_manifest(recs, final=True, shards_total=3)
    assert final["parts"] == ["parts/part-000000.parquet", "parts/part-000001.parquet"]
    assert {k: final[k] for k in totals} == totals
