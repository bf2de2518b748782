"""Model references -> a local SavedModel folder, plus what identifies the model in the output.

A reference is one of

- a built-in name (``default``, ``default-lite``, ``default-full``, ``default-heavy``);
- a local SavedModel folder, or a local ``.tar.gz``/``.tgz``/``.tar``/``.zip`` holding one;
- a remote folder or archive: ``gs://``, ``s3://``, ``http(s)://`` or any other fsspec URL.

Any SavedModel with the official MeTRAbs API works, ours or an official one.

Remote models and local archives go through one content-addressed cache under
``$ANNOTATOR_CACHE/remote``:

    blobs/<sha256>/tree/     the unpacked archive or folder, named by the sha256 of the fetched
                             bytes (archive bytes; for a remote folder, the hash of its files)
    blobs/<sha256>/complete  written last: the SavedModel's path inside tree/
    refs/<sha256(uri)>.json  which blob a URI gave, with the remote object's stamp (etag/size/mtime)

A per-URI file lock makes the many inference actors of one node wait for one download instead of
fetching the same model side by side; the next resolution compares the remote stamp (a metadata
call, no download) and reuses the blob. When the store is unreachable a previously fetched blob
is used as is. Unpacking never writes outside its folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from annotator.models import registry

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    path: str
    model_id: str
    sha256: str

    def to_dict(self) -> dict:
        return {"reference": self.reference, "id": self.model_id, "sha256": self.sha256}


def is_remote(reference: str) -> bool:
    scheme = reference.split("://", 1)[0] if "://" in reference else ""
    return bool(scheme) and scheme != "file"


def resolve(reference: str, build_missing: bool = True, storage_options: dict | None = None) -> ResolvedModel:
    """Resolve ``reference`` to a local SavedModel folder (fetching a remote one once per node)."""
    if is_remote(reference):
        folder = fetch(reference, storage_options)
        return _describe(reference, folder, default_id=_stem(reference))
    local = Path(reference.removeprefix("file://")).expanduser()
    if local.is_dir():
        if not (local / "saved_model.pb").exists():
            raise FileNotFoundError(f"{local} is not a SavedModel folder (no saved_model.pb)")
        return _describe(reference, local, default_id=local.name)
    if local.is_file() and local.name.endswith(ARCHIVE_SUFFIXES):
        folder = fetch(str(local.resolve()))
        return _describe(reference, folder, default_id=_stem(local.name))
    if local.exists() or "/" in reference or reference.endswith(ARCHIVE_SUFFIXES):
        raise FileNotFoundError(f"{reference}: not a SavedModel folder or archive"
                                f" ({', '.join(ARCHIVE_SUFFIXES)})")
    path = registry.path(reference, build_missing=build_missing, fetch=False)
    info = registry.info(path)
    return ResolvedModel(reference, str(path), info["id"], info["sha256"])


def _describe(reference: str, folder: Path, default_id: str) -> ResolvedModel:
    info = registry.info(folder)
    sha = info.get("sha256") or _cached_sha(folder)
    return ResolvedModel(reference, str(Path(folder).resolve()), info.get("id") or default_id, sha)


def _stem(reference: str) -> str:
    name = reference.rstrip("/").rsplit("/", 1)[-1]
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _cached_sha(path: Path) -> str:
    """Hash an external SavedModel once; the result is keyed by its files' sizes and mtimes."""
    stamp = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(path.rglob("*")) if p.is_file()]
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()
    cache = registry.cache_dir() / "hashes" / f"{key}.txt"
    if cache.exists():
        return cache.read_text().strip()
    digest = registry.directory_sha256(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(digest)
    return digest


# ----------------------------------------------------------------------------------- fetching
def remote_root() -> Path:
    return registry.cache_dir() / "remote"


def env_storage_options(protocol: str) -> dict:
    """Options for emulators and private endpoints, from the environment: ``AWS_ENDPOINT_URL(_S3)``
    for s3 (gcsfs reads ``STORAGE_EMULATOR_HOST`` itself; fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>``
    variables apply to every protocol)."""
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"endpoint_url": endpoint}
    return {}


_ALIASES = {"gs": ("gs", "gcs"), "gcs": ("gcs", "gs"), "s3": ("s3", "s3a"), "s3a": ("s3a", "s3"),
            "http": ("http", "https"), "https": ("https", "http")}


