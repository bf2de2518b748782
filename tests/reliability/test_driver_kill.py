"""The driver killed (SIGKILL, at the storage layer: ``killer.py``) at four points in a row, each
rerun resuming where the last one died: between a part's write and its commit record, inside the
write of a commit record, inside a rewrite of the running manifest, and right after a part is
published. After each
kill the output reads cleanly through its manifest (committed parts only, each verified); the
last rerun completes, and the output equals an uninterrupted run. ``run_matrix.py`` runs all ten
points, one kill each."""

from __future__ import annotations

import json
import subprocess

import pytest

from annotator.pipeline import layout
from tests.reliability.common import PYTHON, REPO, assert_same, rows_by_id, spec_toml, summary
from tests.reliability.killer import POINTS

pytestmark = pytest.mark.slow

# Four kills in a row, each run resuming the one before. "manifest-rewrite" (the run's 2nd manifest
# write, torn) lands before that run commits anything (measured: the readable images stayed at 4), so
# a fourth run is killed right after publishing its first part: every run but the torn-manifest one
# must add a shard (a kill point keyed to the manifest's count is not: several shards can commit
# between two rewrites, or all of them before the final one).
FIRST_PUBLISH = "move:/parts/part-:1:after"
CHAIN = tuple((p, POINTS[p][1]) for p in ("part-written", "record-half", "manifest-rewrite")) + (
    (FIRST_PUBLISH, "this run's first part published, nothing after it"),)
ADDS_A_SHARD = (True, True, False, True)


def killed_run(point: str | None, spec) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-m", "tests.reliability.killer", point, "--"] if point else [PYTHON, "-m", "annotator.cli"]
    return subprocess.run([*cmd, "run", "--spec", str(spec)], capture_output=True, text=True, timeout=900, cwd=REPO)


def readable_so_far(out) -> set[str]:
    """What a reader sees of a killed job: committed parts only, each verified; no id twice."""
    o = layout.Output(str(out))
    table = o.read_table()
    ids = table.column("image_id").to_pylist()
    assert len(ids) == len(set(ids))
    assert set(o.listing(layout.PARTS)) == {r["part"] for r in o.records()}  # nothing uncommitted in parts/
    return set(ids)


def test_driver_killed_at_four_points_in_a_row(ray_cluster, tiny_model, photos, reference, tmp_path):
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    # one commit thread: each kill point lands after the shards before it committed whole (with two,
    # the 2nd commit record can be written while the 1st is still being renamed), so each run adds one
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(out), tiny_model,
                     {"ray_address": address, "commit_threads": 1},
                     manifest_interval_s=0.0)  # a manifest rewrite after every batch: the kill lands in one
    seen: list[set[str]] = []
    for point, what in CHAIN:
        proc = killed_run(point, spec)
        assert proc.returncode == -9, f"{point}: not killed ({what})\n" + proc.stderr[-3000:]
        lock = json.loads((out / layout.LOCK).read_text())
        assert lock["pid"] > 0  # left behind by the dead driver: the next run takes it over
        seen.append(readable_so_far(out))
        assert seen[-1] <= set(reference)
    # each run keeps what the runs before committed; those that commit add at least one shard of 2
    # images; none finishes
    added = [len(b - a) for a, b in zip([set(), *seen[:-1]], seen, strict=True)]
    assert all(a <= b for a, b in zip([set(), *seen[:-1]], seen, strict=True)), added
    assert all(n >= 2 for n, adds in zip(added, ADDS_A_SHARD, strict=True) if adds), added
    assert len(seen[-1]) < len(reference), len(seen[-1])

    committed = len(list((out / layout.COMMITS).glob("part-*.json")))
    proc = killed_run(None, spec)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    s = summary(str(out))
    # committed shards are not redone: one per run that committed
    assert s["shards_failed"] == 0 and s["shards_skipped"] == committed >= sum(ADDS_A_SHARD)
    assert_same(rows_by_id(str(out)), reference)
    assert not (out / layout.LOCK).exists()
    assert not list(out.rglob(".*.tmp")) and not (out / layout.ATTEMPTS).exists()  # torn writes cleaned up
