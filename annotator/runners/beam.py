"""Apache Beam runner: the same stage functions under Beam, the model behind RunInference.

    Create(shard rows)                      the frozen plan's shards still to do (as for Ray)
      -> FlatMap(read_shard)                I/O: member batches with bytes
      -> FlatMap(decode_batch, per image)   CPU: one element per image
      -> RunInference(PoseModelHandler)     BatchElements to ``batch_size``; ``InferenceStage`` loaded
                                            once per worker; one Arrow (IPC) piece per shard and batch
      -> GroupByKey(shard) -> CommitShard   the sink's commit protocol, on the worker, under the lock
                                            (the shards of one video: one group, committed in order)
      -> outcomes of the round              one small JSON the driver reads: records, stats, failures

Why these choices:
* Same output as the Ray runner, by construction: the plan, fingerprint, shard commit
  (``commit.commit_shard``), retry rounds and summary are ``job.Job``'s; this module only wires.
* A shard is grouped whole before its commit, so nothing is committed half; a row with ``_fail``
  (unreadable tar, inference timeout) keeps its shard uncommitted and the next round retries it.
* Workers check that the output lock still names this job before each commit: on Dataflow the
  driver's heartbeat thread is not in their process.
* In this process by default (``flags=[]``: Beam must not parse our argv), on the FnApiRunner, also
  for ``DirectRunner``: Beam's tries a Prism binary downloaded at run time first, then falls back to
  the FnApiRunner (same output). ``compute.beam_options`` passes the rest (project, region, ...).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import ModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from annotator.pipeline import budget, errors, layout, sources, stages
from annotator.pipeline import plan as plan_mod
from annotator.pipeline.budget import ErrorBudgetExceeded
from annotator.pipeline.commit import commit_shard
from annotator.pipeline.lock import LockLostError, read_lock
from annotator.pipeline.progress import ProgressBar, batch_times
from annotator.pipeline.sequence import CommitOrder
from annotator.pipeline.shards import ShardRows, by_shard, from_ipc, to_ipc
from annotator.pipeline.sink import DatasetSink
from annotator.runners import job as job_mod

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = {"runner": "FnApiRunner", "direct_num_workers": 1, "direct_running_mode": "in_memory"}


class _DropKnownNoise(logging.Filter):
    """Beam 2.77 warns on every inference batch that it cannot read memory use (its model manager
    import needs torch): not news to our users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resource module is not available" not in record.getMessage()


def quiet_beam_logs() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _DropKnownNoise) for f in root.filters):
        root.addFilter(_DropKnownNoise())


_MODELS: dict[str, stages.InferenceStage] = {}
_MODELS_LOCK = threading.Lock()


class PoseModelHandler(ModelHandler):
    """Beam RunInference handler around ``stages.InferenceStage`` (load once, map a batch): the same
    object the Ray actors hold, so both runners annotate alike."""

    def __init__(self, stage_kwargs: dict, batch_size: int):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.kwargs = stage_kwargs  # ``Job.inference_kwargs()``

    def load_model(self) -> stages.InferenceStage:
        """One model per process and configuration: RunInference asks again for every pipeline
        (each retry round, each job in a notebook), and each load pays the load and warm-up again."""
        quiet_beam_logs()
        key = json.dumps({**self.kwargs, "settings": self.kwargs["settings"].to_dict()}, sort_keys=True)
        with _MODELS_LOCK:
            if key not in _MODELS:
                _MODELS[key] = stages.InferenceStage(**self.kwargs)
            return _MODELS[key]

    def run_inference(self, batch: Sequence[dict], model: stages.InferenceStage,
                      inference_args: dict | None = None) -> Iterable[tuple[str, bytes]]:
        table = model(stages.stack_rows(batch))
        if model.stop:  # the model cannot run here: fail the pipeline, the driver stops the job
            raise ErrorBudgetExceeded(model.stop)
        for shard_id, piece in by_shard(table):
            yield shard_id, to_ipc(piece)

    def get_num_bytes(self, batch: Sequence[dict]) -> int:
        # Beam's default pickles the whole batch just to count it: images are megabytes each
        return sum(int(np.asarray(r["image"]).nbytes) for r in batch)

    def get_metrics_namespace(self) -> str:
        return "annotator"


