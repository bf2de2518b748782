"""Output dataset: one Parquet part per input shard, written once, committed, then published.

Commit protocol (exactly-once per shard), for any file a job or an export writes under a root:

1. the file is written under ``_attempts/<attempt>/<its final path>`` (nothing reads there);
2. its per-shard stats go to ``_stats/part-<shard>.json``;
3. the commit record ``_commits/part-<shard>.json`` (rows, bytes, checksum, fingerprint, attempt)
   is written: this commits the shard;
4. the file is published: renamed (local disk, memory) or copied server-side (GCS, S3: the object
   becomes visible whole, when the copy completes) to its final path, e.g. ``parts/part-<shard>.parquet``.

So ``parts/`` never holds a part without its commit record, and a glob of it reads the dataset
(Daft #3576, ray #55043 are what a glob of half-written parts does). A crash before 3 leaves an
attempt that the next run ignores and writes again under the same final name (nothing is
duplicated); a crash between 3 and 4 leaves a record whose attempt file the next run publishes
(``committed`` rolls it forward). A commit record whose published file has another size and no
attempt file to publish is ignored (the shard is recomputed). ``_manifest.json`` lists the
committed parts (``parts``: paths; ``records``: their commit records); readers
(``annotator.pipeline.layout.Output``, which also names every file here) use it, and the final manifest
removes the attempts left by killed runs.

Never imports Ray or Beam.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from annotator.pipeline import errors, layout, rig
from annotator.pipeline.layout import COMMITS, MANIFEST, PARTS, STATS, record_name

ROW_GROUP_SIZE = 1024
RENAME_PROTOCOLS = ("file", "local", "memory")  # an atomic rename publishes; elsewhere a server-side copy
RECORD_FIELDS = ("shard", "part", "rows", "rows_ok", "rows_error", "people", "errors_by_reason",
                 "quality_histogram", "bytes", "sha256", "fingerprint", "attempt", "committed_at", "repairs")
QUALITY_BINS = 10  # people[].quality histogram over [0, 1] in each commit record (for the dataset card)


def quality_histogram(table: pa.Table) -> list[int] | None:
    """People per quality decile ([0, 0.1), ..., [0.9, 1]); None where people have no ``quality``."""
    people = table.column("people").type.value_type
    if people.get_field_index("quality") < 0:
        return None
    q = pc.list_flatten(table.column("people")).combine_chunks() if table.num_rows else None
    values = np.asarray(q.field("quality").drop_null(), np.float64) if q is not None and len(q) else np.zeros(0)
    bins = np.clip((values * QUALITY_BINS).astype(np.int64), 0, QUALITY_BINS - 1)
    return np.bincount(bins, minlength=QUALITY_BINS).astype(int).tolist()


def table_counts(table: pa.Table) -> dict:
    """Row counts of a label table, as commit records, stats and the manifest carry them."""
    ok = int(pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0)
    reasons = Counter(errors.reason(e) for e in table.column("error").drop_null().to_pylist())
    world = rig.is_world(table)
    n_world = int(pc.sum(world).as_py() or 0)
    images = table.filter(pc.invert(world)) if n_world else table
    out = {"rows": table.num_rows, "rows_ok": ok, "rows_error": table.num_rows - ok,
           "people": int(pc.sum(images.column("num_people")).as_py() or 0),
           "errors_by_reason": dict(sorted(reasons.items())), "quality_histogram": quality_histogram(images)}
    if n_world:  # a rig's fused rows (one per frame, no image): rows, not images
        out["world_rows"] = n_world
        out["world_people"] = int(pc.sum(table.filter(world).column("num_people")).as_py() or 0)
    return out


class _HashingWriter:
    """A write-only file wrapper that counts and hashes what passes through (streamed writes)."""

    def __init__(self, f):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.bytes

    def flush(self) -> None:
        self.f.flush()


class CommitSink(layout.Output):
    """Writes files under ``uri`` with the commit protocol above (any fsspec filesystem)."""

    def __init__(self, uri: str, storage_options: dict | None = None, attempt: str | None = None):
        super().__init__(uri, storage_options)
        self.attempt = attempt or uuid.uuid4().hex[:12]
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]

    # -- reading state --------------------------------------------------------------------------

    def committed(self, threads: int = 32) -> dict[str, dict]:
        """Commit records by shard id, each checked against its published file's size; a record whose
        attempt file is still there is published first (a run died between commit and publish).

        A final manifest (written at the end of a run) is trusted for the records it lists; records
        it does not list (or all of them, after a crash) are read, concurrently.
        """
        manifest = self.read_json(layout.MANIFEST) or {}
        known = {e["shard"]: e for e in manifest.get("records", [])} if manifest.get("final") else {}
        attempts = self.listing(layout.ATTEMPTS, recursive=True)
        if attempts:  # roll forward: only after a run that died (a final manifest removes _attempts/)
            listed = {layout.shard_of(n): n for n in self.listing(layout.COMMITS) if n.endswith(".json")}
            for shard in listed:
                rec = known.get(shard) or json.loads(self.fs.cat_file(self.path(listed[shard])))
                src = layout.attempt_path(rec["attempt"], rec["part"])
                if (attempts.get(src) or {}).get("size") == rec["bytes"]:
                    self.publish(src, rec["part"])
        return self.commit_records(known, threads)

    # -- writing ---------------------------------------------------------------------------------

    def publish(self, src: str, part: str) -> None:
        """Move an attempt file to its final path (relative paths): a rename where the filesystem has
        one, else a server-side copy then delete (the final object appears whole)."""
        self.fs.makedirs(self.path(part).rsplit("/", 1)[0], exist_ok=True)
        if self.protocol in RENAME_PROTOCOLS:
            self.fs.mv(self.path(src), self.path(part))
        else:  # GCS rewrite / S3 CopyObject: the destination appears when the copy is complete
            self.fs.copy(self.path(src), self.path(part))
            self.fs.rm_file(self.path(src))

    def put(self, part: str, content: bytes | Callable) -> tuple[str, int, str]:
        """Step 1: write ``content`` (bytes, or a function that writes to a file object: streamed and
        hashed on the way) as this attempt's copy of ``part``; returns (attempt path, bytes, sha256)."""
        src = layout.attempt_path(self.attempt, part)
        self.fs.makedirs(self.path(src).rsplit("/", 1)[0], exist_ok=True)
        if isinstance(content, bytes | bytearray):
            self.fs.pipe_file(self.path(src), bytes(content))
            return src, len(content), hashlib.sha256(content).hexdigest()
        with self.fs.open(self.path(src), "wb") as f:
            w = _HashingWriter(f)
            content(w)
        return src, w.bytes, w.sha.hexdigest()

    def write_file(self, shard_id: str, part: str, content: bytes | Callable, record: dict,
                   stats: dict | None = None) -> dict:
        """Write, commit and publish one shard's file ``part`` (path relative to the root). Returns the
        commit record: ``record`` (read after ``content`` ran, so a content function may fill it in)
        + shard, part, bytes, sha256, attempt, committed_at."""
        src, size, sha = self.put(part, content)
        record = {"shard": shard_id, "part": part, **record, "bytes": size, "sha256": sha,
                  "attempt": self.attempt, "committed_at": time.time()}
        if stats is not None:
            self.put_small(f"{layout.STATS}/{record_name(shard_id)}",
                           json.dumps({**stats, **record}, sort_keys=True).encode())
        self.commit(record)
        self.publish(src, part)
        return record

    def commit(self, record: dict) -> None:
        """Step 3: the commit record (a separate step so a test can stop a run right before it)."""
        self.put_small(f"{COMMITS}/{record_name(record['shard'])}", json.dumps(record, sort_keys=True).encode())

    def put_small(self, name: str, data: bytes) -> None:
        """A small file (record, stats, manifest; ``name`` relative to the root) that appears whole:
        written beside its name (hidden: no listing takes it) and renamed, where the filesystem can
        (a process killed inside a local write leaves a truncated file, and a truncated commit
        record or manifest stopped every later run); an object store's PUT is whole anyway."""
        if self.protocol not in RENAME_PROTOCOLS:
            self.fs.pipe_file(self.path(name), data)
            return
        folder, _, base = name.rpartition("/")
        tmp = self.path(*([folder] if folder else []), f".{base}.{self.attempt}.tmp")
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, self.path(name))

    def remove_attempts(self) -> None:
        """Attempt files of runs that died before their commit (nothing refers to them), and their
        half-written small files (``put_small``)."""
        if self.fs.exists(self.path(layout.ATTEMPTS)):
            self.fs.rm(self.path(layout.ATTEMPTS), recursive=True)
        if self.protocol in RENAME_PROTOCOLS:
            for folder in ("", COMMITS, STATS):
                for name in self.listing(folder):
                    if name.rsplit("/", 1)[-1].startswith(".") and name.endswith(".tmp"):
                        self.fs.rm_file(self.path(name))

    def write_json(self, name: str, obj) -> None:
        self.put_small(name, json.dumps(obj, indent=2, sort_keys=True).encode())

    def reset(self, folders=layout.JOB_FOLDERS, files=layout.JOB_FILES) -> None:
        """``--overwrite``: remove everything a previous job wrote here (not the lock)."""
        for name in folders:
            if self.fs.exists(self.path(name)):
                self.fs.rm(self.path(name), recursive=True)
        for name in files:
            if self.fs.exists(self.path(name)):
                self.fs.rm_file(self.path(name))


