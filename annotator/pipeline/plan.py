"""The frozen plan: input -> shards (deterministic ids) -> members, listed once and written to
``OUTPUT/_plan/`` before any image is read. A rerun reuses it, so shard ids never move and resume
never depends on a second listing agreeing with the first (img2dataset #438, datatrove's warning).

On disk::

    _plan/members-00000.parquet   members of a contiguous run of shards (<= MEMBERS_PER_CHUNK rows)
    _plan/shards.parquet          one row per shard: kind, source, where its members are, size, etag
    _plan/plan.json               written last: options, counts, plan hash (the plan's commit marker)
    _plan/shards-00001.parquet    ``--append``: the shards of segment 1 (ids continue after the last)
    _plan/segment-00001.json      written last, whole: segment 1 exists (its hash, chained; totals)

Why segments and not a rewritten plan: every file of a plan is written once and never changes, so
a reader, a worker's cached member chunk or a killed append can never see half of a new plan. An
append writes its member chunks (numbered after every chunk file present, so an orphan of a killed
append is never reused) and its shard table, then its ``segment-NNNNN.json`` (renamed into place
locally; a PUT is whole on object stores): killed before that, the segment does not exist and the
next ``--append`` plans it again. ``Plan.hash`` stays the first segment's (``plan.json``): it is
part of every committed shard's fingerprint, which an append must not change; ``Plan.head`` chains
every segment's hash after it (what the plan is now).

Shard kinds: ``files`` (folder trees and manifests: members listed here), ``tar`` (one WebDataset
tar per shard, members found while streaming it), ``video`` (a frame range of one video), ``rig``
(a time window of a calibrated multi-camera rig, all its views: ``pipeline.rig``; the shard's
``camera`` holds the views' cameras and sources).

Memory stays bounded by one chunk of members plus the shard table (~100 bytes per shard), so a
10^8-image manifest is planned in a streaming pass. Never imports Ray or Beam.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from annotator.labels import camera_codec
from annotator.labels.camera_codec import Camera
from annotator.pipeline import redact, sources
from annotator.pipeline.layout import PLAN_META
from annotator.pipeline.shards import to_ipc

log = logging.getLogger(__name__)

PLAN_VERSION = 1
MEMBERS_PER_CHUNK = 65_536
KINDS = ("auto", "folder", "tar", "manifest", "video", "rig")
URI_COLUMNS = ("uri", "url", "path", "source_uri")
ID_COLUMNS = ("image_id", "id", "key")

_floats = pa.list_(pa.float32())
MEMBER_SCHEMA = pa.schema([
    ("shard", pa.string()), ("image_id", pa.string()), ("uri", pa.string()), ("size", pa.int64()),
    ("etag", pa.string()), ("sidecar", pa.string()), ("intrinsics", _floats), ("distortion", _floats),
    ("extrinsics", _floats), ("camera_source", pa.string()),
])
SHARD_SCHEMA = pa.schema([
    ("shard", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("name", pa.string()),
    ("chunk", pa.int32()),
    ("offset", pa.int64()), ("members", pa.int64()), ("bytes", pa.int64()), ("etag", pa.string()),
    ("start", pa.int64()), ("stop", pa.int64()), ("every", pa.int32()), ("camera", pa.string()),
])


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class PlanOptions:
    """What a plan is made from; a rerun against an existing plan must ask for the same."""

    input: str
    kind: str = "auto"
    shard_size: int = sources.DEFAULT_SHARD_SIZE
    every: int = 1  # videos: every k-th frame
    overlap: int = 0  # videos: frames a shard reads past its end (its temporal step's context; not its rows)
    rig: tuple = ()  # kind "rig": the checked rig's shard rows (``pipeline.rig.plan_rows``)


@dataclass
class Plan:
    uri: str  # the _plan folder
    meta: dict
    shards: pa.Table

    @property
    def num_shards(self) -> int:
        return self.shards.num_rows

    @property
    def num_members(self) -> int | None:
        return self.meta.get("num_members")

    @property
    def hash(self) -> str:
        """The first segment's hash: what the fingerprint of every committed shard names."""
        return self.meta["hash"]

    @property
    def head(self) -> str:
        """The hash of the plan as it is now: the first segment's, chained through every append."""
        segments = self.meta.get("segments") or []
        return segments[-1]["head"] if segments else self.meta["hash"]

    @property
    def num_chunks(self) -> int:
        return self.meta.get("num_chunks", 0)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def shard_ids(self) -> list[str]:
        return self.shards.column("shard").to_pylist()

    def rows(self, shard_ids: set[str] | None = None) -> list[dict]:
        """Shard rows (dicts) for the read stage, in plan order."""
        rows = self.shards.to_pylist()
        return rows if shard_ids is None else [r for r in rows if r["shard"] in shard_ids]

    def check_options(self, opts: PlanOptions) -> None:
        """Refuse a rerun that asks for a different plan than the frozen one."""
        m = self.meta
        diffs = []
        # the plan keeps the input redacted (pipeline.redact): compare like with like
        if m["input"].rstrip("/") != redact.uri(opts.input).rstrip("/"):
            diffs.append(f"input {m['input']!r} != {redact.uri(opts.input)!r}")
        if opts.kind != "auto" and opts.kind != m["kind"]:
            diffs.append(f"kind {m['kind']!r} != {opts.kind!r}")
        if m["shard_size"] != opts.shard_size:
            diffs.append(f"shard_size {m['shard_size']} != {opts.shard_size}")
        if m["kind"] == "video" and m["every"] != opts.every:
            diffs.append(f"every {m['every']} != {opts.every}")
        if m["kind"] == "video" and m.get("overlap", 0) != opts.overlap:
            diffs.append(f"overlap {m.get('overlap', 0)} != {opts.overlap}")
        if m["kind"] == "rig" and opts.rig:
            def key(rows):
                return [(int(r["start"]), int(r["stop"]), r["camera"]) for r in rows]
            if key(self.rows()) != key(opts.rig):
                diffs.append("the rig (its views, calibration, offsets or windows)")
        if diffs:
            raise PlanError("the output's frozen plan was made from other options (" + "; ".join(diffs)
                            + "); use --new-version to label into a new version with these (this one is kept), "
                            "--overwrite to start over, or write to a new output")


