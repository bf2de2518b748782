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
* One driver commits, under the output lock, so exactly-once per shard follows from the sink's
  commit protocol; rows are de-duplicated by image id in case Ray re-executes a task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from annotator import plan as plan_mod
from annotator import schema, sources, stages
from annotator.infer import skeleton_of
from annotator.lock import LockLostError, OutputLock
from annotator.models import loader, registry
from annotator.progress import ProgressBar, RunStats, shard_stats
from annotator.sink import DatasetSink
from annotator.spec import ComputeSpec, RunSpec

log = logging.getLogger(__name__)

# Environment the workers need as well (emulators, gcsfs switches, endpoints).
PROPAGATED_ENV = ("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL",
                  "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                  "GOOGLE_APPLICATION_CREDENTIALS", "TF_CPP_MIN_LOG_LEVEL")


class FingerprintError(RuntimeError):
    """The output holds shards made with another model, settings, schema or plan."""


class ClusterError(RuntimeError):
    """The cluster cannot run the job as specified (e.g. not enough GPUs for the actor pool)."""


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None) -> None:
    """Connect to ``address`` or start an embedded local Ray that stays on loopback."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    env = {k: os.environ[k] for k in PROPAGATED_ENV if k in os.environ}
    kwargs = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING,
              "configure_logging": True, "runtime_env": {"env_vars": env} if env else None}
    quiet = not logging.getLogger().isEnabledFor(logging.INFO)
    if quiet:  # Ray's notice that token authentication is on (its default) is not news to our users
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)
    quiet_ray_logs()


class ActorRegistry:
    """Where each inference actor checks in once its model is loaded and warmed up (a Ray actor with
    no CPU). The run summary then lists every actor the pool started, with its GPU and start-up
    times, including one that never got a batch: rows alone would hide it."""

    def __init__(self) -> None:
        self.actors: dict[str, dict] = {}

    def register(self, actor: str, info: dict) -> None:
        self.actors[actor] = info

    def all(self) -> dict[str, dict]:
        return self.actors


def check_cpus(c: ComputeSpec, cluster_cpus: float, fixed: bool) -> None:
    """Fail fast where the actor pool would take every CPU: Ray would then never schedule a read
    or decode task and the job would wait, silently, until the no-progress timeout. Only for a
    cluster that cannot grow (the embedded local Ray); an autoscaling one may add nodes."""
    need = c.actors * c.cpus_per_actor + max(c.read_cpus, c.decode_cpus)
    if fixed and need > cluster_cpus + 1e-9:
        raise ClusterError(
            f"{c.actors} actor(s) x {c.cpus_per_actor:g} CPU leave no room for read ({c.read_cpus:g} CPU) and "
            f"decode ({c.decode_cpus:g} CPU) tasks on this Ray's {cluster_cpus:g} CPUs: the job would never "
            f"start. Lower --cpus-per-actor (the actor uses all cores whatever it reserves) or --actors.")


def quiet_ray_logs() -> None:
    """Keep Ray's start-up chatter (token-auth notice, "progress bars disabled", per-dataset INFO)
    out of the user's terminal: annotator prints its own progress and summary. ``-v`` restores it."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        return
    import ray.data  # noqa: F401 - configures the "ray.data" logger, whose console handler we quieten

    for handler in logging.getLogger("ray.data").handlers:
        if not hasattr(handler, "baseFilename"):  # console only; Ray's session log files keep everything
            handler.setLevel(logging.ERROR)


def _describe(model_path: str, skeleton: str, reference: str | None = None,
              storage_options: dict | None = None) -> dict:
    """Joint names/edges of the requested skeleton, without loading the model where possible (else
    in a Ray task, so the driver never imports TensorFlow)."""
    info = registry.info(model_path)
    skels = info.get("skeletons")
    if skels is not None:
        key = skeleton or info["native_skeleton"]
        if key not in skels:
            raise ValueError(f"unknown skeleton {skeleton!r}; this model has: {', '.join(sorted(skels))}")
        return {"name": skeleton or "all", **skels[key]}
    import ray

    @ray.remote(num_cpus=0)
    def describe() -> dict:
        import tensorflow as tf

        path = loader.resolve(reference, build_missing=False, storage_options=storage_options).path \
            if reference else model_path
        return skeleton_of(tf.saved_model.load(path), skeleton)

    return ray.get(describe.remote())