class DatasetSink(CommitSink):
    """Writes and commits label parts under ``output_uri`` (any fsspec filesystem)."""

    def __init__(self, output_uri: str, file_metadata: dict[bytes, bytes] | None = None, fingerprint: str = "",
                 storage_options: dict | None = None, row_group_size: int = ROW_GROUP_SIZE,
                 attempt: str | None = None):
        super().__init__(output_uri, storage_options, attempt)
        self.file_metadata = file_metadata or {}
        self.fingerprint = fingerprint
        self.row_group_size = row_group_size

    def makedirs(self) -> None:
        for sub in (PARTS, COMMITS, STATS):
            self.fs.makedirs(self.path(sub), exist_ok=True)

    def write_shard(self, shard_id: str, table: pa.Table, stats: dict | None = None,
                    repairs: int = 0) -> dict:
        """Write one shard's rows (sorted by image id), commit and publish it; returns the commit record."""
        table = table.sort_by("image_id").replace_schema_metadata(self.file_metadata)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, row_group_size=self.row_group_size, compression="zstd")
        record = {**table_counts(table), "fingerprint": self.fingerprint, "repairs": repairs}
        return self.write_file(shard_id, f"{PARTS}/{layout.part_name(shard_id)}", buf.getvalue().to_pybytes(),
                               record, stats)

    def write_manifest(self, records: dict[str, dict], final: bool, totals: dict | None = None, **extra) -> dict:
        """``_manifest.json``: ``parts`` (committed part paths, relative to the output, in shard order),
        ``records`` (their commit records: counts, checksums) and dataset totals.

        A running job's manifest (``final`` false, ``totals`` given: ``manifest_totals`` kept up to
        date by the job) carries the totals only: readers rebuild the list from ``_commits/`` until
        the manifest is final anyway, and rewriting every record each ``manifest_interval_s`` cost
        O(shards) per rewrite, O(shards^2) over a job (~100 MB per rewrite at 10^8 images)."""
        if final or totals is None:
            parts = [{k: records[s].get(k) for k in RECORD_FIELDS} for s in sorted(records)]
            listed = {"parts": [p["part"] for p in parts], "records": parts}
            totals = manifest_totals(parts)
        else:
            listed = {}
        manifest = {"final": final, "updated_at": time.time(), "fingerprint": self.fingerprint,
                    **{k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in totals.items()},
                    **extra, **listed}
        self.write_json(MANIFEST, manifest)
        if final:
            self.remove_attempts()
        return manifest


TOTAL_FIELDS = ("rows", "rows_ok", "rows_error", "people")


def manifest_totals(records, totals: dict | None = None, sign: int = 1) -> dict:
    """The manifest's dataset totals over commit ``records``, or ``totals`` updated in place by them
    (``sign`` -1: take a replaced record out)."""
    totals = totals if totals is not None else {"shards_committed": 0, **dict.fromkeys(TOTAL_FIELDS, 0),
                                                "errors_by_reason": {}}
    errors = totals["errors_by_reason"]
    for r in records:
        totals["shards_committed"] += sign
        for k in TOTAL_FIELDS:
            totals[k] += sign * r[k]
        for k, v in (r.get("errors_by_reason") or {}).items():
            errors[k] = errors.get(k, 0) + sign * v
            if not errors[k]:
                del errors[k]
    return totals
