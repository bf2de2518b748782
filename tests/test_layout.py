"""The output layout's names and its reader: storage options reach the filesystem, the first
manifests (paths only, no commit records) still read, and ``part_uris`` are what other readers open."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from annotator.pipeline import encode, layout, sink


def test_names_and_shard_ids():
    assert layout.part_name("000012") == "part-000012.parquet" and layout.record_name("000012") == "part-000012.json"
    assert layout.shard_of(f"{layout.PARTS}/part-000012.parquet") == layout.shard_of("part-000012.json") == "000012"


def test_storage_options_reach_the_filesystem(tmp_path):
    out = layout.Output(str(tmp_path / "o"), {"file": {"auto_mkdir": True}, "s3": {"anon": True}})
    assert out.fs.auto_mkdir is True and out.storage_options["s3"] == {"anon": True}


def test_a_manifest_without_records_reads_its_parts(tmp_path):
    s = sink.DatasetSink(str(tmp_path / "o"))
    s.makedirs()
    rec = s.write_shard("000003", encode.to_table([encode.ImageRecord("a", "/x/a", "000003", error="truncated: x")]))
    (tmp_path / "o" / layout.MANIFEST).write_text(json.dumps({"parts": [rec["part"]]}))  # as the first outputs wrote
    out = layout.Output(str(tmp_path / "o"))
    assert out.records() == [{"part": "parts/part-000003.parquet", "shard": "000003"}]
    assert out.read_table().column("error").to_pylist() == ["truncated: x"]
    assert out.part_uris() == [str(tmp_path / "o" / "parts" / "part-000003.parquet")]
    assert pq.read_table(out.part_uris()[0]).num_rows == 1