# ---------------------------------------------------------------------------------------------
# Writing


def shard_id(i: int) -> str:
    return f"{i:06d}"


class _Writer:
    """Writes member chunks (never splitting a shard) and collects shard rows; hashes everything."""

    def __init__(self, fs, plan_dir: str, threads: int = 8, first_shard: int = 0, first_chunk: int = 0):
        self.fs, self.dir = fs, plan_dir
        self.first = first_shard  # an append's shard ids continue after the plan's last
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.first_chunk = self.chunk = first_chunk
        self.shards: list[dict] = []
        self.hash = hashlib.sha256()
        self.pool = ThreadPoolExecutor(threads)
        self.uploads = []
        self.num_members = 0

    def add_members(self, table: pa.Table) -> None:
        """Members of whole shards, in shard order (a shard's members all in one call)."""
        if table.num_rows == 0:
            return
        table = table.cast(MEMBER_SCHEMA)
        if self.pending_rows and self.pending_rows + table.num_rows > MEMBERS_PER_CHUNK:
            self._flush()
        offset = self.pending_rows
        shard_col = table.column("shard")
        # shard boundaries inside this table (members are grouped by shard)
        values = shard_col.to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], len(values)]
        sizes = table.column("size").to_numpy(zero_copy_only=False)
        sizes = np.where(np.equal(sizes, None), 0, sizes).astype(np.int64) if sizes.dtype == object \
            else np.nan_to_num(sizes).astype(np.int64)
        for s, e in zip(starts, ends, strict=True):
            self.shards.append({"shard": str(values[s]), "kind": "files", "source": "", "name": "",
                                "chunk": self.chunk,
                                "offset": offset + int(s), "members": int(e - s), "bytes": int(sizes[s:e].sum()),
                                "etag": None, "start": 0, "stop": 0, "every": 1, "camera": None})
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.num_members += table.num_rows

    def add_shard(self, row: dict) -> None:
        self.shards.append({"chunk": -1, "offset": 0, "start": 0, "stop": 0, "every": 1, "camera": None,
                            "etag": None, **row})

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        self.hash.update(to_ipc(table))
        path = f"{self.dir}/members-{self.chunk:05d}.parquet"
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd", row_group_size=MEMBERS_PER_CHUNK)
        data = buf.getvalue().to_pybytes()
        self.uploads.append(self.pool.submit(self.fs.pipe_file, path, data))
        self.chunk += 1

    def _shards(self, name: str) -> pa.Table:
        """Wait for the member chunks, then write the shard table as ``name`` (hashed)."""
        self._flush()
        for f in self.uploads:
            f.result()
        self.pool.shutdown()
        shards = pa.Table.from_pylist(self.shards, schema=SHARD_SCHEMA)
        self.hash.update(to_ipc(shards))
        buf = pa.BufferOutputStream()
        pq.write_table(shards, buf, compression="zstd")
        self.fs.pipe_file(f"{self.dir}/{name}", buf.getvalue().to_pybytes())
        return shards

    def finish_segment(self, plan: Plan, meta: dict) -> Plan:
        """An append: its shard table, then ``segment-NNNNN.json`` (whole: the segment's commit)."""
        number = len(plan.meta.get("segments") or []) + 1
        shards = self._shards(f"shards-{number:05d}.parquet")
        seg_hash = self.hash.hexdigest()
        seg = {**meta, "segment": number, "hash": seg_hash, "num_shards": shards.num_rows,
               "first_shard": self.first, "chunks": [self.first_chunk, self.chunk],
               "head": hashlib.sha256(f"{plan.head}:{seg_hash}".encode()).hexdigest(), "created_at": time.time()}
        _put_whole(self.fs, f"{self.dir}/{SEGMENT.format(number)}", json.dumps(seg, indent=2, sort_keys=True).encode())
        return _with_segment(plan, seg, shards)

    def finish(self, meta: dict) -> Plan:
        shards = self._shards("shards.parquet")
        meta = {**meta, "version": PLAN_VERSION, "num_shards": shards.num_rows, "num_chunks": self.chunk,
                "hash": self.hash.hexdigest(), "created_at": time.time()}
        self.fs.pipe_file(f"{self.dir}/{PLAN_META}", json.dumps(meta, indent=2, sort_keys=True).encode())
        return Plan(sources.to_uri(self.fs, self.dir), meta, shards)


