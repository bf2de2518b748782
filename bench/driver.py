"""The driver's ceiling: how many images/s and shards/s one ``annotator run`` driver commits, what
CPU and memory that costs it, and what that means for 20,000 images/s (64 GPUs x ~300 images/s).

The driver's work is per block (Ray Data's iterator hands it label tables), per image (split by
shard, de-duplication, counters) and per shard (Parquet, sha256, three small files, the manifest
and progress rewrites). To measure it alone, ``--source synthetic`` (default) replaces the round's
read -> decode -> infer graph (``RayJob.labels``) with Ray tasks that emit label rows of the real
schema at no model cost: the plan's own image ids, ``--people`` people of 33 joints each, every
column the actor writes. ``--source tiny`` runs the real graph with the light official-API model
of ``memory.py`` on tiny JPEGs (decode on) for comparison. The driver is this process: its CPU
(all threads, /proc/self/stat) and anonymous memory (/proc/self/smaps_rollup) are sampled while it
runs, and fitted over the steady part of each run.

Printed per configuration (shard size x block rows x where parts are written): committed images/s
and shards/s, the driver's CPU share (cores), its CPU-microseconds per image, the one-core
projection (1e6 / us per image: what the driver could commit if it had a whole core and nothing
else limited it), its memory and slope in MiB per 1000 images (configurations share this process
and its allocators' pools: ``simulate.py`` is the memory test, one job per process); the JSON adds
CPU seconds per thread (commit threads, Ray Data's iterator and executor, the main thread, Ray's
C++ threads). ``--profile``: the hottest functions (cProfile of the main and commit threads);
``--tracemalloc``: the Python allocations that grew between 30 % and 90 % of the images.

    .venv/bin/python bench/driver.py [--images 100000] [--configs 1024x256,1024x256:workers]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

TARGET = 20_000  # images/s through one driver: 64 GPUs x ~300 images/s
DEFAULT_CONFIGS = "256x64,1024x16,1024x256,4096x256,256x64:workers,1024x256:workers"
JOINTS = 33
CLOCK = os.sysconf("SC_CLK_TCK")


# -- synthetic labels (run in Ray tasks) ----------------------------------------------------------

_TEMPLATES: dict = {}


def template(rows: int, people: int):
    """A label table of ``rows`` images with ``people`` people each, as the inference stage encodes
    them (camera and world frames, confidences, quality): built once per worker process."""
    key = (rows, people)
    if key not in _TEMPLATES:
        from annotator.labels.camera_codec import Camera
        from annotator.pipeline import encode

        rng = np.random.default_rng(0)
        k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
        recs = []
        for i in range(rows):
            p3 = (rng.normal(0, 300, (people, JOINTS, 3)) + [0, 0, 3000]).astype(np.float32)
            pred = encode.Prediction(
                boxes=np.tile(np.array([[10.0, 20.0, 100.0, 300.0, 0.9]], np.float32), (people, 1)),
                poses2d=rng.uniform(0, 640, (people, JOINTS, 2)).astype(np.float32), poses3d=p3,
                joint_confidences=rng.uniform(0, 1, (people, JOINTS)).astype(np.float32),
                pose_scores=np.full(people, 0.8, np.float32), quality=rng.uniform(0, 1, people),
                depth_sigma_mm=np.full(people, 150.0), depth_source=["monocular"] * people)
            recs.append(encode.ImageRecord(image_id=f"x{i}", source_uri="x", shard="x", width=640, height=480,
                                           camera=Camera(k, "default", np.zeros(5)), prediction=pred))
        _TEMPLATES[key] = encode.to_table(recs)
    return _TEMPLATES[key]


def emit_labels(batch: dict, plan_uri: str, block_rows: int, people: int):
    """Ray Data ``map_batches`` over shard rows: each shard's members as label tables of
    ``block_rows`` rows, the shard's row count on its last block (as ``stages`` would)."""
    import pyarrow as pa

    from annotator.pipeline import plan
    from annotator.pipeline.stages import EXTRA_COLUMNS

    pid = os.getpid()
    for i in range(len(batch["shard"])):
        shard = {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in batch.items()}
        members = plan.members(plan_uri, shard)
        n = members.num_rows
        for start in range(0, n, block_rows):
            m = members.slice(start, block_rows)
            k = m.num_rows
            t = template(block_rows, people).slice(0, k)
            for name, col in (("image_id", m.column("image_id")), ("source_uri", m.column("uri")),
                              ("shard", pa.array([shard["shard"]] * k, pa.string()))):
                t = t.set_column(t.schema.get_field_index(name), name, col.cast(pa.string()))
            last = start + k >= n
            extras = {"_shard_rows": pa.array(np.full(k, n if last else -1, np.int64)),
                      "_fail": pa.array([""] * k, pa.string()), "_read_s": pa.array(np.zeros(k)),
                      "_read_retries": pa.array(np.zeros(k, np.int64)), "_decode_s": pa.array(np.zeros(k)),
                      "_infer_s": pa.array(np.zeros(k)), "_actor": pa.array([f"synthetic:{pid}"] * k, pa.string()),
                      "_gpu": pa.array([""] * k, pa.string()), "_model_load": pa.array(["bench"] * k, pa.string()),
                      "_stop": pa.array([""] * k, pa.string()),
                      "_decode_pid": pa.array(np.full(k, pid, np.int64)),
                      "_done_at": pa.array(np.full(k, time.time())), "_up_hint": pa.nulls(k, pa.string())}
            for name in EXTRA_COLUMNS:
                t = t.append_column(name, extras[name])
            yield t