class CommitShard(beam.DoFn):
    """GroupByKey(commit group) -> each shard's commit record (or why it was not committed). A
    group is one shard, or all shards of one video, committed in frame order: each continues the
    tracks of the one before it (``sequence.CommitOrder``)."""

    def __init__(self, output: str, storage_options: dict | None, file_metadata: dict, fingerprint: str,
                 attempt_id: str, lock_token: str, only: dict[str, list[str] | None], old_records: dict,
                 attempt: int, sequences: dict | None = None, last_round: bool = False):
        self.args = (output, storage_options, file_metadata, fingerprint, attempt_id)
        self.lock_token, self.only, self.old_records, self.attempt = lock_token, only, old_records, attempt
        self.sequences, self.last_round = sequences or {}, last_round
        self.sink: DatasetSink | None = None

    def setup(self) -> None:
        output, so, meta, fp, attempt_id = self.args
        self.sink = DatasetSink(output, file_metadata=meta, fingerprint=fp, storage_options=so, attempt=attempt_id)

    def process(self, element: tuple[str, Iterable[tuple[str, bytes]]]) -> Iterator[dict]:
        _, items = element
        shards: dict[str, ShardRows] = {}
        for shard_id, piece in items:
            shards.setdefault(shard_id, ShardRows()).add(from_ipc(piece))
        order = CommitOrder(self.sequences, set(), set(self.only))
        for shard_id in sorted(shards):
            ok = order.can_commit(shard_id)
            if not ok and not (self.last_round and order.blocked_by_failure(shard_id)):
                order.fail(shard_id)
                yield {"shard": shard_id, "fail": order.waiting_reason(shard_id)}
                continue
            outcome = self.commit(shard_id, shards[shard_id], ok)
            (order.done if "record" in outcome else order.fail)(shard_id)
            yield outcome

    def commit(self, shard_id: str, rows: ShardRows, continue_previous: bool) -> dict:
        started = time.perf_counter()
        if not rows.complete:
            return {"shard": shard_id, "fail": rows.why_incomplete()}
        if (read_lock(self.args[0], self.args[1]) or {}).get("token") != self.lock_token:
            raise LockLostError(f"the lock of {self.args[0]} was taken over by another job")
        only, table = self.only.get(shard_id), pa.concat_tables(rows.take())
        rec, run_stats = commit_shard(self.sink, shard_id, [table], only,
                                              self.old_records.get(shard_id), self.attempt,
                                              self.sequences.get(shard_id), continue_previous)
        return {"shard": shard_id, "record": rec, "run_stats": run_stats, "repaired": only is not None,
                "seconds": time.perf_counter() - started,
                "batches": [[a, t, n] for (a, t), n in batch_times(table).items()]}


def _write_outcomes(outcomes: list[dict], uri: str, storage_options: dict | None) -> None:
    fs, path = sources.filesystem(uri, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(outcomes).encode())


