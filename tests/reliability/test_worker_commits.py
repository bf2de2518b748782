"""Parts written and committed in Ray tasks (``compute.commit_on = "workers"``), exactly once: the
driver killed inside a manifest rewrite leaves a readable output, the rerun's driver never writes
a part itself (a killer rule on part files would end it) and completes, ``--retry-errors`` redoes
the error row through a worker (the committed part read back and rewritten there), and the output
equals the uninterrupted driver-commit run."""

from __future__ import annotations

import json
import time

import pytest

from annotator.pipeline import layout
from tests.reliability.common import assert_same, rows_by_id, spec_toml, summary
from tests.reliability.test_driver_kill import killed_run, readable_so_far

pytestmark = pytest.mark.slow


def test_worker_commits_exactly_once(ray_cluster, tiny_model, photos, reference, tmp_path):
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(out), tiny_model,
                     {"ray_address": address, "commit_on": "workers", "commit_threads": 2},
                     manifest_interval_s=0.0)  # a manifest rewrite after every batch: the kill lands in one
    proc = killed_run("manifest-rewrite", spec)
    assert proc.returncode == -9, proc.stderr[-3000:]
    time.sleep(2)  # commit tasks of the dead driver end with it (Ray ends a finished job's workers)
    first = readable_so_far(out)
    assert first <= set(reference)

    # the rerun's driver is killed if it writes a part file itself: with commit_on = workers it must not
    proc = killed_run("part-half", spec)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    s = summary(str(out))
    assert s["shards_failed"] == 0 and s["images"] + 2 * s["shards_skipped"] == len(reference)
    assert_same(rows_by_id(str(out)), reference)
    assert not (out / layout.ATTEMPTS).exists() and not (out / layout.LOCK).exists()

    before = {r["shard"]: r for r in layout.Output(str(out)).records()}
    retry = spec_toml(tmp_path / "retry.toml", str(photos), str(out), tiny_model,
                      {"ray_address": address, "commit_on": "workers"}, retry_errors=True)
    proc = killed_run("part-half", retry)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    s = summary(str(out))
    assert s["shards_repaired"] == 1 and s["images"] == 1  # the broken file's shard, its one error row redone
    after = {r["shard"]: r for r in layout.Output(str(out)).records()}
    changed = [k for k in after if after[k]["sha256"] != before[k]["sha256"] or after[k].get("repairs")]
    assert len(changed) == 1 and after[changed[0]]["repairs"] == 1
    assert_same(rows_by_id(str(out)), reference)
    assert json.loads((out / layout.MANIFEST).read_text())["final"]
