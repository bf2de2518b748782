"""What every runner shares: the frozen plan, fingerprints, the work list, the exactly-once shard
commit, retry rounds and the run summary. A runner (Ray Data, Beam) subclasses ``Job`` and
implements ``start`` (connect to its engine) and ``run_round`` (push the given shards through
read -> decode -> infer and commit them); everything a user can observe on disk is decided here,
so both runners write the same output.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from annotator.labels import schema
from annotator.models import loader, registry
from annotator.outputs import card
from annotator.pipeline import changes, errors, infer, layout, redact, retries, rig, sequence, sources, versions
from annotator.pipeline import plan as plan_mod
from annotator.pipeline.budget import ErrorBudget, ErrorBudgetExceeded
from annotator.pipeline.commit import commit_shard
from annotator.pipeline.fingerprint import check_committed, for_plan
from annotator.pipeline.lock import OutputLock
from annotator.pipeline.progress import ProgressBar, RunStats
from annotator.pipeline.sink import DatasetSink, manifest_totals
from annotator.pipeline.spec import RunSpec
from annotator.pipeline.upright import check_world_up

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The cluster cannot run the job as specified (e.g. not enough GPUs for the actor pool)."""


class Job:
    """One run of a spec against an output: everything but the engine that moves the rows."""

    runner = "?"

    def __init__(self, spec: RunSpec, model: loader.ResolvedModel, lock: OutputLock):
        self.spec, self.model, self.lock = spec, model, lock
        self.so = spec.storage_options
        self.output = self.root = sources.absolute(spec.output)  # output: the version folder this run writes
        self.input = sources.absolute(spec.input)
        self.sink = DatasetSink(self.output, storage_options=self.so)
        self.version = versions.version(self.root, 1)
        # what the workers resolve on their own node: a remote URI or built-in name as given, a local
        # folder as the absolute path the driver found
        given = spec.model
        self.actor_model = given if loader.is_remote(given) or given == model.reference and \
            not os.path.exists(os.path.expanduser(given)) else model.path
        self.stats = RunStats()
        self.budget = ErrorBudget.for_run(spec.max_error_rate, spec.retry_errors)
        self.pool = ThreadPoolExecutor(spec.compute.commit_threads, thread_name_prefix="annotator-commit")
        self.committed: dict[str, dict] = {}
        self.totals = manifest_totals([])  # over ``committed``, kept as commits land: no O(shards) per tick
        self.totals_lock = threading.Lock()
        self.committed_now: set[str] = set()
        self.shards_total, self.last_manifest, self.last_progress = 0, 0.0, 0.0
        self.sequences: dict[str, sequence.ShardSequence] = {}
        self.temporal = sequence.TemporalSettings(consistency=spec.temporal, overlap=spec.video_overlap)

    # -- setup ---------------------------------------------------------------------------------

    def use_version(self, v: versions.Version) -> None:
        """Write version ``v`` (``pipeline.versions``): its folder, under the output's lock."""
        self.version, self.output = v, v.uri
        self.sink = DatasetSink(v.uri, storage_options=self.so)
        if v.number > 1:
            self.lock.delegate(v.uri)  # its workers check the lock in the folder they write
        self.sink.makedirs()

    def prepare(self) -> tuple[plan_mod.Plan, bool]:
        if self.spec.overwrite:
            self.sink.reset()  # every version
        self.use_version(versions.newest(self.root, self.so))
        opts = plan_mod.PlanOptions(self.input, self.spec.kind, self.spec.shard_size, self.spec.video_every,
                                    self.spec.video_overlap)
        opts = rig.plan_options(opts, self.spec, self.input)  # a rig: its checked views
        plan = plan_mod.load(sources.join(self.output, layout.PLAN), self.so)
        self.committed = self.sink.committed()
        if plan is not None and self.committed:  # another model or settings: a new version (or refused)
            fp, doc, _ = for_plan(self.spec, self.model.sha256, plan, self.temporal)
            new = versions.successor(self.version, self.committed, fp, doc, self.model.to_dict(), self.spec, self.so)
            if new is not None:
                self.use_version(new)
                plan, self.committed = None, {}
        reused, self.changes = plan is not None, None
        if plan is None:
            plan = plan_mod.create(opts, sources.join(self.output, layout.PLAN), self.so)
        else:
            plan.check_options(opts)
            if not self.spec.frozen and plan.kind != rig.KIND:  # new inputs: --append or refused, never left out
                plan, self.changes = changes.reconcile(plan, opts, self.so, append=self.spec.append)
        fp, self.components, self.sequences = for_plan(self.spec, self.model.sha256, plan, self.temporal)
        check_committed(self.output, self.committed, fp, self.components,
                        (self.sink.read_json(layout.FINGERPRINT) or {}).get("components", {}))
        self.sink.write_json(layout.FINGERPRINT, {"fingerprint": fp, "components": self.components})
        self.sink.fingerprint = self.fp = fp
        self.totals = manifest_totals(self.committed.values())
        # a final manifest would be trusted by readers while this run publishes new parts
        self.sink.write_manifest(self.committed, final=False, totals=self.totals, shards_total=plan.num_shards)
        check_world_up(plan, self.spec.settings.world_up_vector, self.so)  # a warning before the work
        return plan, reused

    def error_ids(self, records: dict[str, dict]) -> dict[str, list[str]]:
        """``--retry-errors``: the image ids of the error rows of committed shards."""
        todo = [r for r in records.values() if r["rows_error"] > 0]

        def ids(rec: dict) -> tuple[str, list[str]]:
            t = self.sink.read_part(rec)
            t = t.filter(pc.not_equal(t.column("status"), "ok"))
            return rec["shard"], t.column("image_id").to_pylist()
        with ThreadPoolExecutor(16) as ex:
            return dict(ex.map(ids, todo))

    def shard_items(self, plan: plan_mod.Plan, work: dict[str, list[str] | None]) -> list[dict]:
        """The plan rows of the shards in ``work``, as the read stage takes them."""
        items = []
        for row in plan.rows(set(work)):
            only = work[row["shard"]]
            # no None in string columns: Ray turns an all-null column into NaN floats
            row = {k: ("" if v is None and plan_mod.SHARD_SCHEMA.field(k).type == pa.string() else v)
                   for k, v in row.items()}
            items.append({**row, "only": json.dumps(only) if only is not None else ""})
        return items

    def read_kwargs(self, plan: plan_mod.Plan) -> dict:
        c = self.spec.compute
        # blocks of the inference batch (each block costs the driver's Ray Data executor the same,
        # whatever its rows), fetched ``read_batch`` objects at a time
        return {"plan_uri": plan.uri, "storage_options": self.so, "batch_size": max(c.batch_size, c.read_batch),
                "timeout_s": c.read_timeout_s, "retries": c.read_retries, "fetch": c.read_batch}

    def decode_kwargs(self) -> dict:
        return {"max_pixels": self.spec.max_pixels, "default_fov_degrees": self.spec.settings.default_fov_degrees}

    def inference_kwargs(self) -> dict:
        """``stages.InferenceStage``'s arguments: the model the workers resolve, checked against the
        sha256 the driver fingerprinted."""
        c = self.spec.compute
        return {"model": self.actor_model, "settings": self.spec.settings, "batch_timeout_s": c.batch_timeout_s or None,
                "batch_retries": c.batch_retries, "expected_sha256": self.model.sha256, "storage_options": self.so,
                "first_batches": self.budget.first_batches}

    def round_failures(self, work: dict[str, list[str] | None], failures: dict[str, str], round_error: str | None,
                       pending: Callable[[str], str]) -> dict[str, str]:
        """The shards of ``work`` that did not commit this round, with why: their own failure, else
        the error that ended the round early, else ``pending(shard)``."""
        for shard_id in work:
            if shard_id not in self.committed_now and shard_id not in failures:
                failures[shard_id] = errors.text(errors.ROUND_ERROR, round_error) if round_error else pending(shard_id)
        return failures

    # -- commit ---------------------------------------------------------------------------------

    def commit(self, shard_id: str, tables: list[pa.Table], only: list[str] | None, attempt: int,
               continue_previous: bool = True) -> dict:
        """Commit on this process (a driver thread), under the output lock."""
        started = time.perf_counter()
        self.lock.check()
        rec, run_stats = commit_shard(self.sink, shard_id, tables, only,
                                      self.committed.get(shard_id) if only is not None else None, attempt,
                                      self.sequences.get(shard_id), continue_previous)
        self.record_commit(shard_id, rec, run_stats, time.perf_counter() - started, repaired=only is not None)
        return rec

    def record_commit(self, shard_id: str, rec: dict, run_stats: dict, seconds: float, repaired: bool) -> None:
        self.stats.add_shard(run_stats, seconds, repaired=repaired)
        with self.totals_lock:
            old = self.committed.get(shard_id)
            if old is not None:
                manifest_totals([old], self.totals, sign=-1)
            manifest_totals([rec], self.totals)
            self.committed[shard_id] = rec
            self.committed_now.add(shard_id)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last_progress > 5:
            self.last_progress = now
            self.sink.write_json(layout.PROGRESS, self.stats.progress(
                state="running", attempt_id=self.sink.attempt, dataset=self.dataset_totals()))
        if force or now - self.last_manifest > self.spec.manifest_interval_s:
            self.last_manifest = now
            self.sink.write_manifest(self.committed, final=False, totals=self.dataset_totals(),
                                     shards_total=self.shards_total)

    def check_budget(self, table: pa.Table | None = None) -> None:
        """Stop the job (``ErrorBudgetExceeded``) when an actor's rows say the model cannot run
        (``_stop``), or the inference errors so far pass the budget (``pipeline.budget``)."""
        if table is not None and "_stop" in table.column_names:
            stops = [s for s in pc.unique(table.column("_stop")).to_pylist() if s]
            if stops:
                raise ErrorBudgetExceeded(stops[0])
        self.budget.check_rate(self.stats.inferred, self.stats.inference_errors)

    def dataset_totals(self) -> dict:
        with self.totals_lock:
            t = {**self.totals, "errors_by_reason": dict(sorted(self.totals["errors_by_reason"].items()))}
        return {"shards_total": self.shards_total, **t}

    # -- what a runner implements ---------------------------------------------------------------

    def start(self) -> None:
        """Connect to the engine (after the plan is frozen, before the first round)."""

    def describe_skeleton(self) -> dict:
        """Joint names and edges for the file metadata (a runner may load the model elsewhere)."""
        return infer.known_skeleton(self.model.path, self.spec.settings.skeleton) or infer.load_skeleton(
            self.model.path, self.spec.settings.skeleton)

    def run_round(self, plan: plan_mod.Plan, work: dict[str, list[str] | None], attempt: int,
                  bar: ProgressBar) -> dict[str, str]:
        """Process and commit the shards in ``work``; returns those that did not commit, with reasons."""
        raise NotImplementedError

    def finish_rounds(self) -> None:
        """After the last round, before the summary (e.g. fold engine-side counters into the stats)."""

    # -- the job ------------------------------------------------------------------------------------

    def run(self) -> dict:
        plan, reused = self.prepare()
        self.shards_total = plan.num_shards
        self.start()
        self.sink.file_metadata = schema.file_metadata(self.model.to_dict(), self.describe_skeleton(),
                                                       self.spec.settings.to_dict(),
                                                       self.temporal.to_dict() if self.sequences else None)
        work: dict[str, list[str] | None] = {s: None for s in plan.shard_ids() if s not in self.committed}
        if self.spec.retry_errors:
            work.update(self.error_ids(self.committed))
        self.stats.shards_skipped, self.stats.shards_todo = plan.num_shards - len(work), len(work)
        sizes = dict(zip(plan.shard_ids(), plan.shards.column("members").to_pylist(), strict=True))
        known = [len(only) if only is not None else sizes[s] for s, only in work.items()]
        bar = ProgressBar(None if any(n < 0 for n in known) else sum(known), enabled=self.spec.progress)
        failures: dict[str, str] = {}
        rounds, stopped = 0, None
        try:
            for attempt in range(1, self.spec.compute.shard_attempts + 1):
                if not work:
                    break
                rounds += 1
                failures = self.run_round(plan, work, attempt, bar)
                bar.refresh(self.stats)
                self.check_budget()
                work = {s: work[s] for s in failures}
                if work:
                    log.warning("round %d: %d shard(s) to retry: %s", attempt, len(work),
                                "; ".join(f"{s}: {r}" for s, r in list(failures.items())[:5]))
        except ErrorBudgetExceeded as e:  # what committed stays; the rest waits for a rerun
            stopped = str(e)
        finally:
            bar.close()
        self.stats.failed_shards = dict(failures) if work and not stopped else {}
        self.finish_rounds()
        manifest = self.sink.write_manifest(self.committed, final=True, shards_total=plan.num_shards)
        complete = not stopped and not self.stats.failed_shards and manifest["shards_committed"] >= plan.num_shards
        version = versions.finish(self.version, self.so, self.model.to_dict(), self.components, plan, complete)
        self.stats.storage_retries += retries.take()  # the driver's own (plan, commits, manifests, lock)
        summary = self.stats.summary(
            output=self.version.ref if version else self.root, version=version, input=self.input,
            model=self.model.to_dict(), shards_total=plan.num_shards, license=self.spec.license,
            rows_in_dataset=manifest["rows"], dataset={k: manifest[k] for k in (
                "shards_committed", "rows", "rows_ok", "rows_error", "people", "errors_by_reason")},
            fingerprint=self.fp, attempt_id=self.sink.attempt, rounds=rounds, runner=self.runner, stopped=stopped,
            plan={"kind": plan.kind, "reused": reused, "num_shards": plan.num_shards,
                  "num_members": plan.num_members, "planning_seconds": plan.meta.get("planning_seconds"),
                  "changes": self.changes})
        summary = redact.obj(summary)  # its URIs (input, output, error texts) without credentials
        self.sink.write_json(layout.SUMMARY, summary)
        self.sink.write_json(layout.PROGRESS, self.stats.progress(
            state="stopped" if stopped else "failed" if summary["shards_failed"] else "finished",
            attempt_id=self.sink.attempt, dataset=self.dataset_totals()))
        try:
            card.write_card(self.version.ref if version else self.root, self.so,
                            licence=registry.info(self.model.path).get("licence"), labels_licence=self.spec.license)
        except Exception as e:  # noqa: BLE001 - the labels are committed; `annotator card` rewrites the card
            log.warning("could not write the dataset card: %s", e)
        return summary


def run(job_cls: type[Job], spec: RunSpec) -> dict:
    """Run a job with the runner ``job_cls``; returns the run summary (also ``OUTPUT/_summary.json``)."""
    spec.validate()
    model = loader.resolve(spec.model, storage_options=spec.storage_options)
    lock = OutputLock(sources.absolute(spec.output), spec.storage_options, spec.lock_heartbeat_s, spec.lock_stale_s)
    with lock:
        job = job_cls(spec, model, lock)
        try:
            return job.run()
        finally:
            job.pool.shutdown(wait=True)