def detect_kind(uri: str, entries: list[sources.Entry]) -> str:
    """Folder of images > tars > videos > manifests, by what the listing holds."""
    paths = [e.path for e in entries]
    for kind, exts in (("folder", sources.IMAGE_EXTENSIONS), ("tar", sources.TAR_EXTENSIONS),
                       ("video", sources.VIDEO_EXTENSIONS), ("manifest", (".parquet", ".jsonl", ".ndjson"))):
        if any(sources.has_ext(p, exts) and not p.endswith(sources.CAMERA_SUFFIX) for p in paths):
            return kind
    if len(paths) == 1 and paths[0].endswith(".json"):
        return "manifest"
    raise PlanError(f"nothing to annotate under {uri}: no images ({', '.join(sources.IMAGE_EXTENSIONS)}), "
                    f"tars, videos or manifests")


def _read_cameras(fs, paths: list[str]) -> dict[str, Camera]:
    """Calibration files, validated at plan time (a broken one stops the job before it starts)."""
    out = {}
    with ThreadPoolExecutor(16) as ex:
        for path, data in zip(paths, ex.map(fs.cat_file, paths), strict=True):
            try:
                out[path] = camera_codec.from_json(data, "calibration")
            except (ValueError, TypeError) as e:
                raise PlanError(f"calibration file {sources.to_uri(fs, path)}: {e}") from None
    return out