class BeamJob(job_mod.Job):
    runner = "beam"

    def start(self) -> None:
        quiet_beam_logs()
        self.options = {**DEFAULT_OPTIONS, **self.spec.compute.beam_options}
        self.options["runner"] = {"DirectRunner": "FnApiRunner"}.get(self.options["runner"], self.options["runner"])
        PipelineOptions(flags=[], **self.options)  # bad option names fail here, before any work

    def run_round(self, plan: plan_mod.Plan, work: dict[str, list[str] | None], attempt: int,
                  bar: ProgressBar) -> dict[str, str]:
        c = self.spec.compute
        items = self.shard_items(plan, work)
        read_kwargs = self.read_kwargs(plan)
        outcomes_uri = sources.join(self.output, layout.RUNS, self.sink.attempt, f"round-{attempt}.json")
        handler = PoseModelHandler(self.inference_kwargs(), c.batch_size)
        commit = CommitShard(
            self.output, self.so, self.sink.file_metadata, self.fp, self.sink.attempt, self.lock.token,
            dict(work), {s: self.committed[s] for s, only in work.items() if only is not None}, attempt,
            {s: q for s, q in self.sequences.items() if s in work}, attempt == c.shard_attempts)
        # the shards of one video share a group (committed in order on one worker); others go alone
        groups = {s: f"video:{q.video}" for s, q in self.sequences.items() if s in work}
        decode_kwargs = self.decode_kwargs()
        # the driver shows progress from the commit records as they appear
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(work, bar, done), daemon=True,
                                   name="annotator-beam-progress")
        watcher.start()
        round_error = None
        try:
            with beam.Pipeline(options=PipelineOptions(flags=[], **self.options)) as p:
                _ = (p
                     | "Shards" >> beam.Create(items, reshuffle=True)
                     | "Read" >> beam.FlatMap(lambda item: stages.read_shard(item, **read_kwargs))
                     | "Decode" >> beam.FlatMap(lambda b: stages.split_rows(stages.decode_batch(b, **decode_kwargs)))
                     | "Infer" >> RunInference(handler)
                     | "Group" >> beam.Map(lambda kv, g=groups: (g.get(kv[0], kv[0]), kv))
                     | "ByShard" >> beam.GroupByKey()
                     | "Commit" >> beam.ParDo(commit)
                     | "Outcomes" >> beam.combiners.ToList()
                     | "WriteOutcomes" >> beam.Map(_write_outcomes, outcomes_uri, self.so))
        except LockLostError:
            raise
        except Exception as e:  # noqa: BLE001 - the shards that did not commit are retried next round
            if isinstance(e.__cause__, LockLostError) or "LockLostError" in str(e):
                raise LockLostError(str(e).splitlines()[0]) from e
            if budget.MARK in str(e):  # Beam wraps the worker's error: keep its one line
                raise ErrorBudgetExceeded(budget.stop_message(str(e))) from None
            round_error = errors.describe(e)
            log.error("round %d ended early: %s", attempt, round_error)
        finally:
            done.set()
            watcher.join()
        return self._fold(outcomes_uri, work, round_error)

    def _watch(self, work: dict[str, list[str] | None], bar: ProgressBar, done: threading.Event) -> None:
        """Advance the bar and ``_progress.json`` as commit records appear (under Beam, rows never
        reach the driver)."""
        seen: set[str] = set()
        while not done.wait(2.0):
            self._scan(work, bar, seen)
            self.tick()
        self._scan(work, bar, seen)

    def _scan(self, work: dict[str, list[str] | None], bar: ProgressBar, seen: set[str]) -> None:
        names = {layout.record_name(s): s for s in work}
        try:
            self.sink.fs.invalidate_cache()
            listed = {p.rsplit("/", 1)[-1] for p in self.sink.fs.ls(self.sink.path(layout.COMMITS), detail=False)}
        except OSError:
            return
        for name in sorted(listed & set(names) - seen):
            try:
                rec = json.loads(self.sink.fs.cat_file(self.sink.path(layout.COMMITS, name)))
            except (OSError, ValueError):
                continue
            if rec.get("attempt") != self.sink.attempt:
                continue  # committed by an earlier run (--retry-errors recommits it)
            seen.add(name)
            only = work[names[name]]
            n = rec["rows"] if only is None else len(only)
            inference_errors = rec["errors_by_reason"].get(errors.INFERENCE_ERROR, 0) if only is None else 0
            self.stats.add_counts(n, rec["people"], rec["rows_error"],
                                  rec["rows_ok"] + inference_errors if only is None else 0, inference_errors)
            bar.update(self.stats, n)

    def _fold(self, outcomes_uri: str, work: dict[str, list[str] | None], round_error: str | None) -> dict[str, str]:
        """Fold the round's outcomes into the job; returns the shards that did not commit."""
        fs, path = sources.filesystem(outcomes_uri, self.so)
        try:
            outcomes = json.loads(fs.cat_file(path))
        except FileNotFoundError:
            outcomes = []
        failures: dict[str, str] = {}
        for o in outcomes:
            if "record" in o:
                self.record_commit(o["shard"], o["record"], o["run_stats"], o["seconds"], o["repaired"])
                self.stats.add_batches(o["batches"])
            else:
                failures[o["shard"]] = o["fail"]
        if len(outcomes) < len(work):  # the pipeline stopped early: what did commit is on disk
            for shard_id, rec in self.sink.committed().items():
                if shard_id in work and rec.get("attempt") == self.sink.attempt and shard_id not in self.committed_now:
                    counts = {k: rec[k] for k in ("rows", "rows_ok", "rows_error", "people", "errors_by_reason")}
                    self.record_commit(shard_id, rec, counts, 0.0, repaired=work[shard_id] is not None)
        self.tick(force=True)
        return self.round_failures(work, failures, round_error, lambda _: "not committed (see Beam logs)")

    def finish_rounds(self) -> None:
        fs, path = sources.filesystem(sources.join(self.output, layout.RUNS, self.sink.attempt), self.so)
        try:
            fs.rm(path, recursive=True)
            if not fs.ls(path.rsplit("/", 1)[0]):
                fs.rm(path.rsplit("/", 1)[0], recursive=True)
        except (FileNotFoundError, OSError):
            pass


def run(spec) -> dict:
    """Run a job under Beam; returns the run summary (also written to ``OUTPUT/_summary.json``)."""
    return job_mod.run(BeamJob, spec)
