"""What changed in the input since its plan was frozen, on every rerun: objects added, removed and
changed (size, etag / generation / mtime: whatever the plan and the store keep).

Why on every rerun: a frozen plan is what makes resume exact, but a dataset that grows daily made a
rerun label nothing new and still exit 0. Now new inputs stop the run (``InputsChanged``) unless it
was asked to label them (``--append``: a new plan segment, ``plan.append``) or to keep the plan as
it is (``--frozen``: nothing is listed). Removed and changed objects are reported, never relabelled
in place: their rows stay those of the bytes that were planned.

Cost: one listing (``sources.list_input``, parallel across prefixes, as planning did) and one read
of the plan's member chunks (id, uri, size, etag columns only), compared in Arrow (hash-based
dictionary codes): 10^6 objects in seconds (``bench/changes.py``). Never imports Ray or Beam.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from annotator.pipeline import plan as plan_mod
from annotator.pipeline import redact, sources

log = logging.getLogger(__name__)

OBJECT_SCHEMA = pa.schema([("key", pa.string()), ("uri", pa.string()), ("size", pa.int64()), ("etag", pa.string())])
EXAMPLES = 3  # names shown per kind of change


class InputsChanged(plan_mod.PlanError):
    """New inputs since the plan, and neither ``--append`` nor ``--frozen``: nothing would label them."""


@dataclass
class Changes:
    """Keys are image ids (folders, manifests) or tar/video names relative to the input."""

    planned: int
    listed: int
    added: list[str]
    removed: list[str]
    changed: list[str]
    seconds: float

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def text(self) -> str:
        """One line: counts, then a few names of each change."""
        if self.unchanged:
            return f"input unchanged since the plan ({self.planned} object(s))"
        parts = [f"{len(v)} {k}" for k, v in (("new", self.added), ("removed", self.removed),
                                                ("changed", self.changed)) if v]
        examples = [f"{k} {', '.join(v[:EXAMPLES])}{', ...' if len(v) > EXAMPLES else ''}"
                    for k, v in (("new:", self.added), ("removed:", self.removed), ("changed:", self.changed)) if v]
        return f"input changed since the plan ({self.planned} object(s)): {', '.join(parts)} ({'; '.join(examples)})"

    def to_dict(self) -> dict:
        return {"planned": self.planned, "listed": self.listed, "added": len(self.added),
                "removed": len(self.removed), "changed": len(self.changed), "seconds": round(self.seconds, 3),
                "examples": {k: v[:EXAMPLES] for k, v in (("added", self.added), ("removed", self.removed),
                                                         ("changed", self.changed)) if v}}


def planned_objects(plan: plan_mod.Plan, storage_options: dict | None = None, threads: int = 4) -> pa.Table:
    """The plan's input objects (``OBJECT_SCHEMA``): its members (``files`` shards, read from the
    member chunks) or its tars and videos (from the shard table)."""
    shards = plan.shards
    files = shards.filter(pc.equal(shards.column("kind"), "files"))
    tables = []
    if files.num_rows:
        fs, plan_dir = sources.filesystem(plan.uri, storage_options)
        chunks = sorted(set(files.column("chunk").to_pylist()))

        def read(chunk: int) -> pa.Table:
            data = fs.cat_file(f"{plan_dir.rstrip('/')}/members-{chunk:05d}.parquet")
            return pq.read_table(pa.BufferReader(data), columns=["shard", "image_id", "uri", "size", "etag"])
        with ThreadPoolExecutor(threads) as ex:
            members = pa.concat_tables(list(ex.map(read, chunks)))
        # a chunk holds whole shards, all of the plan's (orphans of a killed append are never referenced)
        if len(chunks) != plan.num_chunks:  # orphan member chunks are never read; a shared chunk is whole
            members = members.filter(pc.is_in(members.column("shard"), value_set=files.column("shard")))
        tables.append(pa.table([members.column("image_id"), members.column("uri"), members.column("size"),
                                members.column("etag")], schema=OBJECT_SCHEMA))
    others = shards.filter(pc.not_equal(shards.column("kind"), "files"))
    if others.num_rows:
        seen: dict[str, dict] = {}
        for r in others.select(["name", "source", "bytes", "etag"]).to_pylist():
            seen.setdefault(r["name"], {"key": r["name"], "uri": r["source"], "size": r["bytes"] or None,
                                        "etag": r["etag"]})
        tables.append(pa.Table.from_pylist(list(seen.values()), schema=OBJECT_SCHEMA))
    return pa.concat_tables(tables) if tables else OBJECT_SCHEMA.empty_table()


def listed_objects(kind: str, listing: tuple) -> pa.Table:
    """The input objects of ``listing`` (``sources.list_input``'s answer) as the plan keys them:
    images of a folder, rows of a manifest, tars, videos."""
    fs, base, entries = listing
    if kind == "manifest":
        tables = [t.select(["image_id", "uri", "size", "etag"]).rename_columns(OBJECT_SCHEMA.names)
                  for t in plan_mod.manifest_members(fs, plan_mod.manifest_paths(entries))]
        return pa.concat_tables(tables).cast(OBJECT_SCHEMA) if tables else OBJECT_SCHEMA.empty_table()
    exts = {"folder": sources.IMAGE_EXTENSIONS, "tar": sources.TAR_EXTENSIONS, "video": sources.VIDEO_EXTENSIONS}[kind]
    chosen = [e for e in entries if sources.has_ext(e.path, exts)]
    return pa.table([[sources.relative(e.path, base) for e in chosen], [sources.to_uri(fs, e.path) for e in chosen],
                     [e.size for e in chosen], [e.etag for e in chosen]], schema=OBJECT_SCHEMA)


def _codes(planned: pa.ChunkedArray, listed: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Both columns as indices into one dictionary of their values (-1: null), and the dictionary.

    Why codes and not a join: Arrow's hash join of two 10^6-row string tables peaked at ~1.2 GB
    here; one dictionary holds each distinct string once, and the rest is integer arrays."""
    if pa.types.is_integer(planned.type):
        return (pc.fill_null(planned, -1).to_numpy().astype(np.int64),
                pc.fill_null(listed, -1).to_numpy().astype(np.int64), pa.array([], planned.type))
    encoded = pc.dictionary_encode(pa.chunked_array([*planned.chunks, *listed.chunks], planned.type))
    dictionary = encoded.chunks[0].dictionary if encoded.num_chunks else pa.array([], planned.type)
    codes = np.concatenate([pc.fill_null(c.indices, -1).to_numpy().astype(np.int64) for c in encoded.chunks]) \
        if encoded.num_chunks else np.zeros(0, np.int64)
    return codes[:len(planned)], codes[len(planned):], dictionary


def compare(planned: pa.Table, listed: pa.Table, seconds: float = 0.0) -> Changes:
    """Added, removed and changed keys (each sorted) between two ``OBJECT_SCHEMA`` tables. A value
    counts as changed only where both sides know it (a store without etags, a manifest without
    sizes: no change)."""
    pk, lk, keys = _codes(pc.fill_null(planned.column("key"), ""), pc.fill_null(listed.column("key"), ""))
    in_plan = np.zeros(len(keys), bool)
    in_plan[pk] = True
    in_listing = np.zeros(len(keys), bool)
    in_listing[lk] = True
    known = in_plan[lk]  # listed rows whose key the plan has
    differs = np.zeros(len(lk), bool)
    for name in ("size", "etag", "uri"):
        p, v, _ = _codes(planned.column(name), listed.column(name))
        by_key = np.full(len(keys), -1, np.int64)
        by_key[pk] = p
        was = by_key[lk]
        differs |= (v >= 0) & (was >= 0) & (v != was)

    def names(codes: np.ndarray) -> list[str]:
        return sorted(keys.take(pa.array(codes, pa.int64())).to_pylist())
    return Changes(planned.num_rows, listed.num_rows, names(lk[~known]),
                   names(np.flatnonzero(in_plan & ~in_listing)), names(lk[known & differs]), seconds)


def detect(plan: plan_mod.Plan, opts: plan_mod.PlanOptions,
           storage_options: dict | None = None) -> tuple[Changes, tuple]:
    """List the input again and compare it with ``plan``; returns the changes and the listing (an
    append plans from it, without listing twice)."""
    started = time.perf_counter()
    listing = sources.list_input(opts.input, storage_options)
    changes = compare(planned_objects(plan, storage_options), listed_objects(plan.kind, listing))
    changes.seconds = time.perf_counter() - started
    return changes, listing


def reconcile(plan: plan_mod.Plan, opts: plan_mod.PlanOptions, storage_options: dict | None = None,
              append: bool = False) -> tuple[plan_mod.Plan, dict]:
    """A rerun against a frozen plan: detect changes, refuse new inputs unless ``append``, plan them
    as a new segment if so. Returns the plan to run and what changed (for the run summary)."""
    try:
        changes, listing = detect(plan, opts, storage_options)
    except FileNotFoundError as e:  # the input (or a tar of a brace list) is gone: nothing new to label
        why = redact.text(str(e))
        log.warning("cannot list %s (%s): resuming the frozen plan as it is", redact.uri(opts.input), why)
        return plan, {"error": why}
    report = changes.to_dict()
    if changes.unchanged:
        log.info("%s (%.1f s)", changes.text(), changes.seconds)
        return plan, report
    if changes.added and not append:  # said once, as the run's error
        raise InputsChanged(f"{changes.text()}. Rerun with --append to label the {len(changes.added)} new "
                            f"input(s) as new shards, or with --frozen to keep the output as planned")
    log.warning("%s", changes.text())
    if changes.removed or changes.changed:
        log.warning("removed and changed inputs keep the rows of what was planned; they are not relabelled "
                    "in place (--new-version labels the input as it is now into a new version)")
    if changes.added:
        before = plan.num_shards
        plan = plan_mod.append(plan, opts, listing, set(changes.added), storage_options)
        report["appended_shards"] = [plan_mod.shard_id(before), plan_mod.shard_id(plan.num_shards - 1)] \
            if plan.num_shards > before else []
        report["segment"] = len(plan.meta.get("segments") or [])
    return plan, report
