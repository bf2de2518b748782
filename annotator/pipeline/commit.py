"""One shard's commit: its rows (after the temporal step of video shards) become a Parquet part
and a commit record through the sink's exactly-once protocol. Pure of runner state, so the same
function runs on a driver thread (Ray), in a Ray task (``commit_on = "workers"``) or on a Beam
worker, and every runner writes the same bytes."""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

from annotator.labels import schema
from annotator.pipeline import rig, sequence, stages
from annotator.pipeline.progress import shard_stats
from annotator.pipeline.sink import DatasetSink


def commit_shard(sink: DatasetSink, shard_id: str, tables: list[pa.Table], only: list[str] | None,
                 old_record: dict | None, attempt: int, seq: sequence.ShardSequence | None = None,
                 continue_previous: bool = True) -> tuple[dict, dict]:
    """Write one shard's rows and commit it (the sink's protocol); returns (commit record, this
    run's stats). Pure of runner state, so it runs on a driver thread (Ray) or a worker (Beam).

    ``only`` (``--retry-errors``): the rows given replace those ids in the committed part
    ``old_record``; the other rows are kept as they were. ``seq`` (video shards): the temporal
    step runs on the assembled rows first (``sequence``; ``continue_previous``: continue
    the committed tracks of the shard before it); a ``rig.RigShard``: its views are fused
    (``rig.apply``)."""
    table = pa.concat_tables(tables)
    skeleton = sequence.skeleton_of_metadata(sink.file_metadata)
    if isinstance(seq, rig.RigShard):
        step = functools.partial(rig.apply, rs=seq, skeleton=skeleton, sink=sink, continue_previous=continue_previous)
    elif seq is not None:
        step = functools.partial(sequence.apply, seq=seq, sink=sink, skeleton=skeleton,
                                 continue_previous=continue_previous)
    else:
        step = None
    if step is not None and only is None:
        table = step(table)
    # a rig's world rows are made here, not read or inferred: no stage counters of their own
    extras = table.filter(pc.invert(rig.is_world(table))).select(list(stages.EXTRA_COLUMNS))
    rows = table.select(schema.arrow_schema().names).cast(schema.arrow_schema())
    run_stats = shard_stats(rows, extras, attempt)  # what this run computed
    file_stats, repairs = run_stats, 0
    if only is not None:
        old = sink.read_part(old_record).replace_schema_metadata(None).cast(schema.arrow_schema())
        redone = pa.array(rows.column("image_id").to_pylist(), pa.string())
        old = old.filter(pc.invert(pc.is_in(old.column("image_id"), value_set=redone)))
        rows = pa.concat_tables([old, rows])
        if step is not None:
            rows = step(rows)
        repairs = int(old_record.get("repairs", 0)) + 1
        file_stats = shard_stats(rows, extras, attempt)
    return sink.write_shard(shard_id, rows, file_stats, repairs=repairs), run_stats
