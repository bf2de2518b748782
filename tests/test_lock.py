"""The output lock: a live owner is refused, a dead one taken over at once on its host, a lock
without heartbeat goes stale and its old owner notices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from annotator.pipeline import lock


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
