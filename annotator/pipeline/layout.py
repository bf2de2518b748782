"""One job output on disk: the names under OUTPUT, and the one reader of them.

    _plan/                        the frozen plan (``annotator.pipeline.plan``; ``plan.json`` written last;
                                  ``--append`` segments: ``shards-NNNNN.parquet``, then ``segment-NNNNN.json``)
    _lock                         owner + heartbeat of the job writing now (``annotator.pipeline.lock``)
    _fingerprint.json             model sha256, settings, schema version, plan hash
    _attempts/<attempt>/parts/... a part as written, before its commit (``annotator.pipeline.sink``)
    _stats/part-NNNNNN.json       per-shard counters
    _commits/part-NNNNNN.json     rows, sha256, fingerprint: it commits the part
    parts/part-NNNNNN.parquet     one per shard, committed: it appears here only after its record
    _manifest.json                dataset totals; when final, also every committed part and its record
    _progress.json, _summary.json the running job's counters; the finished run's summary
    README.md                     the Hugging Face dataset card (``annotator.outputs.card``)
    _runs/<attempt>/round-N.json  Beam: a round's outcomes (removed when the job ends)
    _filter.json                  outputs of ``annotator filter``: what was kept
    _versions.json                versions with lineage (``annotator.pipeline.versions``), once a second exists
    _versions/vN/                 version N >= 2: a whole output of its own (the names above); v1 is OUTPUT itself

``parts/`` holds committed parts only, so a glob of it (pandas, DuckDB, ``datasets``, Ray Data)
reads the dataset. ``_manifest.json`` stays the authority: a ``final`` one (written when a job
ends) lists exactly the parts with their checksums; while a job runs, or after it was killed, the
reader rebuilds the list from ``_commits/`` (a record whose part is not published does not count).
Readers verify each part against the sha256 of its commit record.

Versions: ``OUTPUT@vN`` names version N of an output (``Output`` takes it); a reader opens
``Output.open(uri)``: the version named, else the latest (``_versions.json``), else the folder itself.
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from annotator.labels import schema
from annotator.pipeline import sources

PLAN = "_plan"
PLAN_META = "plan.json"  # inside PLAN
LOCK = "_lock"
FINGERPRINT = "_fingerprint.json"
PARTS = "parts"
STATS = "_stats"
COMMITS = "_commits"
MANIFEST = "_manifest.json"
PROGRESS = "_progress.json"
SUMMARY = "_summary.json"
RUNS = "_runs"
FILTER = "_filter.json"
ATTEMPTS = "_attempts"
CARD = "README.md"
VERSIONS = "_versions"  # _versions/vN/: version N >= 2
VERSIONS_FILE = "_versions.json"
JOB_FOLDERS = (PARTS, COMMITS, STATS, PLAN, ATTEMPTS, VERSIONS)  # what ``--overwrite`` removes (not the lock)
JOB_FILES = (MANIFEST, SUMMARY, PROGRESS, FINGERPRINT, CARD, VERSIONS_FILE)
_VERSION_SUFFIX = re.compile(r"^(.+)@v(\d+)$")


def split_version(uri: str) -> tuple[str, int | None]:
    """``OUT@v2`` -> (``OUT``, 2); ``OUT`` -> (``OUT``, None)."""
    m = _VERSION_SUFFIX.match(str(uri).rstrip("/"))
    return (m.group(1), int(m.group(2))) if m else (str(uri), None)


def version_folder(number: int) -> str:
    """Where version ``number`` lives, relative to the output ("" for v1: the output itself)."""
    return "" if number == 1 else f"{VERSIONS}/v{number}"


def version_uri(base: str, number: int) -> str:
    return sources.join(base, version_folder(number)) if number > 1 else base


def part_name(shard_id: str) -> str:
    return f"part-{shard_id}.parquet"


def record_name(shard_id: str) -> str:
    return f"part-{shard_id}.json"


def attempt_path(attempt: str, part: str) -> str:
    """Where attempt ``attempt`` writes the file it will publish as ``part`` (relative to the root)."""
    return f"{ATTEMPTS}/{attempt}/{part}"


def shard_of(name: str) -> str:
    """The shard id in a part or record name (``parts/part-000001.parquet`` -> ``000001``)."""
    return name.rsplit("/", 1)[-1][len("part-"):].rsplit(".", 1)[0]


class ChecksumError(IOError):
    pass


class Output:
    """An output folder on any fsspec filesystem (``storage_options`` per protocol): its paths, its
    small JSON files and its committed parts."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.base_uri, self.version = split_version(str(uri))  # the output (every version); None: the folder
        self.uri = version_uri(self.base_uri, self.version) if self.version else self.base_uri
        self.storage_options = storage_options
        self.fs, root = sources.filesystem(self.uri, storage_options)
        self.root = root.rstrip("/")

    @property
    def ref(self) -> str:
        """How to name this view again (``OUT@vN`` for a version, else the folder): ``Output.open``
        of it gives the same folder, whatever becomes the latest later."""
        return f"{self.base_uri}@v{self.version}" if self.version else self.base_uri

    @classmethod
    def open(cls, uri: str, storage_options: dict | None = None) -> Output:
        """A reader's view of ``uri``: ``OUT@vN`` that version, ``OUT`` its latest (the newest version
        whose job committed every planned shard; the folder itself while it has one version)."""
        base, number = split_version(str(uri))
        out = cls(base, storage_options)
        doc = out.read_json(VERSIONS_FILE)
        if doc is None:
            if number not in (None, 1):
                raise FileNotFoundError(f"{base} has one version (v1), no v{number}")
            return out
        live = [v["version"] for v in doc.get("versions", []) if not v.get("removed_at")]
        number = number or doc.get("latest")
        if number not in live:
            what = f"no version v{number}" if number else "no complete version"
            raise FileNotFoundError(f"{base} has {what} (versions: {', '.join(f'v{n}' for n in live) or 'none left'}; "
                                    "`annotator versions`)")
        return cls(f"{base}@v{number}", storage_options)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def read_json(self, name: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self.path(name)))
        except FileNotFoundError:
            return None

    def manifest(self) -> dict:
        manifest = self.read_json(MANIFEST)
        if manifest is None:
            raise FileNotFoundError(f"{self.uri} has no {MANIFEST} (not an annotator output, or nothing committed)")
        return manifest

    def records(self) -> list[dict]:
        """Commit records of the committed parts, in shard order: a final manifest's, else (a job is
        running or was killed) rebuilt from ``_commits/`` (the first manifests listed paths only)."""
        manifest = self.manifest()
        if manifest.get("final") is False:
            return [r for _, r in sorted(self.commit_records().items())]
        return manifest.get("records") or [{"part": p, "shard": shard_of(p)} for p in manifest["parts"]]

    def listing(self, folder: str, recursive: bool = False) -> dict[str, dict]:
        """Files under ``folder`` (relative to the root) by their path relative to the root, with size."""
        base = self.path(folder) if folder else self.root
        try:
            self.fs.invalidate_cache(base)
            found = self.fs.find(base, detail=True) if recursive else {
                i["name"]: i for i in self.fs.ls(base, detail=True) if i.get("type") != "directory"}
        except FileNotFoundError:
            return {}
        root = self.fs._strip_protocol(self.root).rstrip("/") + "/"
        return {self.fs._strip_protocol(name)[len(root):]: info for name, info in found.items()}

    def commit_records(self, known: dict[str, dict] | None = None, threads: int = 32) -> dict[str, dict]:
        """Commit records by shard id whose part is published with the size its record says. Records
        in ``known`` (a final manifest's) are trusted when their record file is still there; the
        others are read, concurrently."""
        listed = {shard_of(name): name for name in self.listing(COMMITS)
                  if name.rsplit("/", 1)[-1].startswith("part-") and name.endswith(".json")}
        records = {s: r for s, r in (known or {}).items() if s in listed}
        paths = [self.path(listed[s]) for s in listed if s not in records]
        if len(paths) == 1:
            got = [self.fs.cat_file(paths[0])]
        elif paths:
            with ThreadPoolExecutor(threads) as ex:
                got = list(ex.map(self.fs.cat_file, paths))
        else:
            got = []
        for data in got:
            rec = json.loads(data)
            records[rec["shard"]] = rec
        sizes = self.published_sizes(records.values())
        return {s: r for s, r in records.items() if sizes.get(r["part"]) == r["bytes"]}

    def published_sizes(self, records) -> dict[str, int]:
        """Sizes of the published files that ``records`` name, by relative path (one listing per folder)."""
        folders = {r["part"].rsplit("/", 1)[0] if "/" in r["part"] else "" for r in records}
        return {name: info.get("size") for folder in folders for name, info in self.listing(folder).items()}

    def part_uris(self) -> list[str]:
        """URIs of the committed parts, for other readers (DuckDB, polars, Spark)."""
        return [sources.join(self.uri, r["part"]) for r in self.records()]

    def open_part(self, record: dict, verify: bool = True) -> pq.ParquetFile:
        data = self.fs.cat_file(self.path(record["part"]))
        if verify and record.get("sha256") and hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise ChecksumError(f"{record['part']}: checksum does not match its commit record")
        return pq.ParquetFile(pa.BufferReader(data))

    def read_part(self, record: dict, columns: list[str] | None = None, verify: bool = True) -> pa.Table:
        """One part; ``columns`` may name nested paths such as ``people.list.element.score``."""
        return self.open_part(record, verify).read(columns=columns)

    def read_table(self, columns: list[str] | None = None) -> pa.Table:
        """Every committed part, checksums verified, as one table (stream the parts for big outputs)."""
        tables = [self.read_part(r, columns) for r in self.records()]
        if not tables:
            return schema.arrow_schema().empty_table()
        return pa.concat_tables(tables, promote_options="default")

    def part_metadata(self, record: dict) -> dict:
        """annotator's key-value metadata of one part (``model``, ``skeleton``, ``settings``, ...),
        from its footer alone."""
        with self.fs.open(self.path(record["part"]), "rb") as f:
            meta = schema.read_metadata(pq.read_schema(f))
        if isinstance(meta.get("filter"), str):  # written by ``annotator filter``
            meta["filter"] = json.loads(meta["filter"])
        return meta

    def metadata(self) -> dict:
        """Metadata of the first committed part (all parts of one job share it); {} without parts."""
        records = self.records()
        return self.part_metadata(records[0]) if records else {}
