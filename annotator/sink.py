"""Output dataset: one Parquet part per input shard, written to an attempt path, then committed.

A part is visible only once its commit record exists (written last, holding row count and
sha256), so a crash at any point leaves either a committed part or nothing a reader will use.
``_manifest.json`` lists committed parts; readers use it, never a glob.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_SIZE = 1024


@dataclass(frozen=True)
class CommitRecord:
    shard: str
    part: str
    rows: int
    rows_ok: int
    rows_error: int
    people: int
    bytes: int
    sha256: str
    attempt: str
    fingerprint: str
    committed_at: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def part_name(shard_id: str) -> str:
    return f"part-{shard_id}.parquet"


class DatasetSink:
    """Writes and commits parts under ``output_uri`` (any fsspec filesystem)."""

    def __init__(self, output_uri: str, file_metadata: dict[bytes, bytes], fingerprint: str = "",
                 row_group_size: int = ROW_GROUP_SIZE):
        self.fs, self.root = fsspec.core.url_to_fs(output_uri)
        self.root = self.root.rstrip("/")
        self.uri = output_uri
        self.file_metadata = file_metadata
        self.fingerprint = fingerprint
        self.row_group_size = row_group_size
        self.attempt = uuid.uuid4().hex[:12]
        for sub in ("parts", "_commits"):
            self.fs.makedirs(f"{self.root}/{sub}", exist_ok=True)

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def committed(self) -> dict[str, dict]:
        """Commit records by shard id."""
        out = {}
        for path in self.fs.glob(self._path("_commits", "part-*.json")):
            rec = json.loads(self.fs.cat_file(path))
            out[rec["shard"]] = rec
        return out

    def is_committed(self, shard_id: str) -> bool:
        return self.fs.exists(self._path("_commits", part_name(shard_id)[:-len(".parquet")] + ".json"))

    def write_shard(self, shard_id: str, table: pa.Table) -> CommitRecord:
        """Write one shard's rows (sorted by image id) and commit it."""
        table = table.sort_by("image_id").replace_schema_metadata(self.file_metadata)
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, row_group_size=self.row_group_size, compression="zstd")
        data = buf.getvalue().to_pybytes()
        name = part_name(shard_id)
        attempt_path = self._path("parts", f".attempt-{self.attempt}-{name}")
        final_path = self._path("parts", name)
        self.fs.pipe_file(attempt_path, data)
        self.fs.mv(attempt_path, final_path)
        status = table.column("status").to_pylist()
        rec = CommitRecord(
            shard=shard_id, part=f"parts/{name}", rows=table.num_rows,
            rows_ok=sum(s == "ok" for s in status), rows_error=sum(s != "ok" for s in status),
            people=int(pa.compute.sum(table.column("num_people")).as_py() or 0), bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(), attempt=self.attempt,
            fingerprint=self.fingerprint, committed_at=time.time())
        self.fs.pipe_file(self._path("_commits", name[:-len(".parquet")] + ".json"), rec.to_json().encode())
        return rec

    def write_json(self, name: str, obj) -> None:
        self.fs.pipe_file(self._path(name), json.dumps(obj, indent=2, sort_keys=True).encode())

    def write_manifest(self) -> dict:
        records = self.committed()
        manifest = {
            "parts": [records[s]["part"] for s in sorted(records)],
            "rows": sum(r["rows"] for r in records.values()),
            "shards_committed": len(records),
            "updated_at": time.time(),
        }
        self.write_json("_manifest.json", manifest)
        return manifest


def read_dataset(output_uri: str) -> pa.Table:
    """Read every committed part listed in ``_manifest.json`` into one table."""
    fs, root = fsspec.core.url_to_fs(output_uri)
    root = root.rstrip("/")
    manifest = json.loads(fs.cat_file(f"{root}/_manifest.json"))
    tables = [pq.read_table(pa.BufferReader(fs.cat_file(f"{root}/{p}"))) for p in manifest["parts"]]
    if not tables:
        from annotator import schema
        return schema.arrow_schema().empty_table()
    return pa.concat_tables(tables)
