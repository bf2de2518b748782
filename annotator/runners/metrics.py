"""Live metrics of a Ray job: images, errors by reason, inference batch latency, the commit queue
and inference actor restarts, exported through ``ray.util.metrics``.

Why here and recorded on the driver: every label table reaches the driver loop (``RayJob.run_round``)
with the columns the metrics need (``status``, ``error``, ``_fail``, ``_infer_s``, ``_actor``,
``_done_at``), so one process records them once, and the pipeline package stays engine-free (it
must not import Ray). Ray's metrics agent on the driver's node serves them on its Prometheus
endpoint (``ray_annotator_*``; the Ray dashboard's metrics page reads the same), tagged with the
job's attempt id so that two runs through one Ray never add up. The same counters go into
``RunStats.live``, so ``_progress.json`` shows them where no Prometheus is scraping.

Counted as rows arrive (a row Ray re-executes is counted again; the summary counts committed rows),
so at the end of a clean job the counts equal the summary's. Restarts are Ray's own count
(``NumRestarts`` in the GCS actor table), polled at most every ``POLL_S``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from annotator.pipeline import errors
from annotator.pipeline.progress import RunStats

log = logging.getLogger(__name__)

PREFIX = "annotator_"
# seconds per inference call: from a tiny CPU model's milliseconds to a stuck batch's timeout
BATCH_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600]
POLL_S = 5.0
# the env var that fixes the embedded local Ray's Prometheus port (``ray_cluster.init_ray``)
PORT_ENV = "ANNOTATOR_METRICS_PORT"


def metrics_port() -> int | None:
    """The Prometheus port asked for in ``ANNOTATOR_METRICS_PORT`` (None: Ray picks a free one)."""
    value = os.environ.get(PORT_ENV, "").strip()
    return int(value) if value else None


def endpoint() -> str | None:
    """``http://IP:PORT/metrics`` of the metrics agent on this driver's node, once Ray is up."""
    import ray

    here = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == here and node.get("MetricsExportPort"):
            return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    return None


class JobMetrics:
    """The job's counters, exported through ``ray.util.metrics`` and mirrored in ``stats.live``."""

    def __init__(self, stats: RunStats, job: str):
        from ray.util import metrics

        self.stats, self.tags = stats, {"job": job}
        keys = ("job",)
        self.images = metrics.Counter(PREFIX + "images", "label rows out of inference, by status "
                                      "(ok, error: an error row; failed: its shard is retried)", ("job", "status"))
        self.errors = metrics.Counter(PREFIX + "errors", "error rows by reason code", ("job", "reason"))
        self.batches = metrics.Histogram(PREFIX + "batch_seconds", "seconds per inference call (one actor batch)",
                                         BATCH_BOUNDARIES, keys)
        self.queue = metrics.Gauge(PREFIX + "commit_queue", "complete shards waiting for or in their commit", keys)
        self.restarts = metrics.Counter(PREFIX + "actor_restarts", "inference actor restarts (Ray's count)", keys)
        self.counts = {"images": Counter(), "errors_by_reason": Counter(), "batches": 0, "batch_seconds": 0.0,
                       "queue_depth": 0, "actor_restarts": 0}
        self.last_poll = 0.0
        self.url = None
        try:
            self.url = endpoint()
        except Exception as e:  # noqa: BLE001 - the job runs without knowing where its metrics are served
            log.info("no metrics endpoint found: %s", errors.describe(e))
        log.info("live metrics: %s", self.url or "on the Ray dashboard")
        self._publish()

    def add(self, table: pa.Table) -> None:
        """Count one label table from the driver loop (column-wise: the driver's time is the
        job's throughput at scale, docs/scaling.md)."""
        images, reasons = row_counts(table)
        for k, n in images.items():
            self.images.inc(n, {**self.tags, "status": k})
        for k, n in reasons.items():
            self.errors.inc(n, {**self.tags, "reason": k})
        self.counts["images"].update(images)
        self.counts["errors_by_reason"].update(reasons)
        for seconds in batch_seconds(table):
            self.batches.observe(seconds, self.tags)
            self.counts["batches"] += 1
            self.counts["batch_seconds"] += seconds
        self.poll()

    def set_queue(self, depth: int) -> None:
        self.queue.set(depth, self.tags)
        self.counts["queue_depth"] = depth
        self._publish()

    def poll(self, force: bool = False) -> None:
        """Fold in Ray's restart count of this job's inference actors (a GCS call: not per table)."""
        now = time.time()
        if not force and now - self.last_poll < POLL_S:
            return
        self.last_poll = now
        try:
            total = actor_restarts()
        except Exception as e:  # noqa: BLE001 - a private Ray API: a metric, never the job's failure
            log.info("actor restarts unknown: %s", errors.describe(e))
            return
        if total > self.counts["actor_restarts"]:
            self.restarts.inc(total - self.counts["actor_restarts"], self.tags)
            self.counts["actor_restarts"] = total
        self._publish()

    def _publish(self) -> None:
        c = self.counts
        with self.stats.lock:
            self.stats.live = {"images": dict(sorted(c["images"].items())),
                               "errors_by_reason": dict(sorted(c["errors_by_reason"].items())),
                               "batches": c["batches"], "batch_seconds": round(c["batch_seconds"], 3),
                               "queue_depth": c["queue_depth"], "actor_restarts": c["actor_restarts"],
                               "endpoint": self.url}


