"""One real ``annotator run`` output shared by the render/report/filter/consumer tests.

The run happens once per test session (the first module that asks runs it; the others find its
``_manifest.json`` under pytest's session temp folder), on a few sample photos plus two broken
files, in parts of two images; its people carry the pipeline's ``quality`` (schema 1.1).
``rewritten`` derives a changed copy, committed like a job's output (e.g. ``without_quality``, a
schema-1.0-style copy for the code paths that must compute the score).
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tests.helpers.jobs import annotator

GOOD = ("pose2sim_cam01_f030.jpg", "astronaut.png", "camera.png")


def run_once(base: Path, samples_dir: Path) -> Path:
    """The shared output (``base/labels``), made on first use."""
    base.mkdir(parents=True, exist_ok=True)
    out = base / "labels"
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "_manifest.json").exists():
            return out
        inp = base / "images"
        shutil.rmtree(inp, ignore_errors=True)
        inp.mkdir()
        for name in GOOD:
            shutil.copy(samples_dir / name, inp / name)
        good = (samples_dir / "pose2sim_cam02_f030.jpg").read_bytes()
        (inp / "x_truncated.jpg").write_bytes(good[: len(good) // 3])
        (inp / "y_not_an_image.jpg").write_text("<html>404</html>")
        proc = annotator("run", str(inp), str(out), "--shard-size", "2", "--batch-size", "2", "--num-aug", "1",
                         "--no-progress")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return out


def shared_output(tmp_path_factory, samples_dir) -> Path:
    """Call from a fixture that also depends on ``default_model_path`` (so the model is built, never
    downloaded, before the run)."""
    return run_once(tmp_path_factory.getbasetemp() / "shared_labels_run", samples_dir)


def rewritten(src: Path, dest: Path, change: Callable[[pa.Table], pa.Table],
              metadata: dict[bytes, bytes] | None = None) -> Path:
    """A copy of ``src`` with ``change`` applied to every part (and ``metadata`` over its file
    metadata), written and committed by ``annotator.pipeline.sink`` like a job's output."""
    from annotator.pipeline import layout, sink

    if (dest / "_manifest.json").exists():
        return dest
    source, out = layout.Output(str(src)), sink.DatasetSink(str(dest))
    out.makedirs()
    records = {}
    for record in source.records():
        table = change(source.read_part(record))
        out.file_metadata = {**(table.schema.metadata or {}), **(metadata or {})}
        records[record["shard"]] = out.write_shard(record["shard"], table)
    out.write_manifest(records, final=True)
    return dest


def drop_quality_column(table: pa.Table) -> pa.Table:
    """``table`` without ``people[].quality``: what a schema-1.0 output looks like."""
    people = table.column("people").combine_chunks()
    flat = pc.list_flatten(people)
    struct_type = people.type.value_type
    keep = [i for i in range(struct_type.num_fields) if struct_type.field(i).name != "quality"]
    struct = pa.StructArray.from_arrays([flat.field(i) for i in keep], fields=[struct_type.field(i) for i in keep])
    list_field = people.type.value_field.with_type(struct.type)
    new_people = pa.ListArray.from_arrays(people.offsets, struct, type=pa.list_(list_field))
    i = table.schema.get_field_index("people")
    return table.set_column(i, table.schema.field("people").with_type(new_people.type), new_people)


def without_quality(src: Path, dest: Path) -> Path:
    """``src`` as a schema-1.0 output (no stored ``quality``)."""
    return rewritten(src, dest, drop_quality_column, {b"annotator.schema_version": b"1.0"})
