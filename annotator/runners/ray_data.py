"""Ray Data runner: a thin adapter that wires the stage functions into one streaming graph and
commits shards from the driver.

    from_items(shard rows)                      the frozen plan's shards still to do
      -> map_batches(read_shards)   CPU tasks  I/O: one shard in, member batches with bytes out
      -> map_batches(decode_batch)  CPU tasks  Pillow/PyAV, EXIF, limits, cameras
      -> map_batches(InferenceStage) actor pool (min..max), num_gpus per actor: model loaded once
      -> driver: rows grouped by shard; a complete shard is committed (sink) by a thread pool

Why these choices:
* Decode runs in CPU tasks, never fused into the GPU actor: the actor's remote args (bounded
  restarts/retries, GPUs) differ from the decode tasks', and Ray Data fuses only identical ones.
* Rounds: a shard that failed (unreadable tar, inference batch timing out, a lost block) is retried
  in a fresh round, at most ``shard_attempts`` times; then it is named and the job exits non-zero,
  after everything else is committed. Nothing can hang the tail: reads and inference calls have
  timeouts, actors bounded restarts, and Ray Data's no-progress guard ends a stalled round.
* One driver decides what commits, under the output lock, so exactly-once per shard follows from
  the sink's commit protocol; ``collect.ShardCollector`` keeps one copy of each row in case Ray re-executes
  a task. The part itself (Parquet, sha256, upload, commit record, publish) is written on a driver
  thread, or with ``compute.commit_on = "workers"`` in a Ray task (``commit_task``): the same
  protocol and the same ``commit.commit_shard``, so one driver can feed more GPUs (``bench/driver.py``).
  Each shard is still submitted once and waited for; the task checks the lock's token first (as
  Beam's workers do) and is re-run by Ray only if its worker died.
* ``memory://`` is refused (``RunSpec.validate``): it lives in the driver's process, out of the
  workers' reach.
"""

from __future__ import annotations

import logging
import time
import warnings
from functools import partial

import pyarrow as pa

from annotator.pipeline import budget, errors, infer, stages
from annotator.pipeline import plan as plan_mod
from annotator.pipeline.budget import ErrorBudgetExceeded
from annotator.pipeline.collect import ShardCollector
from annotator.pipeline.commit import commit_shard
from annotator.pipeline.lock import LockLostError, read_lock
from annotator.pipeline.progress import ProgressBar
from annotator.pipeline.sequence import CommitOrder
from annotator.pipeline.shards import from_ipc, to_ipc
from annotator.pipeline.sink import DatasetSink
from annotator.pipeline.spec import RunSpec
from annotator.runners import job as job_mod
from annotator.runners.checkin import ActorRegistry, check_in
from annotator.runners.job import ClusterError, Job
from annotator.runners.metrics import JobMetrics
from annotator.runners.ray_cluster import check_cpus, init_ray, pool_fits

log = logging.getLogger(__name__)

_SINKS: dict[tuple, DatasetSink] = {}


def commit_task(sink_args: tuple, lock_token: str, shard_id: str, rows: bytes | list[pa.Table],
                only: list[str] | None,
                old_record: dict | None, attempt: int, seq, continue_previous: bool) -> tuple[dict, dict]:
    """One shard's commit in a Ray task (``compute.commit_on = "workers"``): ``commit.commit_shard``,
    as a driver thread would run it, after checking that the output lock still names this job (the
    driver's heartbeat is not in this process). ``rows``: the shard's rows as one Arrow IPC stream
    (pickling the tables instead cost the driver more than writing the Parquet part itself: each
    piece's nested schema and every column chunk are Python objects). Returns (commit record, this
    run's stats)."""
    output, so, file_metadata, fingerprint, attempt_id = sink_args
    key = (output, attempt_id)
    sink = _SINKS.get(key)
    if sink is None:
        _SINKS.clear()  # one job at a time per worker process
        sink = _SINKS[key] = DatasetSink(output, storage_options=so, attempt=attempt_id)
    sink.file_metadata, sink.fingerprint = file_metadata, fingerprint
    if (read_lock(output, so) or {}).get("token") != lock_token:
        raise LockLostError(f"the lock of {output} was taken over by another job")
    tables = [from_ipc(rows)] if isinstance(rows, bytes) else rows  # or the tables themselves
    return commit_shard(sink, shard_id, tables, only, old_record, attempt, seq, continue_previous)


