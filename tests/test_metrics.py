"""Live metrics (``annotator.runners.metrics``): counted column-wise from the label tables the
driver receives, and served by Ray's metrics agent on its Prometheus endpoint on 127.0.0.1. A job
is scraped while it runs, and one of its inference actors is killed (Ray restarts it); at the end
the scraped counts equal the summary's and ``_progress.json``'s, and the restart is counted."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from urllib.parse import urlparse

import pyarrow as pa
import pytest

from annotator.runners.metrics import batch_seconds, row_counts
from tests.reliability.common import make_photos, tiny_model_folder

# Ray's processes report their metrics to the node's agent every 10 s by default; every second here,
# so that a test-sized job shows on the endpoint while it runs (read once, when this process's Ray starts)
os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")

LINE = re.compile(r"^(\w+)\{(.*)\}\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _table(status, error, fail, actor, done, infer_s) -> pa.Table:
    return pa.table({"status": status, "error": pa.array(error, pa.string()), "_fail": fail, "_actor": actor,
                     "_done_at": done, "_infer_s": infer_s})


def test_rows_are_counted_by_status_and_reason_and_batches_by_call():
    t = _table(["ok", "error", "error", "ok", "error"],
               [None, "decode_error: not an image", "inference_error: bad", None, "timeout: 600 s"],
               ["", "", "", "", "timeout: inference exceeded 600 s"],
               ["a:1", "a:1", "b:2", "b:2", "b:2"], [1.0, 1.0, 2.0, 2.0, 3.0], [0.5, 0.0, 0.25, 0.25, 0.0])
    images, reasons = row_counts(t)
    assert images == Counter({"ok": 2, "error": 2, "failed": 1})
    assert reasons == Counter({"decode_error": 1, "inference_error": 1, "timeout": 1})
    # one call per (actor, done at); a call of error rows only (no model time) is no batch
    assert sorted(batch_seconds(t)) == [0.5, 0.5]


def scrape(url: str) -> list[tuple[str, dict, float]]:
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    out = []
    for line in body.splitlines():
        m = LINE.match(line)
        if m and m.group(1).startswith("ray_annotator_"):
            out.append((m.group(1), dict(LABEL.findall(m.group(2))), float(m.group(3))))
    return out


def by_label(samples, name: str, job: str, label: str) -> dict[str, int]:
    return {labels[label]: int(v) for n, labels, v in samples if n == name and labels.get("job") == job and v}


@pytest.mark.slow
def test_prometheus_endpoint_during_a_job_matches_the_summary(ray_cluster, tmp_path_factory, tmp_path):
    from annotator.runners import metrics, ray_data
    from tests.helpers.jobs import job_spec

    url = metrics.endpoint()
    assert url and urlparse(url).hostname == "127.0.0.1", url  # served on loopback only
    photos = tmp_path / "photos"
    make_photos(photos)  # 15 photos and one broken file: an error row with its reason
    # a model whose every call takes a measurable time: the job lasts past a few metric reports
    model = tiny_model_folder(tmp_path_factory.getbasetemp() / "busy_model", 20_000)
    out = tmp_path / "out"
    scrapes, done, killed = [], threading.Event(), []

    def watch():
        while not done.wait(1.0):
            try:
                scrapes.append(scrape(url))
            except OSError as e:
                scrapes.append(e)

    def kill_an_actor():  # once the first shard committed, while most of the work is left
        while not done.wait(0.2):
            if (out / "_commits").exists() and any((out / "_commits").glob("part-*.json")):
                alive = [a for a in metrics.inference_actors() if a["State"] == "ALIVE" and a["Pid"]]
                if alive:
                    os.kill(alive[0]["Pid"], signal.SIGKILL)
                    killed.append(alive[0]["Pid"])
                    return
    threads = [threading.Thread(target=f, daemon=True) for f in (watch, kill_an_actor)]
    for t in threads:
        t.start()
    try:
        summary = ray_data.run(job_spec(str(photos), str(out), model=model, shard_size=2,
                                        compute={"batch_size": 1, "read_batch": 1}))
    finally:
        done.set()
        for t in threads:
            t.join()
    assert summary["shards_failed"] == 0 and summary["images"] == 16 and summary["images_error"] == 1
    assert len(killed) == 1, "no inference actor was killed mid-job"
    assert scrapes and all(isinstance(s, list) for s in scrapes), scrapes[-3:]  # the endpoint answered mid-job
    job = summary["attempt_id"]
    want_images = {"ok": summary["images_ok"], "error": summary["images_error"]}
    deadline, last = time.time() + 90, []
    while time.time() < deadline:  # Ray's core worker reports its metrics every few seconds
        last = scrape(url)
        if (by_label(last, "ray_annotator_images_total", job, "status") == want_images
                and by_label(last, "ray_annotator_errors_total", job, "reason") == summary["errors_by_reason"]):
            break
        time.sleep(1)
    assert by_label(last, "ray_annotator_images_total", job, "status") == want_images, last
    assert by_label(last, "ray_annotator_errors_total", job, "reason") == summary["errors_by_reason"]
    batches = sum(v for n, labels, v in last if n == "ray_annotator_batch_seconds_count" and labels["job"] == job)
    assert batches == 15  # one call per photo (batch_size 1); the broken file never reached the model
    assert any(n == "ray_annotator_commit_queue" and labels["job"] == job for n, labels, _ in last)
    restarts = [v for n, labels, v in last if n == "ray_annotator_actor_restarts_total" and labels["job"] == job]
    assert restarts == [1.0], restarts  # Ray restarted the killed actor once, and the job went on
    progress = json.loads((out / "_progress.json").read_text())
    live = progress["metrics"]
    assert live["images"] == want_images and live["errors_by_reason"] == summary["errors_by_reason"]
    assert live["batches"] == 15 and live["actor_restarts"] == 1 and live["queue_depth"] == 0
    assert live["endpoint"] == url
    # and mid-job: some scrape before the end already showed this job's images, fewer than all
    seen = [sum(by_label(s, "ray_annotator_images_total", job, "status").values()) for s in scrapes]
    assert any(0 < n for n in seen), seen
