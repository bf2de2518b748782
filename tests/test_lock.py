"""The output lock: a live owner is refused, a dead one taken over at once on its host, a lock
without heartbeat goes stale and its old owner notices; "already exists" comes from the stores' own
errors (local disk, the GCS emulator, moto's S3 on loopback), and no other error passes for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import urlparse

import fsspec
import pytest

from annotator.pipeline import lock
from tests.helpers import emulators


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    out = str(tmp_path / "out")
    first = lock.OutputLock(out, heartbeat_s=0.2, stale_after_s=60)
    first.acquire()
    try:
        with pytest.raises(lock.LockedError, match=f"pid {os.getpid()}"):
            lock.OutputLock(out).acquire()
        time.sleep(0.5)
        assert json.loads((tmp_path / "out" / "_lock").read_text())["heartbeat_at"] > time.time() - 0.45
    finally:
        first.release()
    assert not (tmp_path / "out" / "_lock").exists()
    # a lock left by a process that died (SIGKILL: no release) is taken over at once on this host
    code = (f"from annotator import lock; lk = lock.OutputLock({out!r}); lk.acquire(); "
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], timeout=120)
    dead = json.loads((tmp_path / "out" / "_lock").read_text())
    assert dead["pid"] != os.getpid()
    with lock.OutputLock(out) as lk:
        assert json.loads((tmp_path / "out" / "_lock").read_text())["token"] == lk.token


def test_lock_goes_stale_without_heartbeat_and_the_old_owner_notices(tmp_path):
    out = f"memory://lock-{tmp_path.name}/out"
    old = lock.OutputLock(out, heartbeat_s=3600, stale_after_s=1)
    old.acquire()
    old.owner["host"] = "elsewhere"  # not this host: only the heartbeat can tell it is gone
    old.refresh()
    time.sleep(1.2)
    new = lock.OutputLock(out, stale_after_s=1)
    new.acquire()
    old.refresh()  # the old owner's next heartbeat finds the lock taken
    with pytest.raises(lock.LockLostError):
        old.check()
    new.release()


# -- "already exists" from the stores' own errors ----------------------------------------------------


@pytest.fixture(scope="module")
def gcs_store():
    with emulators.gcs() as (options, fs):
        yield options, fs


@pytest.fixture(scope="module")
def s3_store():
    with emulators.s3() as (options, fs):
        yield options, fs


@pytest.fixture(params=["file", "gs", "s3"])
def store(request, tmp_path):
    """``(output URI, storage options, direct filesystem, bucket)`` on the local disk, the GCS
    emulator or moto's S3; a fresh output each time."""
    if request.param == "file":
        return str(tmp_path / "out"), None, fsspec.filesystem("file"), str(tmp_path)
    options, fs = request.getfixturevalue({"gs": "gcs_store", "s3": "s3_store"}[request.param])
    bucket = f"lock-{request.param}-{tmp_path.name[-12:].strip('_').lower().replace('_', '-')}"
    fs.mkdir(bucket)
    return f"{request.param}://{bucket}/out", options, fs, bucket


def test_a_second_exclusive_create_is_already_exists_on_every_store(store):
    out, options, fs, _ = store
    first = lock.OutputLock(out, options)
    path = first.path
    assert lock._exclusive_create(first.fs, path, b'{"n": 1}')
    assert not lock._exclusive_create(first.fs, path, b'{"n": 2}')  # exists: not an error, not overwritten
    assert json.loads(fs.cat_file(path)) == {"n": 1}
    first.fs.rm_file(path)
    with lock.OutputLock(out, options, stale_after_s=600):
        with pytest.raises(lock.LockedError, match="being written by another job"):
            lock.OutputLock(out, options, stale_after_s=600).acquire()


def test_other_errors_are_raised_whatever_their_message_says(store, tmp_path):
    """A create that fails for another reason raises, even where its message holds "412",
    "Precondition" or "exists" (which the message matching that this replaced took for "exists")."""
    out, options, fs, bucket = store
    name = "412-precondition-exists"
    if out.startswith("/"):  # the local disk: a parent that is a file
        (tmp_path / name).write_text("a file")
        target, lk_fs = str(tmp_path / name / "_lock"), fsspec.filesystem("file")
        expected = NotADirectoryError
    else:  # an object store: a bucket that does not exist
        lk_fs = lock.OutputLock(out, options).fs
        target, expected = f"{bucket}-{name}-none/_lock", FileNotFoundError
    with pytest.raises(expected):
        lock._exclusive_create(lk_fs, target, b"{}")
    for text in ("HTTP 412", "Precondition Failed", "object already exists"):
        assert not lock._already_exists(OSError(text))
        assert not lock._already_exists(RuntimeError(text))


@pytest.mark.parametrize("proto", ["gs", "s3"])
def test_a_create_whose_answer_was_lost_is_ours(proto, request):
    """The store creates the lock, its answer is lost (a 503 after the store acted), the client
    retries the create and hears "exists": the lock is ours, not another job's."""
    from tests.test_retries import ScriptedProxy

    options, fs = request.getfixturevalue({"gs": "gcs_store", "s3": "s3_store"}[proto])
    bucket = f"lock-lost-{proto}"
    fs.mkdir(bucket)
    direct = options[proto]
    with ScriptedProxy(urlparse(direct["endpoint_url"]).port, late=True) as proxy:
        through = {proto: {**direct, "endpoint_url": proxy.url}}
        proxy.script = [("POST" if proto == "gs" else "PUT", "_lock" if proto == "s3" else "", "5xx")]
        with lock.OutputLock(f"{proto}://{bucket}/out", through) as lk:
            assert not proxy.script and proxy.faults["5xx"] == 1
            assert json.loads(fs.cat_file(f"{bucket}/out/_lock"))["token"] == lk.token
