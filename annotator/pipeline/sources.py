"""Input storage, via fsspec (local, ``gs://``, ``s3://``, ``memory://``): listing, reading bytes, tar
shards in WebDataset layout and video frames.

Why listing is parallel: one flat listing of 10^7 objects under one prefix is hours of serial paged
requests (ray #40686, gcsfs #567); splitting the tree into prefixes and listing them concurrently is
what makes a job start in minutes. Planning (``annotator.pipeline.plan``) lists once and freezes the result.

Never imports Ray or Beam: runners call these functions.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tarfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import fsspec
import numpy as np

from annotator.pipeline import retries as retry_count

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
MANIFEST_EXTENSIONS = (".parquet", ".jsonl", ".ndjson", ".json")
CAMERA_FILE = "camera.json"  # in a folder: applies to every image directly in that folder
CAMERA_SUFFIX = ".camera.json"  # beside a tar or video: applies to all of its members/frames
DEFAULT_SHARD_SIZE = 256

# Protocols whose storage lives inside one process: Ray workers cannot see it.
PROCESS_LOCAL = frozenset({"memory"})
_ALIASES = {"gcs": "gs", "s3a": "s3", "local": "file"}


def protocol_of(uri: str) -> str:
    """Normalised protocol of ``uri`` ('file' for plain paths; 'gs' for gcs://; 's3' for s3a://)."""
    p = fsspec.utils.get_protocol(str(uri))
    return _ALIASES.get(p, p)


# ``scheme://user:password@host/...``: a URI with user info (plans keep it as ``scheme://***@host/...``)
USERINFO = r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@"
_USERINFO = re.compile(USERINFO)


class CredentialsInURI(ValueError):
    """A URI that carries user info: refused (it would be copied into the plan, rows and logs)."""


def absolute(uri: str) -> str:
    """Local paths become absolute (workers have another working directory); URIs stay as given."""
    if protocol_of(uri) == "file" and "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri))
    return uri


def is_process_local(uri: str) -> bool:
    return protocol_of(uri) in PROCESS_LOCAL


def filesystem(uri: str, storage_options: dict | None = None):
    """``(fs, path)`` for ``uri``; ``storage_options`` maps a protocol to its fsspec options, e.g.
    ``{"gs": {"endpoint_url": ...}, "s3": {"endpoint_url": ...}}``."""
    proto = protocol_of(uri)
    opts = {}
    for key, value in (storage_options or {}).items():
        if _ALIASES.get(key, key) == proto:
            opts.update(value)
    fs_path = fsspec.core.url_to_fs(str(uri), **opts)
    if proto not in ("file", "memory"):
        retry_count.watch()  # the store clients' own retries, for the summary
    return fs_path


def to_uri(fs, path: str) -> str:
    """A URI any process can open again: plain paths for the local disk, ``proto://path`` otherwise."""
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if proto in ("file", "local"):
        return path
    return fs.unstrip_protocol(path)


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def has_ext(path: str, exts: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(".") and name.lower().endswith(tuple(exts))


def expand_braces(pattern: str) -> list[str]:
    """WebDataset-style shard lists: ``shard-{000000..000123}.tar`` and ``{a,b}``, left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    out = []
    for opt in options:
        out.extend(expand_braces(pattern[:m.start()] + opt + pattern[m.end():]))
    return out


@dataclass(frozen=True)
class Entry:
    """One listed object."""

    path: str  # filesystem path (no protocol)
    size: int | None
    etag: str | None


def _etag(info: dict) -> str | None:
    """Whatever the store offers to detect a changed object: ETag / generation / md5 / mtime."""
    for key in ("ETag", "generation", "etag", "md5Hash", "crc32c"):
        if info.get(key):
            return str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "updated", "created"):
        if info.get(key):
            return f"{key}:{info[key]}"
    return None


def _entry(path: str, info: dict) -> Entry:
    size = info.get("size")
    return Entry(path, int(size) if size is not None else None, _etag(info))


def list_tree(fs, root: str, min_prefixes: int = 16, max_depth: int = 3, threads: int = 16) -> list[Entry]:
    """Every file under ``root``, sorted by path, listed in parallel across sub-prefixes.

    Expands the tree breadth-first until there are at least ``min_prefixes`` prefixes (or
    ``max_depth`` levels), then lists each prefix recursively in its own thread.
    """
    root = root.rstrip("/") or "/"
    if fs.isfile(root):
        return [_entry(root, fs.info(root))]
    files: list[Entry] = []
    prefixes = [root]
    for _ in range(max_depth):
        if len(prefixes) >= min_prefixes:
            break
        with ThreadPoolExecutor(threads) as ex:
            listings = list(ex.map(lambda p: fs.ls(p, detail=True), prefixes))
        next_prefixes = []
        for listing in listings:
            for info in listing:
                name = info["name"].rstrip("/")
                if info.get("type") == "directory":
                    next_prefixes.append(name)
                else:
                    files.append(_entry(name, info))
        prefixes = next_prefixes
        if not prefixes:
            break
    if prefixes:
        with ThreadPoolExecutor(threads) as ex:
            for found in ex.map(lambda p: fs.find(p, detail=True), prefixes):
                files.extend(_entry(name, info) for name, info in found.items()
                             if info.get("type") != "directory")
    unique = {e.path: e for e in files}
    return [unique[p] for p in sorted(unique)]


def list_input(uri: str, storage_options: dict | None = None) -> tuple[object, str, list[Entry]]:
    """``(fs, base, entries)``: a file, a folder tree, or a brace pattern of files."""
    if "{" in uri:
        # one listing per parent folder (not one request per object); calibration files beside the
        # listed objects come along
        fs, _ = filesystem(expand_braces(uri)[0], storage_options)
        paths = {filesystem(u, storage_options)[1] for u in expand_braces(uri)}
        parents = sorted({posixpath.dirname(p) for p in paths})
        with ThreadPoolExecutor(16) as ex:
            listings = list(ex.map(lambda d: fs.ls(d, detail=True), parents))
        found = {info["name"].rstrip("/"): info for listing in listings for info in listing}
        missing = sorted(paths - set(found))
        if missing:
            raise FileNotFoundError(f"{len(missing)} object(s) of {uri} do not exist, e.g. {missing[:3]}")
        keep = [p for p in found if p in paths or p.endswith(CAMERA_SUFFIX)]
        entries = [_entry(p, found[p]) for p in sorted(keep)]
        base = posixpath.commonpath(parents) if len(parents) > 1 else parents[0]
        return fs, base, entries
    fs, root = filesystem(uri, storage_options)
    root = root.rstrip("/") or "/"
    if not fs.exists(root):
        raise FileNotFoundError(f"input {uri} does not exist")
    entries = list_tree(fs, root)
    base = posixpath.dirname(root) if fs.isfile(root) else root
    return fs, base, entries


def relative(path: str, base: str) -> str:
    return path[len(base):].lstrip("/") if path.startswith(base) else path.rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Reading bytes

PERMANENT_ERRORS = (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError)


def _call_with_timeout(fn, timeout_s: float | None):
    """Run ``fn()`` in a helper thread and give up after ``timeout_s`` (the thread is abandoned:
    Python cannot cancel blocking I/O, but the caller moves on and the row becomes an error)."""
    if not timeout_s:
        return fn()
    ex = ThreadPoolExecutor(1)
    try:
        return ex.submit(fn).result(timeout=timeout_s)
    except FutureTimeout:
        raise TimeoutError(f"no answer within {timeout_s:g} s") from None
    finally:
        ex.shutdown(wait=False)


def read_many(uris: list[str], storage_options: dict | None = None, timeout_s: float | None = 120.0,
              retries: int = 2, backoff_s: float = 0.5) -> list[bytes | Exception]:
    """Bytes of each URI, or the exception that reading it raised (after bounded retries of
    transient errors). Async stores (gcsfs, s3fs) fetch a list concurrently in one ``cat`` call."""
    out: list[bytes | Exception | None] = [None] * len(uris)
    by_fs: dict[str, list[int]] = {}
    for i, uri in enumerate(uris):
        if _USERINFO.match(uri):  # never sent anywhere (plans hold such URIs redacted anyway)
            out[i] = CredentialsInURI("credentials inside a URI are not accepted: give them as storage options "
                                      "or in the environment")
        else:
            by_fs.setdefault(protocol_of(uri), []).append(i)
    for idx in by_fs.values():
        try:
            fs, _ = filesystem(uris[idx[0]], storage_options)
        except (ValueError, ImportError) as e:  # an unknown protocol (or its package missing): these rows only
            for i in idx:
                out[i] = e
            continue
        todo = list(idx)
        for attempt in range(retries + 1):
            paths = {i: filesystem(uris[i], storage_options)[1] for i in todo}
            try:
                got = _call_with_timeout(lambda p=paths, f=fs: f.cat(list(p.values()), on_error="return"), timeout_s)
            except Exception as e:  # noqa: BLE001 - timeout or a store-wide failure: every item gets it
                got = {p: e for p in paths.values()}
            retry = []
            for i, p in paths.items():
                value = got.get(p, KeyError(p)) if isinstance(got, dict) else got
                out[i] = value
                if isinstance(value, Exception) and not isinstance(value, PERMANENT_ERRORS):
                    retry.append(i)
            if not retry or attempt == retries:
                break
            retry_count.add(len(retry))
            time.sleep(backoff_s * 2 ** attempt)
            todo = retry
    return out  # type: ignore[return-value]


def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    value = read_many([uri], storage_options)[0]
    if isinstance(value, Exception):
        raise value
    return value


# ---------------------------------------------------------------------------------------------
# WebDataset tars


def sample_key(member_name: str) -> tuple[str, str]:
    """WebDataset convention: ``dir/key.ext`` -> (``dir/key``, ``ext``), splitting at the first dot
    of the basename (so ``a.seg.png`` has key ``a`` and extension ``seg.png``)."""
    d, _, base = member_name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower() if dot else ""


def iter_tar_samples(uri: str, storage_options: dict | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a WebDataset tar in stored order: ``(key, {ext: bytes})``, streamed (the tar is
    read once, front to back; nothing seeks). Raises on a corrupt or truncated tar."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb", block_size=8 * 2**20) as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        key, files = None, {}
        for info in tar:
            if not info.isfile():
                continue
            k, ext = sample_key(info.name)
            if k != key and files:
                yield key, files
                files = {}
            key = k
            f = tar.extractfile(info)
            files[ext] = f.read() if f is not None else b""
        if files:
            yield key, files


# ---------------------------------------------------------------------------------------------
# Videos


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # -1 when the container does not say
    fps: float
    width: int
    height: int


def _open_video(uri: str, storage_options: dict | None):
    import av

    fs, path = filesystem(uri, storage_options)
    if protocol_of(uri) == "file":
        return av.open(path), None
    f = fs.open(path, "rb", block_size=4 * 2**20)
    return av.open(f), f


def probe_video(uri: str, storage_options: dict | None = None) -> VideoInfo:
    """Frame count and rate from the container header (no decoding)."""
    container, f = _open_video(uri, storage_options)
    try:
        s = container.streams.video[0]
        rate = float(s.average_rate or s.guessed_rate or 0) or 0.0
        frames = int(s.frames or 0)
        if frames <= 0 and s.duration and rate:
            frames = int(round(float(s.duration * s.time_base) * rate))
        return VideoInfo(frames if frames > 0 else -1, rate, s.codec_context.width, s.codec_context.height)
    finally:
        container.close()
        if f is not None:
            f.close()


def iter_video_frames(uri: str, start: int, stop: int, every: int,
                      storage_options: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Frames ``i`` with ``start <= i < stop`` (``stop < 0``: to the end) and ``i % every == 0``,
    as RGB uint8 arrays. The index comes from each frame's timestamp, so shards that seek into the
    middle of one video agree on it and neither skip nor repeat a frame at their boundary."""
    container, f = _open_video(uri, storage_options)
    try:
        s = container.streams.video[0]
        s.thread_type = "AUTO"
        rate = s.average_rate or s.guessed_rate
        t0 = s.start_time or 0
        tb = s.time_base
        if start > 0 and rate:
            container.seek(int(t0 + start / rate / tb), stream=s, backward=True, any_frame=False)
        counted = 0 if start == 0 else None
        for frame in container.decode(s):
            if frame.pts is not None and rate:
                idx = int(round(float((frame.pts - t0) * tb * rate)))
            elif counted is not None:
                idx = counted
            else:
                raise ValueError("frames have no timestamps; cannot seek to a shard's start")
            if counted is not None:
                counted += 1
            if 0 <= stop <= idx:
                break
            if idx < start or idx % every:
                continue
            yield idx, frame.to_ndarray(format="rgb24")
    finally:
        container.close()
        if f is not None:
            f.close()


def env_storage_options() -> dict:
    """Storage options from the environment, for emulators and private endpoints:
    ``STORAGE_EMULATOR_HOST`` (gcsfs honours it itself) and ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``."""
    out: dict = {}
    s3 = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if s3:
        out["s3"] = {"endpoint_url": s3}
    return out
