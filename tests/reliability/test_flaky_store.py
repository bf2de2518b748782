"""Jobs on ``gs://`` and ``s3://`` through the fault proxy (``faultproxy.py``: 5xx before or after the
store acted, connection resets, stalls, truncated bodies on ~10 % of requests, bounded): a job
completes with the output of an uninterrupted local run, nothing but committed parts is reachable
through the manifest, and the summary counts the storage retries. A store that never answers for
some objects costs those rows only: they are error rows with the store's answer, and the rerun with
``--retry-errors`` (store healthy again) repairs exactly them. One store each (CI time); the
script (``run_matrix.py``) runs both stores with and without faults."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.reliability.common import PYTHON, REPO, assert_same, rows_by_id, spec_toml
from tests.reliability.flaky import flaky_store, upload

pytestmark = pytest.mark.slow

RATE = 0.1


def run_job(spec, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "annotator.cli", "run", "--spec", str(spec), *extra], capture_output=True,
                          text=True, timeout=900, cwd=REPO)


@pytest.mark.parametrize("store", ["gs"])
def test_job_through_a_flaky_store_equals_a_clean_run(store, ray_cluster, tiny_model, photos, reference, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    with flaky_store(store, RATE, seed=3) as (proxy, options, fs):
        src, out = upload(fs, store, photos)
        spec = spec_toml(tmp_path / "job.toml", src, out, tiny_model, {"ray_address": address},
                         storage_options=options, manifest_interval_s=0.0)
        proc = run_job(spec)
        faults, requests = dict(proxy.faults), proxy.requests
        proxy.rate = 0.0  # the checks below read through the proxy, without faults
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        assert sum(faults.values()) >= 5 and len(faults) >= 3, (faults, requests)  # the faults did happen
        summary = json.loads(fs.cat_file(out.split("://", 1)[1] + "/_summary.json"))
        assert summary["shards_failed"] == 0
        assert summary["storage_retries"] >= 1, summary.get("storage_retries")
        assert_same(rows_by_id(out, options), reference, moved=(src, str(photos)))


def test_an_object_the_store_never_serves_is_an_error_row_until_repaired(ray_cluster, tiny_model, photos, reference,
                                                                          tmp_path):
    """One photo answers 503 to every request (on top of the transient faults): the job still ends,
    that photo is an error row (its URI, the store's answer), every other row is as in a clean run; once the store
    serves it again, ``--retry-errors`` recomputes exactly the error rows and the output equals a
    clean run's."""
    address = ray_cluster.get_runtime_context().gcs_address
    victim = sorted(reference)[3]
    with flaky_store("s3", RATE, seed=5, broken=(victim,)) as (proxy, options, fs):
        src, out = upload(fs, "s3", photos)
        spec = spec_toml(tmp_path / "job.toml", src, out, tiny_model, {"ray_address": address, "read_retries": 0},
                         storage_options=options)
        proc = run_job(spec)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        assert proxy.faults["broken"] >= 2  # asked again (the client's own retries), refused each time
        proxy.rate = 0.0
        got = rows_by_id(out, options)
        # the row names the object (its URI) and why: the store's answer after the retries
        assert got[victim]["status"] == "error" and got[victim]["source_uri"] == f"{src}/{victim}"
        assert got[victim]["error"].startswith("read_error:") and "Service Unavailable" in got[victim]["error"]
        assert_same({k: r for k, r in got.items() if k != victim}, {k: r for k, r in reference.items() if k != victim},
                    moved=(src, str(photos)))

        proxy.broken = ()
        proc = run_job(spec, "--retry-errors")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
        summary = json.loads(fs.cat_file(out.split("://", 1)[1] + "/_summary.json"))
        assert summary["shards_repaired"] == 2  # the victim's shard and the broken file's, nothing else
        assert_same(rows_by_id(out, options), reference, moved=(src, str(photos)))
