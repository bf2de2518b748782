"""``OUTPUT/_lock``: one job writes an output at a time (owner + heartbeat).

Why: two drivers committing into one output would each believe they own the shards; reruns that
race (ray #55043) lose data. The lock is created exclusively (``O_EXCL`` locally,
``ifGenerationMatch=0`` on GCS, ``If-None-Match: *`` on S3), refreshed by a heartbeat thread, and
taken over only when stale: no heartbeat for ``stale_after_s`` or, on the same host, the owner
process is gone (so a rerun right after a crash or SIGKILL does not wait). A job that finds its lock
taken over stops committing.

A job writing version N >= 2 of an output (``OUTPUT/_versions/vN/``, ``pipeline.versions``) holds
``OUTPUT/_lock`` and ``delegate``s it: the same document (token, heartbeat) in the version folder,
where its workers look before each commit. Every job takes ``OUTPUT/_lock`` first, so one job
writes one output, whichever of its versions.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from annotator.pipeline import sources
from annotator.pipeline.layout import LOCK

log = logging.getLogger(__name__)

class LockedError(RuntimeError):
    """Another live job holds the output."""


class LockLostError(RuntimeError):
    """Our lock was taken over (we were presumed dead): stop writing."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _loaded(module: str, name: str) -> tuple[type, ...]:
    """``module.name`` if that client is imported (an error of its type can exist only then), else ()."""
    found = getattr(sys.modules.get(module), name, None)
    return (found,) if isinstance(found, type) else ()


def _already_exists(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is the store saying "this object exists":
    ``FileExistsError`` (the local disk's ``O_EXCL``; gcsfs for HTTP 412, in
    ``gcsfs.retry.validate_response``; s3fs for a ``PreconditionFailed`` on ``If-None-Match``, in
    ``s3fs.errors.translate_boto_error``), gcsfs's ``HttpError`` with code 412, or botocore's
    ``ClientError`` with code ``PreconditionFailed`` or status 412 (which s3fs hands on as an
    ``OSError`` when the store leaves out the failed condition)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, FileExistsError):
            return True
        if isinstance(error, _loaded("gcsfs.retry", "HttpError")):
            return error.code in (412, "412")
        if isinstance(error, _loaded("botocore.exceptions", "ClientError")):
            response = error.response or {}
            return (response.get("Error", {}).get("Code") == "PreconditionFailed"
                    or response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412)
        error = error.__cause__
    return False


def _exclusive_create(fs, path: str, data: bytes) -> bool:
    """Create ``path`` only if it does not exist; False if it does. Any other error is raised."""
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    try:
        if proto in ("file", "local"):
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        if proto == "memory":
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True
        fs.pipe_file(path, data, mode="create")
        return True
    except Exception as e:
        if _already_exists(e):
            return False
        raise


def _read(fs, path: str) -> dict | None:
    """The lock document; None without one, {} when it cannot be read (half-written, or the store failed)."""
    try:
        return json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {}


def read_lock(output_uri: str, storage_options: dict | None = None) -> dict | None:
    """The lock document of ``output_uri``: a worker that commits for a job checks the token in it,
    as the driver's heartbeat thread is not in its process."""
    fs, root = sources.filesystem(output_uri, storage_options)
    return _read(fs, f"{root.rstrip('/')}/{LOCK}")


@dataclass
class OutputLock:
    output_uri: str
    storage_options: dict | None = None
    heartbeat_s: float = 30.0
    stale_after_s: float = 300.0

    def __post_init__(self):
        self.fs, root = sources.filesystem(self.output_uri, self.storage_options)
        self.fs.makedirs(root.rstrip("/"), exist_ok=True)
        self.path = f"{root.rstrip('/')}/{LOCK}"
        self.delegated: list[str] = []  # copies of the lock document in version folders (``delegate``)
        self.token = uuid.uuid4().hex
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                      "started_at": time.time()}
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _doc(self) -> bytes:
        return json.dumps({**self.owner, "heartbeat_at": time.time()}).encode()

    def read(self) -> dict | None:
        return _read(self.fs, self.path)

    def _stale(self, doc: dict) -> str | None:
        """Why ``doc`` no longer holds the lock, or None if it does."""
        if not doc:
            return "unreadable lock file"
        age = time.time() - float(doc.get("heartbeat_at", 0))
        if age > self.stale_after_s:
            return f"no heartbeat for {age:.0f} s"
        if doc.get("host") == self.owner["host"] and not _pid_alive(int(doc.get("pid", -1))):
            return f"owner process {doc.get('pid')} on this host is gone"
        return None

    def acquire(self) -> None:
        for _ in range(3):
            if _exclusive_create(self.fs, self.path, self._doc()):
                break
            doc = self.read()
            if doc is None:
                continue
            if doc.get("token") == self.token:
                # ours: the store carried out our create, its answer was lost, and the client's retry
                # of the create found the object there
                break
            why = self._stale(doc)
            if why is None:
                age = time.time() - float(doc.get("heartbeat_at", 0))
                raise LockedError(
                    f"{self.output_uri} is being written by another job (host {doc.get('host')}, pid "
                    f"{doc.get('pid')}, last heartbeat {age:.0f} s ago); wait for it, or write elsewhere. "
                    f"A crashed job's lock goes stale after {self.stale_after_s:.0f} s.")
            log.warning("taking over the lock of %s: %s", self.output_uri, why)
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass
        else:
            raise LockedError(f"could not lock {self.output_uri}: another job keeps taking it")
        if (self.read() or {}).get("token") != self.token:
            raise LockedError(f"another job locked {self.output_uri} at the same moment")
        self._thread = threading.Thread(target=self._beat, name="annotator-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def refresh(self) -> None:
        doc = self.read()
        if doc is not None and doc.get("token") != self.token:
            self.lost = True
            log.error("lost the lock of %s to host %s pid %s", self.output_uri, doc.get("host"), doc.get("pid"))
            self._stop.set()
            return
        try:
            for path in (self.path, *self.delegated):
                self.fs.pipe_file(path, self._doc())
        except OSError as e:  # a missed heartbeat is not fatal; staleness needs many in a row
            log.warning("lock heartbeat failed: %s", e)

    def delegate(self, folder_uri: str) -> None:
        """Hold ``folder_uri`` (a version folder of this output) with this lock: the same document
        there, refreshed with the heartbeat, removed on release."""
        fs, root = sources.filesystem(folder_uri, self.storage_options)
        path = f"{root.rstrip('/')}/{LOCK}"
        if path not in self.delegated:
            fs.makedirs(root.rstrip("/"), exist_ok=True)
            fs.pipe_file(path, self._doc())
            self.delegated.append(path)

    def check(self) -> None:
        if self.lost:
            raise LockLostError(f"the lock of {self.output_uri} was taken over by another job")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if not self.lost and (self.read() or {}).get("token") == self.token:
            for path in (*self.delegated, self.path):
                if (_read(self.fs, path) or {}).get("token") == self.token:
                    try:
                        self.fs.rm_file(path)
                    except FileNotFoundError:
                        pass

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