class RayJob(Job):
    """The Ray Data runner: an embedded or remote Ray, a streaming graph per round, commits on
    driver threads as each shard's last row arrives."""

    runner = "ray"

    def start(self) -> None:
        local = init_ray(self.spec.compute.ray_address)  # first: it sets what Ray reads when imported
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        check_cpus(self.spec.compute, float(ray.cluster_resources().get("CPU", 0)), fixed=local)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.execution_options.verbose_progress = False
        ctx.execution_no_progress_timeout_s = self.spec.compute.no_progress_timeout_s
        ctx.max_errored_blocks = -1  # a block that fails after retries costs its shards this round only
        # on the driver's own node: a registry on a node that is lost would take every actor's
        # check-in with it (and the driver outlives no loss of its own node anyway)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.registry = ray.remote(num_cpus=0)(ActorRegistry).options(scheduling_strategy=here).remote()
        # re-run only when its worker died (an exception is the shard's, for the next round)
        self.commit_remote = ray.remote(num_cpus=self.spec.compute.commit_cpus, max_retries=2)(commit_task)
        self.metrics = JobMetrics(self.stats, self.sink.attempt)  # Prometheus and _progress.json

    def commit(self, shard_id: str, tables: list[pa.Table], only: list[str] | None, attempt: int,
               continue_previous: bool = True) -> dict:
        """On a driver thread (the default), or in a Ray task with ``commit_on = "workers"``: the
        driver then only ships the shard's rows and folds the record in."""
        if self.spec.compute.commit_on != "workers":
            return super().commit(shard_id, tables, only, attempt, continue_previous)
        import ray

        started = time.perf_counter()
        self.lock.check()
        sink_args = (self.output, self.so, self.sink.file_metadata, self.fp, self.sink.attempt)
        ref = self.commit_remote.remote(sink_args, self.lock.token, shard_id, to_ipc(pa.concat_tables(tables)), only,
                                        self.committed.get(shard_id) if only is not None else None, attempt,
                                        self.sequences.get(shard_id), continue_previous)
        try:
            rec, run_stats = ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, LockLostError):
                raise e.cause from None
            raise
        self.record_commit(shard_id, rec, run_stats, time.perf_counter() - started, repaired=only is not None)
        return rec

    def describe_skeleton(self) -> dict:
        """From the model's build info, else loaded in a Ray task: the driver never imports TensorFlow."""
        known = infer.known_skeleton(self.model.path, self.spec.settings.skeleton)
        if known is not None:
            return known
        import ray

        describe = ray.remote(num_cpus=0)(infer.load_skeleton)
        return ray.get(describe.remote(self.model.path, self.spec.settings.skeleton, self.actor_model, self.so))

    def finish_rounds(self) -> None:
        import ray

        self.metrics.poll(force=True)
        try:
            self.stats.add_actors(ray.get(self.registry.all.remote(), timeout=60))
        except Exception as e:  # noqa: BLE001 - the summary then lists the actors that labelled rows only
            log.warning("the actor registry did not answer (%s): the summary lists only actors that sent rows",
                        errors.describe(e))

    def min_actors(self, attempt: int) -> int:
        """The pool a round waits for: the whole pool first (a cluster without the GPUs fails fast),
        one actor in a retry round. A round that lost a node (its actors restart nowhere: no GPU
        left) would otherwise wait for the lost pool and fail the job; with one, the nodes that
        are left finish it, and the pool grows again as nodes come back."""
        return self.spec.compute.actors if attempt == 1 else 1

    def actor_wait_s(self, attempt: int) -> int:
        """How long reading waits for the round's minimum actor pool (Ray Data's
        ``wait_for_min_actors_s``; -1: not at all).

        A pool of one actor (the local default, and every retry round) on a cluster that already
        has its resources: reading and decoding start at once, beside the actor's start-up
        (TensorFlow import, model load, warm-up: ~10 s of one core on a CPU), so the first batch is
        decoded and waiting when the actor is ready. A larger pool waits until all of it is up, so
        that work is spread over every actor from the first batch (else the first one ready takes
        a small job alone). Where the cluster lacks the pool's resources (GPU nodes still booting),
        reading waits too, and a cluster that never provides them fails within
        ``actor_start_timeout_s`` instead of reading into a stall. (Resources the cluster has but
        another job holds are waited for as any task waits, up to the no-progress timeout.)"""
        import ray

        c = self.spec.compute
        n = self.min_actors(attempt)
        return -1 if n == 1 and pool_fits(c, n, ray.cluster_resources()) else int(c.actor_start_timeout_s)

    def labels(self, plan: plan_mod.Plan, items: list[dict], attempt: int):
        """A round's label stream: shard rows -> read -> decode -> infer, as a Ray Dataset of label
        tables (``bench/driver.py`` replaces it with free synthetic labels to measure the driver)."""
        import ray

        c = self.spec.compute
        ray.data.DataContext.get_current().wait_for_min_actors_s = self.actor_wait_s(attempt)
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 10_000)))
        ds = ds.map_batches(stages.read_shards, batch_size=1, batch_format="numpy", num_cpus=c.read_cpus,
                            fn_kwargs=self.read_kwargs(plan))
        ds = ds.map_batches(stages.decode_batch, batch_size=c.batch_size, num_cpus=c.decode_cpus, batch_format="numpy",
                            fn_kwargs=self.decode_kwargs())
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for bounded actor restarts/retries yet (the default is
            # unbounded: a poison batch would be retried forever), so they go as ray_remote_args.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                stages.InferenceStage, batch_size=c.batch_size, batch_format="numpy",
                fn_constructor_kwargs={**self.inference_kwargs(), "on_ready": partial(check_in, self.registry)},
                compute=ray.data.ActorPoolStrategy(min_size=self.min_actors(attempt),
                                                   max_size=c.max_actors or c.actors),
                num_cpus=c.cpus_per_actor, num_gpus=c.gpus_per_actor or None,
                max_restarts=c.actor_max_restarts, max_task_retries=c.actor_task_retries)
        return ds

    def run_round(self, plan: plan_mod.Plan, work: dict[str, list[str] | None], attempt: int,
                  bar: ProgressBar) -> dict[str, str]:
        import ray

        c = self.spec.compute
        ds = self.labels(plan, self.shard_items(plan, work), attempt)
        collector = ShardCollector(
            work, CommitOrder(self.sequences, set(self.committed), set(work)),
            lambda shard_id, tables, ok: self.pool.submit(self.commit, shard_id, tables, work[shard_id], attempt, ok),
            max_pending=4 * c.commit_threads, last_round=attempt == c.shard_attempts)
        round_error = None
        try:
            # No prefetch: the blocks are small label tables, and a prefetch window of N holds back
            # the last N finished blocks, so each shard's commit (and the progress bar) lagged N
            # actor tasks behind its inference (bench/README.md has the measurement).
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
                self.lock.check()
                self.stats.add_processed(table)
                self.check_budget(table)  # before the rows commit: a stopping actor's rows are not written
                collector.add(table)
                self.metrics.add(table)
                self.metrics.set_queue(len(collector.futures) + len(collector.waiting))
                bar.update(self.stats, table.num_rows)
                self.tick()
        except (LockLostError, ErrorBudgetExceeded):
            raise
        except ray.exceptions.GetTimeoutError as e:
            # the minimum actor pool never came up: retrying would wait again for the same resources
            raise ClusterError(f"the inference actors did not start within {c.actor_start_timeout_s:g} s: does "
                               f"the cluster have {c.actors} x (CPU {c.cpus_per_actor:g}, GPU "
                               f"{c.gpus_per_actor:g}) free? ({e})") from None
        except Exception as e:  # noqa: BLE001 - e.g. Ray's no-progress guard: retry what is left
            if budget.MARK in str(e):  # an actor that could not start (its warm-up failed)
                raise ErrorBudgetExceeded(budget.stop_message(str(e))) from None
            round_error = errors.describe(e)
            log.error("round %d ended early: %s", attempt, round_error)
        failures = self.round_failures(work, collector.finish(), round_error, collector.why_incomplete)
        self.metrics.set_queue(0)
        return failures


def run(spec: RunSpec) -> dict:
    """Run a job on Ray; returns the run summary (also written to ``OUTPUT/_summary.json``)."""
    return job_mod.run(RayJob, spec)