# -- the driver, measured ---------------------------------------------------------------------------


def cpu_seconds() -> float:
    """This process's CPU seconds, all threads (Ray's core-worker threads included; the sampler
    takes its own out)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of this process: tid -> (name, seconds). Python's threads by
    their ``threading`` name (the main thread iterates and folds rows; Ray Data's executor and
    commits have their own), Ray's C++ threads by their kernel name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        name = names.get(int(task.name), raw[raw.index("(") + 1:raw.rindex(")")])
        out[int(task.name)] = (name.rstrip("0123456789_"), (int(fields[11]) + int(fields[12])) / CLOCK)
    return out


def anon_mib() -> float:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Sampler(threading.Thread):
    """Committed images and shards, CPU seconds and anonymous memory of this process, every ``every`` s."""

    def __init__(self, every: float = 1.0):
        super().__init__(daemon=True, name="bench-sampler")  # its own CPU is taken out of the driver's
        self.every, self.job, self.samples = every, None, []
        self.trace, self.first_snapshot, self.growth = False, None, None
        self.threads: dict[int, list] = {}  # tid -> [name, CPU s when first seen (0 if born later), last]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            job = self.job
            s = job.stats if job is not None else None
            self.samples.append({"t": time.time(), "cpu": cpu_seconds() - time.thread_time(), "mib": anon_mib(),
                                 "images": s.images if s else 0, "shards": s.shards_committed if s else 0})
            if self.trace and s is not None:
                self.snapshot(s.images)
            for tid, (name, cpu) in thread_cpu().items():  # threads that end between samples lose < every s
                first = self.threads.setdefault(tid, [name, cpu if len(self.samples) == 1 else 0.0, cpu])
                first[0], first[2] = name, cpu
            self.stop.wait(self.every)


    def snapshot(self, images: int) -> None:
        """tracemalloc: a snapshot once 30 % of the images are committed, the growth since at 90 %."""
        import tracemalloc

        total = self.job.stats.shards_todo * self.job.spec.shard_size
        if not tracemalloc.is_tracing():
            tracemalloc.start(8)
        elif total <= 0:  # the job has not planned yet
            return
        elif self.first_snapshot is None and images >= 0.3 * total:
            self.first_snapshot = (images, tracemalloc.take_snapshot())
        elif self.first_snapshot is not None and images >= 0.9 * total and self.growth is None:
            n0, snap0 = self.first_snapshot
            diff = tracemalloc.take_snapshot().compare_to(snap0, "traceback")
            self.growth = {"images": images - n0, "top": [
                {"kib": round(d.size_diff / 1024, 1), "count": d.count_diff,
                 "where": [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in d.traceback[-4:]]}
                for d in diff[:10]]}


def steady(samples: list[dict]) -> dict:
    """Rates over the steady part: from 10 % to 95 % of the images committed (start-up and the
    tail excluded); memory slope over the second half, as ``memory.py``."""
    end = samples[-1]["images"]
    win = [s for s in samples if 0.1 * end <= s["images"] <= 0.95 * end]
    if len(win) < 3 or win[-1]["t"] == win[0]["t"]:
        win = [s for s in samples if s["images"] > 0]
    a, b = win[0], win[-1]
    if b["t"] == a["t"]:  # a run too short for one sample inside the window: all of it
        a, b = samples[0], samples[-1]
    dt, di = b["t"] - a["t"], max(b["images"] - a["images"], 1)
    half = [(s["images"], s["mib"]) for s in samples if s["images"] >= end / 2]
    slope = None
    if len(half) >= 3 and half[-1][0] > half[0][0]:
        x, y = np.array(half, np.float64).T
        slope = round(float(np.polyfit(x, y, 1)[0] * 1000), 4)
    cpu = b["cpu"] - a["cpu"]
    us = cpu / di * 1e6
    return {"images_per_second": round(di / dt, 1), "shards_per_second": round((b["shards"] - a["shards"]) / dt, 2),
            "driver_cores": round(cpu / dt, 2), "driver_cpu_us_per_image": round(us, 1),
            "one_core_images_per_second": round(1e6 / us), "mib_first": round(samples[0]["mib"], 1),
            "mib_last": round(samples[-1]["mib"], 1), "mib_max": round(max(s["mib"] for s in samples), 1),
            "mib_per_1000_images": slope, "window_seconds": round(dt, 1)}


class Profiler:
    """cProfile of the driver's main thread and of every commit (on the commit threads)."""

    def __init__(self):
        self.main = cProfile.Profile()
        self.threads: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def wrap(self, fn):
        def profiled(*args, **kwargs):
            p = cProfile.Profile()
            try:
                return p.runcall(fn, *args, **kwargs)
            finally:
                with self.lock:
                    self.threads.append(p)
        return profiled

    def report(self, top: int = 18) -> str:
        out = io.StringIO()
        st = pstats.Stats(self.main, stream=out)
        for p in self.threads:
            st.add(p)
        st.sort_stats("tottime").print_stats(top)
        return out.getvalue()


