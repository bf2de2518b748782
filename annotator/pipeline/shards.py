"""What every runner does with a shard's labelled rows: split a batch by shard, carry the pieces
between processes as Arrow IPC, and assemble a shard from its pieces (the first copy of each image
id, whether all rows are there, or why the shard cannot be committed).

Why once, beside the stages: a shard committed with a row missing or twice would break the
output's exactly-once promise, so de-duplication and completeness must not differ by engine (an
engine may run a task again, or lose one). Never imports Ray or Beam.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from annotator.pipeline import errors


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def by_shard(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """The rows of each shard in ``table`` (the inference stage's output), shard by shard."""
    shard = table.column("shard")
    ids = pc.unique(shard).to_pylist()
    if len(ids) == 1:  # the usual block: one shard's rows, no copy (a filter of nested lists is not cheap)
        yield ids[0], table
        return
    for shard_id in ids:
        yield shard_id, table.filter(pc.equal(shard, shard_id))


class ShardRows:
    """One shard's rows, added in pieces as they arrive. The read stage sets ``_shard_rows`` on the
    shard's last rows and ``_fail`` on a row when the whole shard failed (unreadable tar, inference
    that keeps timing out): a failed shard keeps no rows and is never complete."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.ids: set[str] = set()
        self.expected: int | None = None
        self.fail: str | None = None
        self.taken = False

    def add(self, piece: pa.Table) -> None:
        if self.fail or self.taken:  # a failed shard stays failed; a taken one is being committed
            return
        fails = [f for f in piece.column("_fail").to_pylist() if f]
        if fails:
            self.fail, self.tables = fails[0], []
            return
        keep = [not (i in self.ids or self.ids.add(i)) for i in piece.column("image_id").to_pylist()]
        if not all(keep):  # a task the engine ran again: keep the first copy of each row
            piece = piece.filter(pa.array(keep))
        self.tables.append(piece)
        n = pc.max(piece.column("_shard_rows")).as_py()
        if n is not None and n >= 0:
            self.expected = n

    @property
    def complete(self) -> bool:
        return not self.fail and not self.taken and self.expected is not None and len(self.ids) >= self.expected

    def take(self) -> list[pa.Table]:
        """The rows, once: a shard is committed once. Its ids go too: a taken shard drops every later
        copy anyway, and a driver that kept them grew by ~100 bytes per image for the whole job."""
        tables, self.tables, self.taken = self.tables, [], True
        self.ids = set()
        return tables

    def why_incomplete(self) -> str:
        want = "?" if self.expected is None else self.expected
        return self.fail or errors.text(errors.INCOMPLETE, f"{len(self.ids)} of {want} rows arrived")
