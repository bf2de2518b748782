"""Run counters, per-shard stats, the progress bar, ``_progress.json`` and the run summary.

Counters are folded per committed shard from the encoded rows (what the dataset really holds), so
the summary always agrees with the Parquet files; ``processed`` counts rows as they arrive, for
live rates. Each stage's own seconds travel with the rows (``_read_s``, ``_decode_s``,
``_infer_s``) and the sink's commit time is measured here, so the summary shows per-stage throughput
(images per worker-second) next to the end-to-end rate.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from annotator.pipeline import errors
from annotator.pipeline.sink import table_counts

STAGES = ("read", "decode", "infer", "commit")


def shard_stats(table: pa.Table, extras: pa.Table | None, attempt: int) -> dict:
    """Per-shard stats (``_stats/part-<shard>.json``) from its rows and the driver-only columns."""
    out = {**table_counts(table), "attempt": attempt,
           "people_per_image": {str(k.as_py()): v.as_py() for k, v in
                                zip(*pc.value_counts(table.column("num_people")).flatten(), strict=True)}}
    if extras is not None and extras.num_rows:
        out["stage_seconds"] = {s: float(pc.sum(extras.column(f"_{s}_s")).as_py() or 0.0)
                                for s in ("read", "decode", "infer")}
        out["storage_retries"] = int(pc.sum(extras.column("_read_retries")).as_py() or 0)
        actors = Counter(extras.column("_actor").to_pylist())
        gpus = dict(zip(extras.column("_actor").to_pylist(), extras.column("_gpu").to_pylist(), strict=True))
        loads: dict[str, set] = {}
        for a, load in zip(extras.column("_actor").to_pylist(), extras.column("_model_load").to_pylist(), strict=True):
            loads.setdefault(a, set()).add(load)
        out["actors"] = {a: {"images": n, "gpu": gpus[a], "model_loads": len(loads[a]), "load_ids": sorted(loads[a])}
                         for a, n in actors.items()}
        out["decode_pids"] = sorted(set(extras.column("_decode_pid").to_pylist()))
        hints = [h for h in extras.column("_up_hint").to_pylist() if h is not None]
        if hints:  # images with extrinsics: how many suggest another world up, by axis
            out["world_up_checked"] = len(hints)
            out["world_up_hints"] = dict(Counter(h for h in hints if h))
    return out


def inference_counts(table: pa.Table) -> tuple[int, int]:
    """(images that reached the model, images it failed on) among rows: the error budget's input.
    Rows of a failed shard (``_fail``: a timeout, a bug) are not counted: they are not committed."""
    error = table.column("error")
    reached = pc.or_(pc.equal(table.column("status"), "ok"),
                     pc.fill_null(pc.starts_with(error, errors.INFERENCE_ERROR + ":"), False))
    if "_fail" in table.column_names:
        reached = pc.and_(reached, pc.equal(table.column("_fail"), ""))
    failed = pc.and_(reached, pc.fill_null(pc.starts_with(error, errors.INFERENCE_ERROR + ":"), False))
    return int(pc.sum(reached).as_py() or 0), int(pc.sum(failed).as_py() or 0)


def batch_times(table: pa.Table) -> Counter:
    """Rows per (actor, batch done at): each inference batch, as the steady rate needs it."""
    return Counter(zip(table.column("_actor").to_pylist(), table.column("_done_at").to_pylist(), strict=True))


@dataclass
class RunStats:
    images: int = 0  # rows committed by this run
    images_ok: int = 0
    images_error: int = 0
    people: int = 0
    processed: int = 0  # rows that came out of inference (committed or not yet)
    processed_people: int = 0
    processed_errors: int = 0
    # the error budget's view (``pipeline.budget``): images that reached the model, and how many it failed on
    inferred: int = 0
    inference_errors: int = 0
    shards_committed: int = 0
    shards_repaired: int = 0
    shards_skipped: int = 0
    shards_todo: int = 0
    errors_by_reason: Counter = field(default_factory=Counter)
    people_per_image: Counter = field(default_factory=Counter)
    stage_seconds: Counter = field(default_factory=Counter)
    actors: dict = field(default_factory=dict)
    decode_pids: set = field(default_factory=set)
    failed_shards: dict = field(default_factory=dict)
    # store requests retried (``annotator.pipeline.retries``): by the reads of the committed rows, and by the driver
    storage_retries: int = 0
    # images with extrinsics, and how many of them suggested another world up, by axis
    # (``ground_plane.likelier_up``: crops turned by a wrong up)
    world_up_checked: int = 0
    world_up_hints: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.time)
    # when labelled rows first reached the driver: the job's fixed cost as a user sees it
    first_rows_at: float | None = None
    # per actor: [first batch done at, its rows, last batch done at, all rows]; rows after an
    # actor's first batch over the time after it is its steady rate (its warm-up and any wait for
    # its first input excluded; waits for input later on included). Each actor's own clock: clock
    # offsets between nodes cancel
    actor_batches: dict = field(default_factory=dict)
    # the ids of each actor's model loads (``InferenceStage.load_id``): one per actor unless it reloaded
    actor_loads: dict = field(default_factory=dict)
    # a runner's live metrics (Ray: ``runners.metrics``, also on its Prometheus endpoint), for ``_progress.json``
    live: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_processed(self, table: pa.Table) -> None:
        with self.lock:
            if self.first_rows_at is None:
                self.first_rows_at = time.time()
            if "_done_at" in table.column_names:
                self._add_batches(batch_times(table).items())
            self.processed += table.num_rows
            self.processed_people += int(pc.sum(table.column("num_people")).as_py() or 0)
            self.processed_errors += int(pc.sum(pc.not_equal(table.column("status"), "ok")).as_py() or 0)
            inferred, failed = inference_counts(table)
            self.inferred += inferred
            self.inference_errors += failed

    def add_batches(self, batches: list[tuple[str, float, int]]) -> None:
        """(actor, batch done at, rows) seen without their rows (``batch_times`` on the workers)."""
        with self.lock:
            self._add_batches(((a, t), n) for a, t, n in batches)

    def _add_batches(self, pairs) -> None:
        for (actor, done), rows in pairs:
            a = self.actor_batches.setdefault(actor, [done, 0, done, 0])
            if done < a[0]:
                a[0], a[1] = done, 0
            if done == a[0]:
                a[1] += rows
            a[2] = max(a[2], done)
            a[3] += rows

    def add_counts(self, rows: int, people: int, errors: int, inferred: int = 0, inference_errors: int = 0) -> None:
        """Rows seen without their table (a runner that learns of them from commit records)."""
        with self.lock:
            if self.first_rows_at is None:
                self.first_rows_at = time.time()
            self.processed += rows
            self.processed_people += people
            self.processed_errors += errors
            self.inferred += inferred
            self.inference_errors += inference_errors

    def add_shard(self, stats: dict, commit_seconds: float, repaired: bool) -> None:
        with self.lock:
            self.images += stats["rows"] - stats.get("world_rows", 0)  # a rig's world rows are no images
            self.images_ok += stats["rows_ok"] - stats.get("world_rows", 0)
            self.images_error += stats["rows_error"]
            self.people += stats["people"]
            self.errors_by_reason.update(stats["errors_by_reason"])
            self.people_per_image.update(stats.get("people_per_image", {}))
            self.stage_seconds.update(stats.get("stage_seconds", {}))
            self.stage_seconds["commit"] += commit_seconds
            self.storage_retries += stats.get("storage_retries", 0)
            self.world_up_checked += stats.get("world_up_checked", 0)
            self.world_up_hints.update(stats.get("world_up_hints", {}))
            for actor, a in stats.get("actors", {}).items():
                cur = self.actors.setdefault(actor, {"images": 0, "gpu": a["gpu"], "model_loads": 0})
                cur["images"] += a["images"]
                self._add_loads(actor, a.get("load_ids", []))
            self.decode_pids.update(stats.get("decode_pids", []))
            self.shards_committed += 1
            self.shards_repaired += int(repaired)

    def add_actors(self, started: dict[str, dict]) -> None:
        """Fold in the actors that checked in at start-up (``ActorRegistry``): one that got no batch
        still shows, with 0 images, and each shows its model load and warm-up seconds and the node
        it ran on (the engine's node id and address, where the runner knows them)."""
        with self.lock:
            for actor, info in started.items():
                cur = self.actors.setdefault(actor, {"images": 0, "gpu": info.get("gpu", ""), "model_loads": 0})
                self._add_loads(actor, [info["model_load"]] if info.get("model_load") else [])
                cur.update({k: info[k] for k in ("load_seconds", "warmup_seconds", "node", "node_ip") if k in info})

    def _add_loads(self, actor: str, load_ids: list[str]) -> None:
        ids = self.actor_loads.setdefault(actor, set())
        ids.update(load_ids)
        self.actors[actor]["model_loads"] = len(ids)

    def rates(self) -> dict:
        elapsed = max(time.time() - self.started, 1e-6)
        done = self.shards_committed
        left = max(self.shards_todo - done - len(self.failed_shards), 0)
        eta = elapsed / done * left if done else None
        return {"elapsed_seconds": round(elapsed, 2),
                "images_per_second": round(self.processed / elapsed, 3),
                "people_per_second": round(self.processed_people / elapsed, 3),
                "error_rate": round(self.processed_errors / self.processed, 4) if self.processed else 0.0,
                "eta_seconds": None if eta is None else round(eta, 1)}

    def progress(self, **extra) -> dict:
        """``_progress.json``: what ``annotator status`` shows for a running job."""
        with self.lock:
            return {"processed": self.processed, "shards_committed_this_run": self.shards_committed,
                    "shards_todo": self.shards_todo, "shards_failed": len(self.failed_shards),
                    "updated_at": time.time(), **self.rates(),
                    **({"metrics": dict(self.live)} if self.live else {}), **extra}

    def steady(self) -> dict:
        """When the driver first got labelled rows, and the pipeline's steady rate: the sum over
        actors of their rates after their first batch (None until some actor finished two batches).

        Measured at the actors because rows reach the driver in bursts (Ray Data's output queues),
        which would make a driver-side rate over a short run meaningless."""
        rates = [(total - first) / (last - t0) for t0, first, last, total in self.actor_batches.values()
                 if last > t0 and total > first]
        return {"seconds_to_first_rows": None if self.first_rows_at is None
                else round(self.first_rows_at - self.started, 2),
                "steady_images_per_second": round(sum(rates), 3) if rates else None}

    def summary(self, **extra) -> dict:
        r = self.rates()
        elapsed = max(time.time() - self.started, 1e-6)
        per_stage = {s: round(self.images / sec, 3) if sec > 0 else None
                     for s, sec in ((s, self.stage_seconds.get(s, 0.0)) for s in STAGES)}
        return {
            "images": self.images, "images_ok": self.images_ok, "images_error": self.images_error,
            "people": self.people, "shards_committed": self.shards_committed,
            "shards_repaired": self.shards_repaired, "shards_skipped": self.shards_skipped,
            "shards_failed": len(self.failed_shards), "failed_shards": dict(sorted(self.failed_shards.items())),
            "storage_retries": self.storage_retries,
            **({"world_up_check": {"images_with_extrinsics": self.world_up_checked,
                                   "likelier_up": dict(sorted(self.world_up_hints.items()))}}
               if self.world_up_checked else {}),
            "errors_by_reason": dict(sorted(self.errors_by_reason.items())),
            "people_per_image": dict(sorted(self.people_per_image.items(), key=lambda kv: int(kv[0]))),
            "elapsed_seconds": r["elapsed_seconds"],
            "images_per_second": round(self.images / elapsed, 3),
            "people_per_second": round(self.people / elapsed, 3),
            **self.steady(),
            "stage_seconds": {s: round(self.stage_seconds.get(s, 0.0), 3) for s in STAGES},
            "stage_images_per_worker_second": per_stage,
            "actors": self.actors, "decode_pids": sorted(self.decode_pids),
            **extra,
        }


class ProgressBar:
    """tqdm over images with people/s, error rate and ETA; silent when disabled."""

    def __init__(self, total: int | None, enabled: bool = True):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc="annotating", dynamic_ncols=True)

    def update(self, stats: RunStats, n: int) -> None:
        if self.bar is None:
            return
        self._postfix(stats, refresh=False)
        self.bar.update(n)

    def refresh(self, stats: RunStats) -> None:
        """Redraw the counters without new images: commits land after the rows that fill a shard."""
        if self.bar is not None:
            self._postfix(stats, refresh=True)

    def _postfix(self, stats: RunStats, refresh: bool) -> None:
        r = stats.rates()
        self.bar.set_postfix(people_s=f"{r['people_per_second']:.1f}", err=f"{100 * r['error_rate']:.1f}%",
                             shards=f"{stats.shards_committed}/{stats.shards_todo}", refresh=refresh)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