def run_config(source: str, manifest: Path, model: str, out: Path, shard_size: int, block_rows: int, people: int,
               commit_on: str, profiler: Profiler | None, trace: bool = False) -> dict:
    from annotator.pipeline.spec import ComputeSpec, RunSpec
    from annotator.runners import job as job_mod
    from annotator.runners.ray_data import RayJob

    sampler = Sampler()

    class Measured(RayJob):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            sampler.job = self
            if profiler is not None:
                self.commit = profiler.wrap(self.commit)

        def labels(self, plan, items, attempt):
            if source != "synthetic":
                return super().labels(plan, items, attempt)
            import ray

            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 10_000)))
            return ds.map_batches(emit_labels, batch_size=1, batch_format="numpy", num_cpus=0.25,
                                  fn_kwargs={"plan_uri": plan.uri, "block_rows": block_rows, "people": people})

    compute = ComputeSpec(batch_size=block_rows, cpus_per_actor=0.5, decode_cpus=0.25, commit_on=commit_on)
    spec = RunSpec(input=str(manifest), output=str(out), model=model, kind="manifest", shard_size=shard_size,
                   compute=compute, progress=False, overwrite=True)
    sampler.trace = trace
    sampler.start()
    if profiler is not None:
        profiler.main.enable()
    started = time.time()
    try:
        summary = job_mod.run(Measured, spec)
    finally:
        if profiler is not None:
            profiler.main.disable()
        sampler.stop.set()
        sampler.join()
    wall = time.time() - started
    threads: dict[str, float] = {}
    for name, first, last in sampler.threads.values():
        threads[name] = threads.get(name, 0.0) + last - first
    threads = {k: round(v, 2) for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    if summary["shards_failed"]:
        raise RuntimeError(f"shards failed: {summary['failed_shards']}")
    parts = list((out / "parts").glob("*.parquet"))
    arrow = template(block_rows, people).nbytes / block_rows if source == "synthetic" else None
    return {"source": source, "shard_size": shard_size, "block_rows": block_rows, "commit_on": commit_on,
            "arrow_bytes_per_row": None if arrow is None else round(arrow),
            "people": people,
            "images": summary["images"], "shards": summary["shards_committed"], "wall_seconds": round(wall, 1),
            "bytes_per_row": round(sum(p.stat().st_size for p in parts) / max(summary["images"], 1), 1),
            "manifest_bytes": (out / "_manifest.json").stat().st_size, **steady(sampler.samples),
            "thread_cpu_seconds": threads, "python_growth": sampler.growth,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def build_model(path: Path) -> str:
    """``memory.py``'s light official-API model, built in a subprocess: TensorFlow stays out of the
    driver measured here (an ``annotator run`` driver never imports it)."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from memory import build_light_model; " \
           f"from pathlib import Path; build_light_model(Path({str(path)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return str(path)


def write_inputs(tmp: Path, n: int) -> Path:
    """A manifest of ``n`` URIs over 8 tiny JPEGs (64x48: decode costs ~0.1 ms), distinct ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp / f"t{i}.jpg", quality=80)
    manifest = tmp / f"manifest-{n}.parquet"
    pq.write_table(pa.table({"image_id": [f"img{i:09d}" for i in range(n)],
                             "uri": [str(tmp / f"t{i % 8}.jpg") for i in range(n)]}), manifest)
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="SHARD_SIZExBLOCK_ROWS[:driver|workers], comma-separated (block rows = the inference "
                         "batch size; driver / workers: compute.commit_on)")
    ap.add_argument("--source", choices=("synthetic", "tiny"), default="synthetic")
    ap.add_argument("--people", type=int, default=2, help="people per image in synthetic rows")
    ap.add_argument("--profile", action="store_true", help="cProfile the driver in the first configuration")
    ap.add_argument("--tracemalloc", action="store_true",
                    help="Python allocations that grew between 30 %% and 90 %% of the images (first configuration)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    load_start = [round(x, 2) for x in os.getloadavg()]
    results, profile = [], None
    with tempfile.TemporaryDirectory(prefix="bench-driver-") as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "light_model")
        manifest = write_inputs(tmp, args.images)
        for i, cfg in enumerate(args.configs.split(",")):
            size, _, commit_on = cfg.partition(":")
            shard_size, block_rows = (int(x) for x in size.split("x"))
            prof = Profiler() if args.profile and i == 0 else None
            r = run_config(args.source, manifest, model, tmp / f"out-{i}", shard_size, block_rows, args.people,
                           commit_on or "driver", prof, args.tracemalloc and i == 0)
            if prof is not None:
                profile = prof.report()
                print(profile)
            results.append(r)
            print({k: r[k] for k in ("shard_size", "block_rows", "images_per_second", "shards_per_second",
                                     "driver_cores", "driver_cpu_us_per_image", "mib_per_1000_images",
                                     "thread_cpu_seconds")}, flush=True)
    best = max(r["one_core_images_per_second"] for r in results)
    machine = c.machine()  # last: it imports TensorFlow (to list GPUs), which the measured driver must not hold
    machine["load_average_1min_at_start"] = load_start[0]
    result = {"machine": machine, "source": args.source, "images": args.images, "target_images_per_second": TARGET,
              "configs": results, "ratio_one_core_to_target": round(best / TARGET, 3), "profile": profile,
              "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    path = c.save(f"driver-{args.source}" if args.source != "synthetic" else "driver", result, args.out)
    rows = [(f"{r['shard_size']}x{r['block_rows']}", r["commit_on"], r["images_per_second"], r["shards_per_second"],
             r["driver_cores"],
             r["driver_cpu_us_per_image"], r["one_core_images_per_second"], r["mib_max"], r["mib_per_1000_images"],
             r["manifest_bytes"]) for r in results]
    print(c.table(rows, ("shard x block", "commit on", "images/s", "shards/s", "driver cores", "CPU us/image",
                         "1-core images/s", "max MiB", "MiB/1000 img", "manifest B")))
    print(f"\nbest one-core projection / {TARGET} images/s = {result['ratio_one_core_to_target']}; "
          f"load average {result['load_average_end']} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