def row_counts(table: pa.Table) -> tuple[Counter, Counter]:
    """(rows by status: ok, error, failed; error rows by reason code). ``failed``: the rows of a
    shard that failed this round (``_fail``: a timeout, a lost block), retried in the next one."""
    n = table.num_rows
    failed = (pc.fill_null(pc.not_equal(table.column("_fail"), ""), False) if "_fail" in table.column_names
              else pa.array([False] * n))
    ok = pc.and_(pc.equal(table.column("status"), "ok"), pc.invert(failed))
    images = Counter({"failed": int(pc.sum(failed).as_py() or 0), "ok": int(pc.sum(ok).as_py() or 0)})
    images["error"] = n - images["failed"] - images["ok"]
    reasons: Counter = Counter()
    bad = pc.and_(pc.invert(ok), pc.invert(failed))
    for column, mask in (("error", bad), ("_fail", failed)):
        if images["error" if column == "error" else "failed"]:
            for item in pc.value_counts(pc.filter(table.column(column), mask)).to_pylist():
                reasons[errors.reason(item["values"])] += item["counts"]
    return +images, reasons


def batch_seconds(table: pa.Table) -> list[float]:
    """Seconds of each inference call among the rows: the rows of one call share (``_actor``,
    ``_done_at``), and each carries its share of the call (``_infer_s``)."""
    if "_infer_s" not in table.column_names or not table.num_rows:
        return []
    keys = pa.table({"a": table.column("_actor"), "t": table.column("_done_at"), "s": table.column("_infer_s")})
    sums = keys.group_by(["a", "t"]).aggregate([("s", "sum")]).column("s_sum")
    return [s for s in pc.cast(sums, pa.float64()).to_pylist() if s > 0]  # 0: a batch of error rows only


def inference_actors() -> list[dict]:
    """This job's Ray Data map actors (the inference pool; the actor registry is no map actor), as
    the GCS actor table has them: state, pid, node and ``NumRestarts``."""
    import ray
    from ray._private import state

    job = ray.get_runtime_context().get_job_id()
    return [a for a in state.state.actor_table(None).values()
            if a.get("JobID") == job and "MapWorker" in str(a.get("ActorClassName", ""))]


def actor_restarts() -> int:
    """Restarts of this job's inference actors, Ray's own count."""
    return sum(int(a.get("NumRestarts") or 0) for a in inference_actors())