def _plan_folder(w: _Writer, fs, base: str, entries: list[sources.Entry], shard_size: int,
                 keep: set[str] | None = None) -> int:
    """``keep``: the image ids to plan (an append's new images), else all."""
    files = {e.path for e in entries}
    images = [e for e in entries if sources.has_ext(e.path, sources.IMAGE_EXTENSIONS)
              and (keep is None or sources.relative(e.path, base) in keep)]
    if not images:
        raise PlanError("no images found")
    cams = _read_cameras(fs, sorted(p for p in files if p.rsplit("/", 1)[-1] == sources.CAMERA_FILE))
    dir_cam = {posixpath.dirname(p): c for p, c in cams.items()}
    cols: dict[str, list] = {name: [] for name in MEMBER_SCHEMA.names}
    for i, e in enumerate(images):
        side = posixpath.splitext(e.path)[0] + ".json"
        k, d, x, src = camera_codec.to_lists(dir_cam.get(posixpath.dirname(e.path)))
        for name, value in (("shard", shard_id(w.first + i // shard_size)),
                            ("image_id", sources.relative(e.path, base)),
                            ("uri", sources.to_uri(fs, e.path)), ("size", e.size), ("etag", e.etag),
                            ("sidecar", sources.to_uri(fs, side) if side in files else None),
                            ("intrinsics", k), ("distortion", d), ("extrinsics", x), ("camera_source", src)):
            cols[name].append(value)
        if (i + 1) % shard_size == 0 or i + 1 == len(images):
            w.add_members(pa.table(cols, schema=MEMBER_SCHEMA))
            cols = {name: [] for name in MEMBER_SCHEMA.names}
    return len(images)


def _flatten_floats(col: pa.ChunkedArray) -> pa.Array:
    """list<float> or list<list<float>> (3x3 / 4x4 given as rows) -> list<float32>."""
    arr = col.combine_chunks()
    if pa.types.is_list(arr.type) and pa.types.is_list(arr.type.value_type):
        offsets = arr.offsets
        inner = arr.values
        flat = pa.ListArray.from_arrays(pc.take(inner.offsets, offsets), inner.values, mask=arr.is_null())
        arr = flat
    return arr.cast(_floats)


def _manifest_tables(fs, paths: list[str]) -> Iterator[tuple[str, pa.Table]]:
    for path in paths:
        data = pa.BufferReader(fs.cat_file(path))  # whole file: gcsfs + pq.read_table(filesystem=) aborts at exit
        if path.endswith(".parquet"):
            pf = pq.ParquetFile(data)
            for batch in pf.iter_batches(batch_size=MEMBERS_PER_CHUNK):
                yield path, pa.Table.from_batches([batch])
        else:
            table = pajson.read_json(data, read_options=pajson.ReadOptions(block_size=16 * 2**20))
            for batch in table.to_batches(MEMBERS_PER_CHUNK):
                yield path, pa.Table.from_batches([batch])


def manifest_paths(entries: list[sources.Entry]) -> list[str]:
    paths = [e.path for e in entries if sources.has_ext(e.path, sources.MANIFEST_EXTENSIONS)
             and not e.path.endswith(sources.CAMERA_SUFFIX)]
    if not paths:
        raise PlanError("no manifest files (.parquet, .jsonl) found")
    return paths


def manifest_members(fs, paths: list[str]) -> Iterator[pa.Table]:
    """The members a manifest lists, in ``MEMBER_SCHEMA`` with ``shard`` left null, a batch at a
    time: what planning assigns to shards and what change detection compares with the plan."""
    for path, t in _manifest_tables(fs, paths):
        uri_col = next((c for c in URI_COLUMNS if c in t.column_names), None)
        if uri_col is None:
            raise PlanError(f"manifest {path} has no URI column (one of {', '.join(URI_COLUMNS)})")
        uris = t.column(uri_col).cast(pa.string())
        if uris.null_count:
            raise PlanError(f"manifest {path} has {uris.null_count} rows without a URI")
        # credentials inside a URI never reach the plan (nor ids, rows, logs): such rows become error rows
        uris = pc.replace_substring_regex(uris, pattern=sources.USERINFO, replacement=r"\1***@")
        # relative entries are relative to the manifest's folder
        base = sources.to_uri(fs, posixpath.dirname(path)) + "/"
        absolute = pc.or_(pc.match_substring(uris, "://"), pc.starts_with(uris, "/"))
        uris = pc.if_else(absolute, uris, pc.binary_join_element_wise(base, uris, ""))
        id_col = next((c for c in ID_COLUMNS if c in t.column_names), None)
        ids = t.column(id_col).cast(pa.string()) if id_col else uris
        null_f = pa.nulls(t.num_rows, _floats)

        def cam(name, t=t, null_f=null_f):
            return _flatten_floats(t.column(name)) if name in t.column_names else null_f
        k = cam("intrinsics")
        src = (t.column("camera_source").cast(pa.string()) if "camera_source" in t.column_names
               else pc.if_else(pc.is_null(k), pa.scalar(None, pa.string()), pa.scalar("manifest")))

        def opt(name, typ, t=t):
            return t.column(name).cast(typ) if name in t.column_names else pa.nulls(t.num_rows, typ)
        yield pa.table({
            "shard": pa.nulls(t.num_rows, pa.string()), "image_id": ids, "uri": uris,
            "size": opt("size", pa.int64()), "etag": opt("etag", pa.string()),
            "sidecar": pa.nulls(t.num_rows, pa.string()), "intrinsics": k,
            "distortion": cam("distortion"), "extrinsics": cam("extrinsics"), "camera_source": src},
            schema=MEMBER_SCHEMA)


def _plan_manifest(w: _Writer, fs, entries: list[sources.Entry], shard_size: int,
                   keep: pa.Array | None = None) -> int:
    """``keep``: the image ids to plan (an append's new rows), else all."""
    import pandas as pd  # its string hash; imported here, not by every read/decode worker (0.3 s each)

    n = 0
    seen_ids = []
    buf: list[pa.Table] = []  # members not yet handed to the writer (the unfinished last shard)
    buf_start = 0  # global row index of buf's first row
    for members in manifest_members(fs, manifest_paths(entries)):
        if keep is not None:
            members = members.filter(pc.is_in(members.column("image_id"), value_set=keep))
        idx = pa.array(w.first + np.arange(n, n + members.num_rows) // shard_size)
        members = members.set_column(0, "shard", pc.utf8_lpad(pc.cast(idx, pa.string()), 6, "0"))
        ids = members.column("image_id")
        seen_ids.append(pd.util.hash_array(np.asarray(ids.to_numpy(), dtype=object)))
        buf.append(members)
        n += members.num_rows
        complete_upto = (n // shard_size) * shard_size  # rows before this index form whole shards
        k_rows = complete_upto - buf_start
        if k_rows > 0:
            table = pa.concat_tables(buf)
            w.add_members(table.slice(0, k_rows))
            rest = table.slice(k_rows)
            buf = [rest] if rest.num_rows else []
            buf_start = complete_upto
    if buf:
        w.add_members(pa.concat_tables(buf))
    if n == 0:
        raise PlanError("the manifest is empty")
    hashes = np.concatenate(seen_ids)
    if len(np.unique(hashes)) != len(hashes):
        raise PlanError(f"the manifest has {len(hashes) - len(np.unique(hashes))} duplicate image id(s); "
                        f"ids must be unique (add an 'id' column)")
    return n


def _sibling_cameras(fs, files: set[str], targets: list[str], exts: tuple) -> dict[str, Camera]:
    wanted = {}
    for p in targets:
        stem = p
        for ext in sorted(exts, key=len, reverse=True):
            if p.lower().endswith(ext):
                stem = p[:-len(ext)]
                break
        if stem + sources.CAMERA_SUFFIX in files:
            wanted[p] = stem + sources.CAMERA_SUFFIX
    cams = _read_cameras(fs, sorted(set(wanted.values())))
    return {p: cams[c] for p, c in wanted.items()}


def _plan_tars(w: _Writer, fs, base: str, entries: list[sources.Entry], keep: set[str] | None = None) -> None:
    tars = [e for e in entries if sources.has_ext(e.path, sources.TAR_EXTENSIONS)
            and (keep is None or sources.relative(e.path, base) in keep)]
    if not tars:
        raise PlanError("no tar shards found")
    cams = _sibling_cameras(fs, {e.path for e in entries}, [e.path for e in tars], sources.TAR_EXTENSIONS)
    for i, e in enumerate(tars):
        w.add_shard({"shard": shard_id(w.first + i), "kind": "tar", "source": sources.to_uri(fs, e.path),
                     "name": sources.relative(e.path, base), "members": -1,
                     "bytes": e.size or 0, "etag": e.etag, "camera": camera_codec.to_json(cams.get(e.path))})


def _plan_videos(w: _Writer, fs, base: str, entries: list[sources.Entry], shard_size: int, every: int,
                 storage_options: dict | None, overlap: int = 0, keep: set[str] | None = None) -> int:
    """Frame ranges of ``shard_size`` frames; all but a video's last shard read ``overlap`` more
    frames (the next shard's first): ``stop`` is where reading ends, the next shard's ``start``
    where the shard's own rows end (``annotator.pipeline.sequence``)."""
    videos = [e for e in entries if sources.has_ext(e.path, sources.VIDEO_EXTENSIONS)
              and (keep is None or sources.relative(e.path, base) in keep)]
    if not videos:
        raise PlanError("no videos found")
    cams = _sibling_cameras(fs, {e.path for e in entries}, [e.path for e in videos], sources.VIDEO_EXTENSIONS)
    uris = [sources.to_uri(fs, e.path) for e in videos]
    with ThreadPoolExecutor(16) as ex:
        infos = list(ex.map(lambda u: sources.probe_video(u, storage_options), uris))
    i, total = 0, 0
    span = shard_size * every
    for e, uri, info in zip(videos, uris, infos, strict=True):
        ranges = ([(0, -1)] if info.frames < 0 else
                  [(s, min(s + span, info.frames)) for s in range(0, info.frames, span)])
        for start, stop in ranges:
            total += max(-1 if stop < 0 else len(range(start, stop, every)), 0)
            if 0 <= stop < info.frames:
                stop = min(stop + overlap * every, info.frames)
            n = -1 if stop < 0 else len(range(start, stop, every))  # start is a multiple of every
            w.add_shard({"shard": shard_id(w.first + i), "kind": "video", "source": uri,
                         "name": sources.relative(e.path, base), "members": n,
                         "bytes": e.size or 0, "etag": e.etag, "start": start, "stop": stop, "every": every,
                         "camera": camera_codec.to_json(cams.get(e.path))})
            i += 1
    return total


def _plan_into(w: _Writer, kind: str, opts: PlanOptions, fs, base: str, entries: list[sources.Entry],
               storage_options: dict | None, keep=None) -> int | None:
    """Plan ``entries`` (only the ids in ``keep``, when given) into ``w``; the number of members,
    or None where it is known only once read (tars, videos without a frame count)."""
    num_members: int | None
    try:
        if kind == "folder":
            num_members = _plan_folder(w, fs, base, entries, opts.shard_size, keep)
        elif kind == "manifest":
            num_members = _plan_manifest(w, fs, entries, opts.shard_size,
                                         None if keep is None else pa.array(sorted(keep), pa.string()))
        elif kind == "tar":
            _plan_tars(w, fs, base, entries, keep)
            num_members = None
        elif kind == "rig":
            if not opts.rig:
                raise PlanError("a rig is planned from its checked views (annotator run --rig)")
            for i, row in enumerate(opts.rig):
                w.add_shard({**row, "shard": shard_id(w.first + i)})
            num_members = sum(int(r["members"]) for r in opts.rig)
        else:
            num_members = _plan_videos(w, fs, base, entries, opts.shard_size, opts.every, storage_options,
                                       opts.overlap, keep)
            if any(s["members"] < 0 for s in w.shards):
                num_members = None
    except PlanError as e:
        raise PlanError(f"planning {redact.uri(opts.input)}: {redact.text(str(e))}") from None
    return num_members


def create(opts: PlanOptions, plan_dir_uri: str, storage_options: dict | None = None) -> Plan:
    """List the input once and write the frozen plan under ``plan_dir_uri`` (plan.json last)."""
    if opts.shard_size < 1:
        raise PlanError("shard_size must be >= 1")
    if opts.every < 1:
        raise PlanError("every must be >= 1")
    if opts.kind not in KINDS:
        raise PlanError(f"kind must be one of {', '.join(KINDS)}")
    started = time.perf_counter()
    in_fs, base, entries = ((None, "", []) if opts.kind == "rig" else sources.list_input(opts.input, storage_options))
    listed = time.perf_counter() - started
    kind = detect_kind(opts.input, entries) if opts.kind == "auto" else opts.kind
    out_fs, plan_dir = sources.filesystem(plan_dir_uri, storage_options)
    plan_dir = plan_dir.rstrip("/")
    if out_fs.exists(plan_dir):
        out_fs.rm(plan_dir, recursive=True)  # an unfinished plan (no plan.json): start it again
    out_fs.makedirs(plan_dir, exist_ok=True)
    w = _Writer(out_fs, plan_dir)
    num_members = _plan_into(w, kind, opts, in_fs, base, entries, storage_options)
    meta = {"input": redact.uri(opts.input), "kind": kind, "shard_size": opts.shard_size, "every": opts.every,
            **({"overlap": opts.overlap} if kind == "video" else {}),
            "num_members": num_members, "listed_objects": len(entries),
            "listing_seconds": round(listed, 3), "planning_seconds": round(time.perf_counter() - started, 3)}
    return w.finish(meta)


SEGMENT = "segment-{:05d}.json"  # an append's commit marker, inside the plan folder


def _put_whole(fs, path: str, data: bytes) -> None:
    """A file that appears whole or not at all: renamed into place on the local disk (a process
    killed inside a write leaves only a hidden temporary), one PUT on an object store."""
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if proto not in ("file", "local"):
        fs.pipe_file(path, data)
        return
    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/.{name}.{time.time_ns()}.tmp"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def _with_segment(plan: Plan, seg: dict, shards: pa.Table) -> Plan:
    """``plan`` grown by one committed segment (its shards after the plan's)."""
    meta = dict(plan.meta)
    meta["segments"] = [*(meta.get("segments") or []), seg]
    meta["num_chunks"] = max(meta.get("num_chunks", 0), seg["chunks"][1])
    known = meta.get("num_members") is not None and seg.get("num_members") is not None
    meta["num_members"] = meta["num_members"] + seg["num_members"] if known else None
    meta["num_shards"] = plan.num_shards + shards.num_rows
    return Plan(plan.uri, meta, pa.concat_tables([plan.shards, shards]))


def _segment_numbers(fs, plan_dir: str) -> list[int]:
    """The committed segments' numbers, checked to run 1..n (one listing of the plan folder)."""
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(plan_dir, detail=False)]
    numbers = sorted(int(n[len("segment-"):-len(".json")]) for n in names
                     if n.startswith("segment-") and n.endswith(".json"))
    if numbers != list(range(1, len(numbers) + 1)):
        raise PlanError(f"{plan_dir}: plan segments {numbers} are not 1..{len(numbers)}; use --overwrite")
    return numbers


def load(plan_dir_uri: str, storage_options: dict | None = None) -> Plan | None:
    """The frozen plan with every committed append, or None when there is none (or only an
    unfinished one)."""
    fs, plan_dir = sources.filesystem(plan_dir_uri, storage_options)
    plan_dir = plan_dir.rstrip("/")
    try:
        meta = json.loads(fs.cat_file(f"{plan_dir}/{PLAN_META}"))
    except FileNotFoundError:
        return None
    except ValueError:  # written last: a run died writing it, before anything was committed
        log.warning("%s/%s is incomplete: planning again", plan_dir_uri, PLAN_META)
        return None
    if meta.get("version") != PLAN_VERSION:
        raise PlanError(f"plan version {meta.get('version')} is not {PLAN_VERSION}; use --overwrite")
    shards = pq.read_table(pa.BufferReader(fs.cat_file(f"{plan_dir}/shards.parquet")))
    plan = Plan(sources.to_uri(fs, plan_dir), meta, shards)
    fs.invalidate_cache(plan_dir)
    for number in _segment_numbers(fs, plan_dir):
        seg = json.loads(fs.cat_file(f"{plan_dir}/{SEGMENT.format(number)}"))
        seg_shards = pq.read_table(pa.BufferReader(fs.cat_file(f"{plan_dir}/shards-{number:05d}.parquet")))
        if seg_shards.num_rows != seg["num_shards"]:
            raise PlanError(f"{plan_dir}: segment {number} lists {seg['num_shards']} shards, its table "
                            f"{seg_shards.num_rows}; use --overwrite")
        plan = _with_segment(plan, seg, seg_shards)
    return plan


def read_meta(plan_dir_uri: str, storage_options: dict | None = None) -> dict:
    """``plan.json`` with the totals of the committed appends ({} without a plan): for readers that
    want counts, not shards (``annotator status``)."""
    fs, plan_dir = sources.filesystem(plan_dir_uri, storage_options)
    plan_dir = plan_dir.rstrip("/")
    try:
        meta = json.loads(fs.cat_file(f"{plan_dir}/{PLAN_META}"))
        for number in _segment_numbers(fs, plan_dir):
            seg = json.loads(fs.cat_file(f"{plan_dir}/{SEGMENT.format(number)}"))
            meta["num_shards"] += seg["num_shards"]
            known = meta.get("num_members") is not None and seg.get("num_members") is not None
            meta["num_members"] = meta["num_members"] + seg["num_members"] if known else None
            meta["segments"] = [*meta.get("segments", []), seg]
    except (FileNotFoundError, ValueError):
        return {}
    return meta


def _next_chunk(fs, plan_dir: str) -> int:
    """One past the highest member chunk present (an orphan chunk of a killed append included):
    a chunk name is never reused for other members, so a process's cached chunk stays true. Also
    removes the temporaries of segment records whose append was killed (an append holds the lock)."""
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(plan_dir, detail=False)]
    for name in names:
        if name.startswith(".segment-") and name.endswith(".tmp"):
            fs.rm_file(f"{plan_dir}/{name}")
    numbers = [int(n[len("members-"):-len(".parquet")]) for n in names
               if n.startswith("members-") and n.endswith(".parquet")]
    return max(numbers, default=-1) + 1


def append(plan: Plan, opts: PlanOptions, listing: tuple, keep: set[str],
           storage_options: dict | None = None) -> Plan:
    """Plan the inputs ``keep`` (ids of a ``files`` plan, names of tars and videos) of ``listing``
    (``sources.list_input``'s answer) as a new segment after ``plan``: shard ids and member chunks
    continue after the plan's; ``segment-NNNNN.json`` is written last. Returns the grown plan."""
    if not keep:
        return plan
    started = time.perf_counter()
    fs, base, entries = listing
    out_fs, plan_dir = sources.filesystem(plan.uri, storage_options)
    plan_dir = plan_dir.rstrip("/")
    out_fs.invalidate_cache(plan_dir)
    w = _Writer(out_fs, plan_dir, first_shard=plan.num_shards, first_chunk=_next_chunk(out_fs, plan_dir))
    num_members = _plan_into(w, plan.kind, opts, fs, base, entries, storage_options, keep)
    meta = {"num_members": num_members, "added_objects": len(keep),
            "planning_seconds": round(time.perf_counter() - started, 3)}
    return w.finish_segment(plan, meta)


@functools.lru_cache(maxsize=4)
def _chunk(uri: str, options_json: str) -> pa.Table:
    fs, path = sources.filesystem(uri, json.loads(options_json))
    return pq.read_table(pa.BufferReader(fs.cat_file(path)))


def members(plan_uri: str, shard: dict, storage_options: dict | None = None) -> pa.Table:
    """Members of a ``files`` shard (the chunk file is cached per process: shards of one chunk are
    usually read by the same workers in a row)."""
    chunk = _chunk(f"{plan_uri}/members-{shard['chunk']:05d}.parquet",
                   json.dumps(storage_options or {}, sort_keys=True))
    return chunk.slice(shard["offset"], shard["members"])
