"""``annotator filter OUTPUT DEST``: a copy of a job's output that keeps only the people that pass.

Why a new dataset rather than a flag for readers: training code then needs no knowledge of the
score, and the thresholds are recorded where the data is (file metadata ``annotator.filter``,
``_manifest.json`` and ``_filter.json``), so a model trained on it can say what it was trained on.

Semantics:

- people below ``min_quality`` (``people[].quality``) or ``min_score`` (detector score) are removed
  from their row and ``num_people`` is updated; a person whose quality is null fails ``min_quality``;
- a row that had people and lost all of them is dropped (``keep_emptied`` keeps it): an image with
  no labels left would teach "nobody here" when somebody is;
- rows with no detections at all are kept (the detector's negatives), error rows are dropped
  (``keep_errors`` keeps them);
- outputs without a ``quality`` field (schema 1.0) are filtered on a quality computed from the
  stored columns by :func:`annotator.labels.quality.score_stored_person` (no TTA spread: it is not stored);
  the output says so (``quality_source``).

The layout is the job's: one part per input part with the same shard id, each committed by
``annotator.pipeline.sink`` (part, then commit record, then manifest), file metadata kept.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from annotator.labels import quality, schema
from annotator.outputs import card
from annotator.outputs.dataset import has_quality
from annotator.pipeline import layout, sink

log = logging.getLogger(__name__)

# What ``filter_table`` counts, per part and (summed) in ``_filter.json``.
COUNTS = ("rows_in", "rows_out", "people_in", "people_out", "rows_emptied", "error_rows_dropped")


@dataclass(frozen=True)
class FilterConfig:
    min_quality: float | None = None
    min_score: float | None = None
    keep_errors: bool = False
    keep_emptied: bool = False


def _computed_quality(flat: pa.Array, parents: np.ndarray, table: pa.Table, joint_names: list[str]) -> np.ndarray:
    widths = table.column("width").to_pylist()
    heights = table.column("height").to_pylist()
    out = np.empty(len(flat), np.float64)
    for i, person in enumerate(flat.to_pylist()):
        r = parents[i]
        size = (widths[r], heights[r]) if widths[r] is not None else None
        out[i] = quality.score_stored_person(person, joint_names, size)
    return out


def filter_table(table: pa.Table, config: FilterConfig, joint_names: list[str] | None = None
                 ) -> tuple[pa.Table, dict[str, int], str]:
    """Filter one part's rows; returns (table, ``COUNTS``, quality source: 'stored', 'computed' or '')."""
    people = table.column("people").combine_chunks()
    flat = pc.list_flatten(people)
    parents = np.asarray(pc.list_parent_indices(people), np.int64)
    counts = {"rows_in": table.num_rows, "people_in": len(flat)}
    keep = np.ones(len(flat), bool)
    source = ""
    if config.min_score is not None:
        keep &= np.asarray(flat.field("score").fill_null(-1.0), np.float64) >= config.min_score
    if config.min_quality is not None:
        if has_quality(table.schema):
            source = "stored"
            q = np.asarray(flat.field("quality").fill_null(np.nan), np.float64)
        else:
            source = "computed"
            q = _computed_quality(flat, parents, table, joint_names or [])
        keep &= np.nan_to_num(q, nan=-1.0) >= config.min_quality
    n = table.num_rows
    before = np.bincount(parents, minlength=n)
    after = np.bincount(parents[keep], minlength=n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(after)]).astype(np.int32))
    new_people = pa.ListArray.from_arrays(offsets, flat.filter(pa.array(keep)), type=people.type)
    fields = table.schema
    table = table.set_column(fields.get_field_index("people"), fields.field("people"), new_people)
    table = table.set_column(fields.get_field_index("num_people"), fields.field("num_people"),
                             pa.array(after.astype(np.int32), pa.int32()))
    ok = np.asarray(pc.equal(table.column("status"), "ok").fill_null(False))
    emptied = ok & (before > 0) & (after == 0)
    rows = ok.copy() if not config.keep_errors else np.ones(n, bool)
    if not config.keep_emptied:
        rows &= ~emptied
    table = table.filter(pa.array(rows))
    counts.update(rows_emptied=int(emptied.sum()), error_rows_dropped=0 if config.keep_errors else int((~ok).sum()),
                  rows_out=table.num_rows, people_out=int(after[rows].sum()))
    return table, counts, source


def filter_output(output_uri: str, dest_uri: str, config: FilterConfig, overwrite: bool = False,
                  storage_options: dict | None = None) -> dict:
    """Write the filtered copy of ``output_uri`` to ``dest_uri``; returns the ``_filter.json`` record."""
    if config.min_quality is None and config.min_score is None:
        raise ValueError("give --min-quality and/or --min-score")
    if str(dest_uri).rstrip("/") == str(output_uri).rstrip("/"):
        raise ValueError("DEST must differ from OUTPUT")
    src = layout.Output.open(output_uri, storage_options)
    src_records = src.records()
    out = sink.DatasetSink(dest_uri, storage_options=storage_options)
    if out.read_json(layout.MANIFEST) is not None:
        if not overwrite:
            raise FileExistsError(f"{dest_uri} already holds a dataset (use --overwrite to replace it)")
        out.reset()
    out.makedirs()
    started = time.time()
    total = Counter(dict.fromkeys(COUNTS, 0))
    sources_used: set[str] = set()
    records: dict[str, dict] = {}
    filter_meta = {"source": str(output_uri), **asdict(config)}
    for entry in src_records:
        table = src.read_part(entry)
        md = dict(table.schema.metadata or {})
        names = schema.read_metadata(table.schema).get("skeleton", {}).get("joint_names", [])
        filtered, counts, source = filter_table(table, config, names)
        if source:
            sources_used.add(source)
        total.update(counts)
        md[b"annotator.filter"] = json.dumps({**filter_meta, "quality_source": source}, sort_keys=True).encode()
        out.file_metadata = md
        records[entry["shard"]] = out.write_shard(entry["shard"], filtered)
    record = {**filter_meta, "quality_source": ",".join(sorted(sources_used)), **total,
              "elapsed_seconds": round(time.time() - started, 3)}
    out.write_manifest(records, final=True, filter=record)
    out.write_json(layout.FILTER, record)
    card.write_card(dest_uri, storage_options)
    return record


def format_record(r: dict) -> str:
    lines = [f"rows:    {r['rows_in']} -> {r['rows_out']} ({r['rows_emptied']} emptied, "
             f"{r['error_rows_dropped']} error rows dropped)",
             f"people:  {r['people_in']} -> {r['people_out']}"]
    if r.get("quality_source") == "computed":
        lines.append("quality: computed from the stored columns (this output has no people[].quality; "
                     "no TTA spread term)")
    return "\n".join(lines)
