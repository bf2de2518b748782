"""10^6 images end to end on one machine: a manifest of N URIs planned and run by ``annotator run``
with the light official-API model of ``memory.py`` (one 33-joint person per image, negligible
model cost) over tiny JPEGs (64x48: reading and decoding cost little), every shard committed, the
final manifest and ``annotator status``. What it shows is the pipeline's own cost at scale: wall
time, the driver's and the workers' memory (anonymous, per 1000 images: the driver must stay flat,
< 0.05 MiB per 1000 images), the plan, manifest and output sizes, and the numbers
``docs/scaling.md`` projects to 10^8 images.

    .venv/bin/python bench/simulate.py [--images 1000000] [--shard-size 1024] [--batch-size 256]
                                       [--commit-on workers]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
from driver import build_model, write_inputs  # noqa: E402
from memory import Sampler, slope_per_1000  # noqa: E402


class Load(threading.Thread):
    """The machine's load average every 30 s (the machine is shared: timings need it beside them)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), os.getloadavg()[0]))
            self.stop.wait(30)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def manifest_at(records: list[dict], shards: int, folder: Path) -> dict:
    """The final manifest of a job of ``shards`` shards, made of this run's records repeated (renamed):
    its size, the seconds to write it (once, at the job's end) and to read it back as a resume does
    (``DatasetSink.committed`` trusts a final manifest), and the memory its records take in a driver."""
    import tracemalloc

    from annotator.pipeline.sink import DatasetSink

    folder.mkdir(parents=True, exist_ok=True)
    sink = DatasetSink(str(folder))
    tracemalloc.start()
    recs = {f"{i:08d}": {**records[i % len(records)], "shard": f"{i:08d}", "part": f"parts/part-{i:08d}.parquet"}
            for i in range(shards)}
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    t = time.perf_counter()
    sink.write_manifest(recs, final=True)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    back = json.loads((folder / "_manifest.json").read_text())
    read_s = time.perf_counter() - t
    assert back["shards_committed"] == shards
    return {"shards": shards, "bytes": (folder / "_manifest.json").stat().st_size, "write_seconds": round(write_s, 2),
            "read_seconds": round(read_s, 2), "records_in_memory_mib": round(held / 2**20, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--commit-on", choices=("driver", "workers"), default="workers")
    ap.add_argument("--work", type=Path, default=None, help="folder for inputs and output (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="bench-simulate-", dir=args.work) as tmp:
        tmp = Path(tmp)
        model = build_model(tmp / "light_model")
        t = time.perf_counter()
        manifest = write_inputs(tmp, args.images)
        manifest_seconds = time.perf_counter() - t
        out = tmp / "out"
        cmd = [c.ANNOTATOR, "run", str(manifest), str(out), "--kind", "manifest", "--model", model,
               "--batch-size", str(args.batch_size), "--shard-size", str(args.shard_size), "--no-progress",
               "--commit-on", args.commit_on]
        load = Load()
        load.start()
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sampler = Sampler(proc.pid, out / "_progress.json", every=5.0)
        sampler.start()
        stdout, stderr = proc.communicate(timeout=4 * 3600)
        sampler.stop.set()
        sampler.join()
        load.stop.set()
        wall = time.time() - started
        if proc.returncode != 0:
            raise RuntimeError(f"annotator run failed:\n{stdout[-2000:]}\n{stderr[-3000:]}")
        status = json.loads(subprocess.run([c.ANNOTATOR, "status", str(out), "--json"], capture_output=True,
                                           text=True, check=True).stdout)
        summary = json.loads((out / "_summary.json").read_text())
        final = json.loads((out / "_manifest.json").read_text())
        at_1e8 = manifest_at(final["records"], -(-10**8 // args.shard_size), tmp / "manifest-1e8")
        sizes = {"manifest_input_bytes": manifest.stat().st_size,
                 "plan_bytes": folder_bytes(out / "_plan"),
                 "manifest_bytes": (out / "_manifest.json").stat().st_size,
                 "parts_bytes": folder_bytes(out / "parts"), "commits_bytes": folder_bytes(out / "_commits"),
                 "stats_bytes": folder_bytes(out / "_stats"), "output_bytes": folder_bytes(out)}
    s = sampler.samples
    memory = {}
    for role in ("driver", "actor", "tasks"):
        key = f"{role}_mib"
        vals = [x[key] for x in s if x.get(key) is not None and x["images"] > 0]
        memory[role] = {"start_mib": round(vals[0], 1) if vals else None,
                        "end_mib": round(vals[-1], 1) if vals else None,
                        "max_mib": round(max(vals), 1) if vals else None,
                        "mib_per_1000_images": slope_per_1000(s, key)}
    n = summary["images"]
    shards = summary["shards_committed"]
    result = {
        "machine": {**c.machine(), "load_average_1min_at_start": load_start[0]},
        "images": args.images, "shard_size": args.shard_size, "batch_size": args.batch_size,
        "commit_on": args.commit_on, "wall_seconds": round(wall, 1), "images_per_second": round(n / wall, 1),
        "manifest_write_seconds": round(manifest_seconds, 1),
        "planning_seconds": summary["plan"].get("planning_seconds"),
        "seconds_to_first_rows": summary.get("seconds_to_first_rows"),
        "steady_images_per_second": summary.get("steady_images_per_second"),
        "stage_seconds": summary.get("stage_seconds"), "images_committed": n, "shards_committed": shards,
        "shards_failed": summary["shards_failed"], "rows_in_dataset": summary["rows_in_dataset"],
        "status_state": status["state"],
        "status": {k: v for k, v in status.items() if k not in ("summary",)},
        **sizes, "parquet_bytes_per_row": round(sizes["parts_bytes"] / max(n, 1), 1),
        "manifest_bytes_per_shard": round(sizes["manifest_bytes"] / max(shards, 1), 1),
        "manifest_at_1e8_images": at_1e8, "memory": memory,
        "load_average": [[round(t - started, 1), round(v, 2)] for t, v in load.samples],
        "samples": s,
    }
    path = c.save(f"simulate-{args.images}", result, args.out)
    rows = [(k, m["start_mib"], m["max_mib"], m["end_mib"], m["mib_per_1000_images"]) for k, m in memory.items()]
    print(c.table(rows, ("process", "first MiB", "max MiB", "last MiB", "MiB/1000 images (2nd half)")))
    loads = [v for _, v in load.samples]
    print(f"\n{n} images in {shards} shards, {result['wall_seconds']} s wall ({result['images_per_second']} images/s; "
          f"steady {result['steady_images_per_second']}), failed shards {summary['shards_failed']}, "
          f"status {result['status_state']}\nmanifest {sizes['manifest_bytes']} B "
          f"({result['manifest_bytes_per_shard']} B/shard), parts {sizes['parts_bytes']} B "
          f"({result['parquet_bytes_per_row']} B/row), output {sizes['output_bytes']} B, plan {sizes['plan_bytes']} B"
          f"\nat 10^8 images: {at_1e8['shards']} shards, final manifest {at_1e8['bytes']} B, written in "
          f"{at_1e8['write_seconds']} s, read in {at_1e8['read_seconds']} s, "
          f"records {at_1e8['records_in_memory_mib']} MiB"
          f"\nload average 1 min: start {load_start[0]}, during {min(loads, default=0):.2f}-{max(loads, default=0):.2f}"
          f" -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