def options_for(protocol: str, storage_options: dict | None) -> dict:
    """fsspec options for ``protocol``: ``storage_options`` is either flat (used as is) or per protocol,
    ``{"gs": {...}, "s3": {...}}`` as in job specs (the matching entry, aliases included)."""
    if not storage_options:
        return {}
    import fsspec

    known = set(fsspec.available_protocols())
    if all(isinstance(v, dict) for v in storage_options.values()) and set(storage_options) <= known:
        for key in _ALIASES.get(protocol, (protocol,)):
            if key in storage_options:
                return dict(storage_options[key])
        return {}
    return dict(storage_options)


def _stamp(info: dict) -> dict:
    """What identifies a remote object's version without reading it."""
    keys = ("type", "size", "etag", "ETag", "md5Hash", "crc32c", "generation", "LastModified", "mtime", "updated")
    return {k: str(info[k]) for k in keys if k in info and info[k] is not None}


def fetch(uri: str, storage_options: dict | None = None) -> Path:
    """Local SavedModel folder for a remote (or local archive) ``uri``; downloads at most once.

    ``storage_options``: flat fsspec options, or per protocol (``{"gs": {...}}``, see ``options_for``)."""
    import fsspec

    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    options = {**env_storage_options(protocol), **options_for(protocol, storage_options)}
    fs, path = fsspec.core.url_to_fs(uri, **options)
    key = hashlib.sha256(uri.encode()).hexdigest()
    ref_file = remote_root() / "refs" / f"{key}.json"
    with registry._lock(f"fetch-{key[:32]}"):
        ref = _read_json(ref_file)
        try:
            info = fs.info(path)
        except Exception as e:
            # Unreachable store (fsspec's HTTP reports that as FileNotFoundError too): a copy fetched
            # before keeps jobs running; without one it is an error.
            if ref and _blob_ok(ref["sha256"]):
                log.warning("%s unreachable (%s); using the cached copy %s", uri, e, ref["sha256"][:12])
                return _blob_model_dir(ref["sha256"])
            if isinstance(e, FileNotFoundError):
                raise FileNotFoundError(f"{uri}: no such model (or the store is unreachable)") from None
            raise
        stamp = _stamp(info)
        if ref and ref.get("stamp") == stamp and _blob_ok(ref["sha256"]):
            return _blob_model_dir(ref["sha256"])
        sha = _download(fs, path, info, uri)
        _write_json(ref_file, {"uri": uri, "sha256": sha, "stamp": stamp})
        return _blob_model_dir(sha)


def _blob_dir(sha: str) -> Path:
    return remote_root() / "blobs" / sha


def _blob_ok(sha: str) -> bool:
    return (_blob_dir(sha) / "complete").exists()


def _blob_model_dir(sha: str) -> Path:
    """The SavedModel inside a blob (``complete`` holds its path relative to ``tree/``)."""
    return _blob_dir(sha) / "tree" / (_blob_dir(sha) / "complete").read_text().strip()


def _download(fs, path: str, info: dict, uri: str) -> str:
    blobs = remote_root() / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=blobs))
    try:
        if info.get("type") == "directory":
            fs.get(path.rstrip("/") + "/", str(tmp / "model"), recursive=True)
            sha = registry.directory_sha256(tmp / "model")
            unpacked = tmp / "model"
        else:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if not name.endswith(ARCHIVE_SUFFIXES):
                raise ValueError(f"{uri}: a model must be a SavedModel folder or an archive"
                                 f" ({', '.join(ARCHIVE_SUFFIXES)})")
            archive = tmp / name
            fs.get_file(path, str(archive))
            sha = registry.npm.sha256_file(archive)
            if _blob_ok(sha):  # same bytes under another URI
                return sha
            unpacked = tmp / "model"
            unpack(archive, unpacked)
            archive.unlink()
        if not _blob_ok(sha):
            root = find_saved_model(unpacked)
            dest = _blob_dir(sha)
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir()
            unpacked.rename(dest / "tree")
            (dest / "complete").write_text(str(root.relative_to(unpacked)))
        return sha
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_saved_model(folder: Path) -> Path:
    """The folder holding ``saved_model.pb``: the root or a single nested one (archives often wrap
    the model in a top-level directory)."""
    if (folder / "saved_model.pb").exists():
        return folder
    found = sorted(p.parent for p in folder.rglob("saved_model.pb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one SavedModel in the archive, found {len(found)}")
    return found[0]


def unpack(archive: Path, dest: Path) -> None:
    """Extract a .tar(.gz)/.zip into ``dest``, refusing members that would land outside it."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise ValueError(f"{archive.name}: unsafe path {member!r}")
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    tmp.replace(path)
