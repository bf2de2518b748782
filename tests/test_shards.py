"""Shard assembly as both runners use it: pieces by shard, Arrow IPC, the first copy of each row,
completeness from the read stage's row count, a failed shard, and a shard taken once."""

from __future__ import annotations

import pyarrow as pa

from annotator.pipeline import shards


def _piece(shard: str, ids: list[str], shard_rows: int = -1, fail: str = "") -> pa.Table:
    n = len(ids)
    return pa.table({"image_id": ids, "shard": [shard] * n, "_shard_rows": pa.array([shard_rows] * n, pa.int64()),
                     "_fail": [fail] * n})


def test_by_shard_and_ipc_round_trip():
    table = pa.concat_tables([_piece("000001", ["a", "b"]), _piece("000000", ["c"]), _piece("000001", ["d"])])
    got = {s: t.column("image_id").to_pylist() for s, t in shards.by_shard(table)}
    assert got == {"000001": ["a", "b", "d"], "000000": ["c"]}
    assert shards.from_ipc(shards.to_ipc(table)).equals(table)


def test_rows_complete_once_every_row_arrived_first_copies_only():
    rows = shards.ShardRows()
    rows.add(_piece("0", ["a", "b"]))
    assert not rows.complete and rows.why_incomplete() == "incomplete: 2 of ? rows arrived"
    rows.add(_piece("0", ["b", "a"]))  # a task run again
    rows.add(_piece("0", ["c", "c"], shard_rows=3))  # the last batch carries the count
    assert rows.complete
    taken = pa.concat_tables(rows.take())
    assert taken.column("image_id").to_pylist() == ["a", "b", "c"]
    assert not rows.complete and rows.take() == []  # committed once
    rows.add(_piece("0", ["d"], shard_rows=4))
    assert not rows.complete  # nothing is added after the shard was taken


def test_rows_count_is_what_the_read_stage_said():
    rows = shards.ShardRows()
    rows.add(_piece("0", ["a"], shard_rows=2))
    assert not rows.complete and rows.why_incomplete() == "incomplete: 1 of 2 rows arrived"


def test_a_failed_shard_keeps_no_rows_and_names_the_first_reason():
    rows = shards.ShardRows()
    rows.add(_piece("0", ["a", "b"]))
    rows.add(_piece("0", ["c"], shard_rows=3, fail="timeout: inference exceeded 1 s"))
    rows.add(_piece("0", ["d"], fail="shard_read_error: later"))
    assert not rows.complete and rows.take() == []
    assert rows.why_incomplete() == "timeout: inference exceeded 1 s"
