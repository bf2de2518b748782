"""Output dataset: one Parquet part per input shard, written once, committed last.

Commit protocol (exactly-once per shard):

1. the part is written under its deterministic name ``parts/part-<shard>.parquet``: on filesystems
   with an atomic rename (local disk, memory) to an attempt name first, then renamed; on object
   stores (GCS, S3) directly, since a PUT becomes visible whole or not at all;
2. its per-shard stats go to ``_stats/part-<shard>.json``;
3. the commit record ``_commits/part-<shard>.json`` (rows, checksum, fingerprint) is written last.

A part without a commit record does not exist for readers or for resume: a crash at any point
leaves either a committed part or a shard that the next run writes again under the same name (so
nothing is duplicated). A commit record whose part has another size is ignored too (a repair that
died between its two writes), and the shard is recomputed. ``_manifest.json`` lists the committed
parts (``parts``: paths; ``records``: their commit records); readers (``annotator.layout.Output``,
which also names every file here) and ``annotator status`` use it, never a glob of ``parts/``
(Daft #3576, ray #55043).

Never imports Ray or Beam.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from annotator import errors, layout
from annotator.layout import COMMITS, MANIFEST, PARTS, STATS, record_name

ROW_GROUP_SIZE = 1024
RENAME_PROTOCOLS = ("file", "local", "memory")
RECORD_FIELDS = ("shard", "part", "rows", "rows_ok", "rows_error", "people", "errors_by_reason", "bytes",
                 "sha256", "fingerprint", "attempt", "committed_at", "repairs")


def table_counts(table: pa.Table) -> dict:
    """Row counts of a label table, as commit records, stats and the manifest carry them."""
    ok = int(pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0)
    reasons = Counter(errors.reason(e) for e in table.column("error").drop_null().to_pylist())
    return {"rows": table.num_rows, "rows_ok": ok, "rows_error": table.num_rows - ok,
            "people": int(pc.sum(table.column("num_people")).as_py() or 0),
            "errors_by_reason": dict(sorted(reasons.items()))}


class DatasetSink(layout.Output):
    """Writes and commits parts under ``output_uri`` (any fsspec filesystem)."""

    def __init__(self, output_uri: str, file_metadata: dict[bytes, bytes] | None = None, fingerprint: str = "",
                 storage_options: dict | None = None, row_group_size: int = ROW_GROUP_SIZE,
                 attempt: str | None = None):
        super().__init__(output_uri, storage_options)
        self.file_metadata = file_metadata or {}
        self.fingerprint = fingerprint
        self.row_group_size = row_group_size
        self.attempt = attempt or uuid.uuid4().hex[:12]
        proto = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.rename = proto in RENAME_PROTOCOLS

    def makedirs(self) -> None:
        for sub in (PARTS, COMMITS, STATS):
            self.fs.makedirs(self.path(sub), exist_ok=True)

    # -- reading state --------------------------------------------------------------------------

    def _listing(self, sub: str) -> dict[str, dict]:
        try:
            return {p["name"].rsplit("/", 1)[-1]: p for p in self.fs.ls(self.path(sub), detail=True)}
        except FileNotFoundError:
            return {}

    def committed(self, threads: int = 32) -> dict[str, dict]:
        """Commit records by shard id, each checked against its part's size.

        A final manifest (written at the end of a run) is trusted for the records it lists; records
        it does not list (or all of them, after a crash) are read, concurrently.
        """
        listed = {layout.shard_of(name): name for name in self._listing(COMMITS)
                  if name.startswith("part-") and name.endswith(".json")}
        if not listed:
            return {}
        manifest = self.read_json(MANIFEST) or {}
        records: dict[str, dict] = {}
        if manifest.get("final"):
            records = {e["shard"]: e for e in manifest.get("records", []) if e["shard"] in listed}
        todo = [s for s in listed if s not in records]
        paths = [self.path(COMMITS, listed[s]) for s in todo]
        if paths:
            if len(paths) == 1:
                got = {paths[0]: self.fs.cat_file(paths[0])}
            else:
                with ThreadPoolExecutor(threads) as ex:
                    got = dict(zip(paths, ex.map(self.fs.cat_file, paths), strict=True))
            for data in got.values():
                rec = json.loads(data)
                records[rec["shard"]] = rec
        sizes = {name: info.get("size") for name, info in self._listing(PARTS).items()}
        return {s: r for s, r in records.items() if sizes.get(r["part"].rsplit("/", 1)[-1]) == r["bytes"]}

    # -- writing ---------------------------------------------------------------------------------

    def _put(self, final: str, data: bytes) -> None:
        if self.rename:
            attempt_path = f"{final.rsplit('/', 1)[0]}/.attempt-{self.attempt}-{final.rsplit('/', 1)[1]}"
            self.fs.pipe_file(attempt_path, data)
            self.fs.mv(attempt_path, final)
        else:
            self.fs.pipe_file(final, data)

    def write_shard(self, shard_id: str, table: pa.Table, stats: dict | None = None,
                    repairs: int = 0) -> dict:
        """Write one shard's rows (sorted by image id) and commit it; returns the commit record."""
        table = table.sort_by("image_id").replace_schema_metadata(self.file_metadata)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, row_group_size=self.row_group_size, compression="zstd")
        data = buf.getvalue().to_pybytes()
        name = layout.part_name(shard_id)
        self._put(self.path(PARTS, name), data)
        record = {"shard": shard_id, "part": f"{PARTS}/{name}", **table_counts(table), "bytes": len(data),
                  "sha256": hashlib.sha256(data).hexdigest(), "fingerprint": self.fingerprint,
                  "attempt": self.attempt, "committed_at": time.time(), "repairs": repairs}
        if stats is not None:
            self.fs.pipe_file(self.path(STATS, record_name(shard_id)),
                              json.dumps({**stats, **record}, sort_keys=True).encode())
        self.fs.pipe_file(self.path(COMMITS, record_name(shard_id)), json.dumps(record, sort_keys=True).encode())
        return record

    def write_json(self, name: str, obj) -> None:
        self.fs.pipe_file(self.path(name), json.dumps(obj, indent=2, sort_keys=True).encode())

    def write_manifest(self, records: dict[str, dict], final: bool, **extra) -> dict:
        """``_manifest.json``: ``parts`` (committed part paths, relative to the output, in shard order),
        ``records`` (their commit records: counts, checksums) and dataset totals."""
        parts = [{k: records[s].get(k) for k in RECORD_FIELDS} for s in sorted(records)]
        errors: Counter = Counter()
        for p in parts:
            errors.update(p.get("errors_by_reason") or {})
        manifest = {
            "final": final, "updated_at": time.time(), "fingerprint": self.fingerprint,
            "shards_committed": len(parts), "rows": sum(p["rows"] for p in parts),
            "rows_ok": sum(p["rows_ok"] for p in parts), "rows_error": sum(p["rows_error"] for p in parts),
            "people": sum(p["people"] for p in parts), "errors_by_reason": dict(sorted(errors.items())),
            **extra, "parts": [p["part"] for p in parts], "records": parts,
        }
        self.write_json(MANIFEST, manifest)
        return manifest

    def reset(self) -> None:
        """``--overwrite``: remove everything a previous job wrote here (not the lock)."""
        for name in layout.JOB_FOLDERS:
            if self.fs.exists(self.path(name)):
                self.fs.rm(self.path(name), recursive=True)
        for name in layout.JOB_FILES:
            if self.fs.exists(self.path(name)):
                self.fs.rm_file(self.path(name))