def fingerprint_doc(model: loader.ResolvedModel, spec: RunSpec, plan_hash: str) -> dict:
    return {"model_sha256": model.sha256, "settings": spec.settings.to_dict(),
            "schema_version": schema.version(), "plan_hash": plan_hash, "max_pixels": spec.max_pixels}


def fingerprint(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _absolute(uri: str) -> str:
    """Local paths become absolute (workers have another working directory); URIs stay as given."""
    if sources.protocol_of(uri) == "file" and "://" not in uri:
        return os.path.abspath(os.path.expanduser(uri))
    return uri


# ---------------------------------------------------------------------------------------------


@dataclass
class _Shard:
    """Driver-side state of one shard in the current round."""

    only: list[str] | None
    tables: list[pa.Table] = field(default_factory=list)
    ids: set = field(default_factory=set)
    expected: int | None = None
    fail: str | None = None
    submitted: bool = False


class _Collector:
    """Groups streamed rows by shard and commits complete shards on a thread pool."""

    def __init__(self, job: _Job, work: dict[str, list[str] | None], attempt: int):
        self.job = job
        self.attempt = attempt
        self.state = {s: _Shard(only) for s, only in work.items()}
        self.futures: dict[str, Future] = {}
        self.failures: dict[str, str] = {}

    def add(self, table: pa.Table) -> None:
        shard_col = table.column("shard")
        for shard_id in pc.unique(shard_col).to_pylist():
            st = self.state.get(shard_id)
            part = table.filter(pc.equal(shard_col, shard_id))
            if st is None or st.submitted or st.fail:
                continue
            fails = [f for f in part.column("_fail").to_pylist() if f]
            if fails:
                st.fail, st.tables, st.ids = fails[0], [], set()
                continue
            ids = part.column("image_id").to_pylist()
            keep = [i not in st.ids for i in ids]
            if not all(keep):  # a re-executed task: keep the first copy of each row
                part = part.filter(pa.array(keep))
                ids = [i for i, k in zip(ids, keep, strict=True) if k]
            st.ids.update(ids)
            st.tables.append(part)
            expected = pc.max(part.column("_shard_rows")).as_py()
            if expected is not None and expected >= 0:
                st.expected = expected
            if st.expected is not None and len(st.ids) >= st.expected:
                st.submitted = True
                tables, st.tables = st.tables, []
                self.futures[shard_id] = self.job.pool.submit(self.job.commit, shard_id, tables, st.only,
                                                              self.attempt)
        self.reap(block=len(self.futures) > 4 * self.job.spec.compute.commit_threads)

    def reap(self, block: bool = False) -> None:
        """Fold finished commits into the stats (``block``: wait for the oldest first)."""
        if block and self.futures:
            next(iter(self.futures.values())).exception()
        for shard_id in [s for s, f in self.futures.items() if f.done()]:
            future = self.futures.pop(shard_id)
            err = future.exception()
            if isinstance(err, LockLostError):
                raise err
            if err is not None:
                self.failures[shard_id] = f"commit_error: {type(err).__name__}: {err}"

    def finish(self, round_error: str | None) -> dict[str, str]:
        """Wait for commits; returns the shards of this round that did not commit, with reasons."""
        while self.futures:
            self.reap(block=True)
        for shard_id, st in self.state.items():
            if shard_id in self.failures or shard_id in self.job.committed_now:
                continue
            if st.fail:
                self.failures[shard_id] = st.fail
            elif round_error:
                self.failures[shard_id] = f"round_error: {round_error}"
            else:
                got = len(st.ids)
                want = "?" if st.expected is None else st.expected
                self.failures[shard_id] = (f"incomplete: {got} of {want} rows arrived (a task failed after its "
                                           f"retries; see the Ray logs)")
        return self.failures


class _Job:
    def __init__(self, spec: RunSpec, model: loader.ResolvedModel, lock: OutputLock):
        self.spec, self.model, self.lock = spec, model, lock
        self.so = spec.storage_options
        self.output = _absolute(spec.output)
        self.input = _absolute(spec.input)
        self.sink = DatasetSink(self.output, storage_options=self.so)
        # what the actors resolve on their own node: a remote URI or built-in name as given, a local
        # folder as the absolute path the driver found
        given = spec.model
        self.actor_model = given if loader.is_remote(given) or given == model.reference and \
            not os.path.exists(os.path.expanduser(given)) else model.path
        self.stats = RunStats()
        self.pool = ThreadPoolExecutor(spec.compute.commit_threads, thread_name_prefix="annotator-commit")
        self.committed: dict[str, dict] = {}
        self.committed_now: set[str] = set()
        self.last_manifest = 0.0
        self.last_progress = 0.0

    # -- setup ---------------------------------------------------------------------------------

    def prepare(self) -> tuple[plan_mod.Plan, bool]:
        if self.spec.overwrite:
            self.sink.reset()
        self.sink.makedirs()
        plan_uri = sources.join(self.output, plan_mod.PLAN_DIR)
        opts = plan_mod.PlanOptions(self.input, self.spec.kind, self.spec.shard_size, self.spec.video_every)
        plan = plan_mod.load(plan_uri, self.so)
        reused = plan is not None
        if plan is None:
            plan = plan_mod.create(opts, plan_uri, self.so)
        else:
            plan.check_options(opts)
        doc = fingerprint_doc(self.model, self.spec, plan.hash)
        fp = fingerprint(doc)
        self.committed = self.sink.committed()
        other = {s: r for s, r in self.committed.items() if r.get("fingerprint") != fp}
        if other:
            prev = (self.sink.read_json("_fingerprint.json") or {}).get("components", {})
            diff = sorted(k for k in set(doc) | set(prev) if doc.get(k) != prev.get(k)) or ["unknown"]
            raise FingerprintError(
                f"{self.output} holds {len(other)} committed shard(s) made with a different "
                f"{', '.join(diff)}; rerun with --overwrite to replace them, or write to a new output")
        self.sink.write_json("_fingerprint.json", {"fingerprint": fp, "components": doc})
        self.sink.fingerprint = fp
        self.fp = fp
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

    # -- commit (runs on the pool) ----------------------------------------------------------------

    def commit(self, shard_id: str, tables: list[pa.Table], only: list[str] | None, attempt: int) -> dict:
        started = time.perf_counter()
        table = pa.concat_tables(tables)
        names = schema.arrow_schema().names
        extras = table.select(list(stages.EXTRA_COLUMNS))
        rows = table.select(names).cast(schema.arrow_schema())
        run_stats = shard_stats(rows, extras, attempt)  # what this run computed
        file_stats, repairs = run_stats, 0
        if only is not None:  # --retry-errors: the redone rows replace the old error rows
            old_rec = self.committed[shard_id]
            old = self.sink.read_part(old_rec).replace_schema_metadata(None).cast(schema.arrow_schema())
            redone = pa.array(rows.column("image_id").to_pylist(), pa.string())
            old = old.filter(pc.invert(pc.is_in(old.column("image_id"), value_set=redone)))
            rows = pa.concat_tables([old, rows])
            repairs = int(old_rec.get("repairs", 0)) + 1
            file_stats = shard_stats(rows, extras, attempt)
        self.lock.check()
        rec = self.sink.write_shard(shard_id, rows, file_stats, repairs=repairs)
        self.stats.add_shard(run_stats, time.perf_counter() - started, repaired=only is not None)
        self.committed[shard_id] = rec
        self.committed_now.add(shard_id)
        return rec

    # -- one round ----------------------------------------------------------------------------------

    def run_round(self, plan: plan_mod.Plan, work: dict[str, list[str] | None], attempt: int,
                  bar: ProgressBar) -> dict[str, str]:
        import ray

        c = self.spec.compute
        items = []
        for row in plan.rows(set(work)):
            only = work[row["shard"]]
            # no None in string columns: Ray turns an all-null column into NaN floats
            row = {k: ("" if v is None and plan_mod.SHARD_SCHEMA.field(k).type == pa.string() else v)
                   for k, v in row.items()}
            items.append({**row, "only": json.dumps(only) if only is not None else ""})
        read_kwargs = {"plan_uri": plan.uri, "storage_options": self.so, "batch_size": c.read_batch,
                       "timeout_s": c.read_timeout_s, "retries": c.read_retries}
        if sources.is_process_local(self.input) or sources.is_process_local(self.output):
            # memory:// lives in this process only: read here, hand the rows to Ray
            rows = []
            for item in items:
                for batch in stages.read_shard(item, **read_kwargs):
                    rows.extend({k: batch[k][i] for k in batch} for i in range(len(batch["image_id"])))
            ds = ray.data.from_items(rows)
        else:
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 10_000)))
            ds = ds.map_batches(stages.read_shards, batch_size=1, batch_format="numpy", num_cpus=c.read_cpus,
                                fn_kwargs=read_kwargs)
        ds = ds.map_batches(
            stages.decode_batch, batch_size=c.batch_size, num_cpus=c.decode_cpus, batch_format="numpy",
            fn_kwargs={"max_pixels": self.spec.max_pixels,
                       "default_fov_degrees": self.spec.settings.default_fov_degrees})
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for bounded actor restarts/retries yet (the default is
            # unbounded: a poison batch would be retried forever), so they go as ray_remote_args.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(
                stages.InferenceStage, batch_size=c.batch_size, batch_format="numpy",
                fn_constructor_kwargs={"model": self.actor_model, "settings": self.spec.settings,
                                       "batch_timeout_s": c.batch_timeout_s or None,
                                       "batch_retries": c.batch_retries, "expected_sha256": self.model.sha256,
                                       "storage_options": self.so, "registry": self.registry},
                compute=ray.data.ActorPoolStrategy(min_size=c.actors, max_size=c.max_actors or c.actors),
                num_cpus=c.cpus_per_actor, num_gpus=c.gpus_per_actor or None,
                max_restarts=c.actor_max_restarts, max_task_retries=c.actor_task_retries)
        collector = _Collector(self, work, attempt)
        round_error = None
        try:
            for table in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=2):
                self.lock.check()
                self.stats.add_processed(table)
                collector.add(table)
                bar.update(self.stats, table.num_rows)
                self.tick()
        except LockLostError:
            raise
        except ray.exceptions.GetTimeoutError as e:
            # the minimum actor pool never came up: retrying would wait again for the same resources
            raise ClusterError(f"the inference actors did not start within {c.actor_start_timeout_s:g} s: does "
                               f"the cluster have {c.actors} x (CPU {c.cpus_per_actor:g}, GPU "
                               f"{c.gpus_per_actor:g}) free? ({e})") from None
        except Exception as e:  # noqa: BLE001 - e.g. Ray's no-progress guard: retry what is left
            round_error = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log.error("round %d ended early: %s", attempt, round_error)
        return collector.finish(round_error)

    def tick(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self.last_progress > 5:
            self.last_progress = now
            self.sink.write_json("_progress.json", self.stats.progress(
                state="running", attempt_id=self.sink.attempt, dataset=self.dataset_totals()))
        if force or now - self.last_manifest > self.spec.manifest_interval_s:
            self.last_manifest = now
            self.sink.write_manifest(self.committed, final=False, shards_total=self.shards_total)

    def dataset_totals(self) -> dict:
        recs = list(self.committed.values())
        errors: dict[str, int] = {}
        for r in recs:
            for k, v in (r.get("errors_by_reason") or {}).items():
                errors[k] = errors.get(k, 0) + v
        return {"shards_total": self.shards_total, "shards_committed": len(recs),
                **{k: sum(r[k] for r in recs) for k in ("rows", "rows_ok", "rows_error", "people")},
                "errors_by_reason": dict(sorted(errors.items()))}

    # -- the job ------------------------------------------------------------------------------------

    def run(self) -> dict:
        import ray

        plan, reused = self.prepare()
        self.shards_total = plan.num_shards
        init_ray(self.spec.compute.ray_address)
        check_cpus(self.spec.compute, float(ray.cluster_resources().get("CPU", 0)),
                   fixed=not self.spec.compute.ray_address)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.execution_options.verbose_progress = False
        ctx.execution_no_progress_timeout_s = self.spec.compute.no_progress_timeout_s
        ctx.max_errored_blocks = -1  # a block that fails after retries costs its shards this round only
        # start reading once the minimum actor pool is up: work is then spread over all actors from
        # the first batch, and a cluster without the requested GPUs fails fast instead of hanging
        ctx.wait_for_min_actors_s = int(self.spec.compute.actor_start_timeout_s)

        self.registry = ray.remote(num_cpus=0)(ActorRegistry).remote()
        skeleton = _describe(self.model.path, self.spec.settings.skeleton, self.actor_model, self.so)
        self.sink.file_metadata = schema.file_metadata(self.model.to_dict(), skeleton, self.spec.settings.to_dict())
        work: dict[str, list[str] | None] = {s: None for s in plan.shard_ids() if s not in self.committed}
        if self.spec.retry_errors:
            work.update(self.error_ids(self.committed))
        self.stats.shards_skipped = plan.num_shards - len(work)
        self.stats.shards_todo = len(work)
        sizes = dict(zip(plan.shard_ids(), plan.shards.column("members").to_pylist(), strict=True))
        known = [len(only) if only is not None else sizes[s] for s, only in work.items()]
        bar = ProgressBar(None if any(n < 0 for n in known) else sum(known), enabled=self.spec.progress)
        failures: dict[str, str] = {}
        rounds = 0
        try:
            for attempt in range(1, self.spec.compute.shard_attempts + 1):
                if not work:
                    break
                rounds += 1
                failures = self.run_round(plan, work, attempt, bar)
                work = {s: work[s] for s in failures}
                if work:
                    log.warning("round %d: %d shard(s) to retry: %s", attempt, len(work),
                                "; ".join(f"{s}: {r}" for s, r in list(failures.items())[:5]))
        finally:
            bar.close()
        self.stats.failed_shards = dict(failures) if work else {}
        self.stats.add_actors(ray.get(self.registry.all.remote(), timeout=60))
        manifest = self.sink.write_manifest(self.committed, final=True, shards_total=plan.num_shards)
        summary = self.stats.summary(
            output=self.output, input=self.input, model=self.model.to_dict(), shards_total=plan.num_shards,
            rows_in_dataset=manifest["rows"], dataset={k: manifest[k] for k in (
                "shards_committed", "rows", "rows_ok", "rows_error", "people", "errors_by_reason")},
            fingerprint=self.fp, attempt_id=self.sink.attempt, rounds=rounds,
            plan={"kind": plan.kind, "reused": reused, "num_shards": plan.num_shards,
                  "num_members": plan.num_members, "planning_seconds": plan.meta.get("planning_seconds")})
        self.sink.write_json("_summary.json", summary)
        self.sink.write_json("_progress.json", self.stats.progress(
            state="failed" if summary["shards_failed"] else "finished", attempt_id=self.sink.attempt,
            dataset=self.dataset_totals()))
        return summary


def run(spec: RunSpec) -> dict:
    """Run a job; returns the run summary (also written to ``OUTPUT/_summary.json``)."""
    spec.validate()
    model = loader.resolve(spec.model, storage_options=spec.storage_options)
    lock = OutputLock(_absolute(spec.output), spec.storage_options, spec.lock_heartbeat_s, spec.lock_stale_s)
    with lock:
        job = _Job(spec, model, lock)
        try:
            return job.run()
        finally:
            job.pool.shutdown(wait=True)

