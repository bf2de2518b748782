"""Pipeline vs bare model vs a naive loop, on the same images, batch size and num_aug, in one run.

(a) bare: the exported SavedModel in a tight loop on pre-decoded batches (the physical limit);
(b) pipeline: ``annotator run`` end to end on the embedded local Ray (read, decode, infer, commit);
(c) Beam: ``annotator run --runner beam`` end to end (DirectRunner, in one process: read, decode and
    infer share one thread, so it shows the cost of giving up Ray's parallel decode on this machine);
(d) naive: what a user would write: a Python script that imports TensorFlow, loads the model, and
    for each file: Pillow decode, one ``detect_poses`` call; collect rows, pandas to Parquet. It
    runs in its own process, so its end-to-end time counts its imports as the pipeline's counts
    ``annotator run``'s (before 2026-12-01 it ran inside the bench, after TensorFlow was imported).

More images than the clip's 96 frames (``--images 500``) repeat frames under new names: each is
read, decoded and labelled again, so the rates hold; the labels are not new.

The pipeline's fixed cost (Ray start, model load, graph warm-up) is paid once per job, so its
steady-state rate is the one the run summary measures (``steady_images_per_second``): each actor's
(or Beam worker's) images after its first batch over the time after it (waits for input included),
summed over actors. The bare model and the naive loop exclude their model load and first-call warm-up the same
way. End-to-end rates (every fixed
cost included) are printed next to them.

    .venv/bin/python bench/pipeline.py [--images 96] [--batch-size 8] [--num-aug 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def naive(model_path: str, frames: Path, n: int, num_aug: int, out: Path) -> dict:
    """The naive loop in a fresh Python process, as a user runs their script: end to end is that
    process's wall time (interpreter start and imports included); the loop's steady rate excludes
    its model load and first call, reported apart."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--naive-child", model_path, str(frames), str(n), str(num_aug),
                           str(out)], capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"naive loop failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**result, "wall_seconds": round(wall, 2), "end_to_end_images_per_second": round(n / wall, 3)}


def naive_child(model_path: str, frames: Path, n: int, num_aug: int, out: Path) -> dict:
    """The loop a user writes without annotator."""
    import_started = time.perf_counter()
    import numpy as np
    import pandas as pd
    import tensorflow as tf
    from PIL import Image

    paths = sorted(frames.glob("*.jpg"))[:n]
    import_s = time.perf_counter() - import_started
    started = time.perf_counter()
    model = tf.saved_model.load(model_path)
    load_s = time.perf_counter() - started
    first = time.perf_counter()
    model.detect_poses(np.asarray(Image.open(paths[0]).convert("RGB")), num_aug=num_aug)
    warmup_s = time.perf_counter() - first
    loop_started = time.perf_counter()
    rows = []
    for p in paths:
        image = np.asarray(Image.open(p).convert("RGB"))
        pred = model.detect_poses(image, num_aug=num_aug)
        rows.append({"file": p.name, "boxes": pred["boxes"].numpy().tolist(),
                     "poses2d": pred["poses2d"].numpy().tolist(), "poses3d": pred["poses3d"].numpy().tolist()})
    pd.DataFrame(rows).to_parquet(out)
    loop_s = time.perf_counter() - loop_started
    n = len(paths)
    return {"images": n, "import_seconds": round(import_s, 2), "load_seconds": round(load_s, 2),
            "warmup_seconds": round(warmup_s, 2), "loop_seconds": round(loop_s, 2),
            "images_per_second": round(n / loop_s, 3)}


def repeated(paths: list[Path], n: int) -> list[Path]:
    """``n`` image files: ``paths``, then hard links to them under new names (r1_..., r2_...)."""
    out = list(paths)
    k = 0
    while len(out) < n:
        src = paths[k % len(paths)]
        link = src.with_name(f"r{k // len(paths) + 1}_{src.name}")
        if not link.exists():
            os.link(src, link)
        out.append(link)
        k += 1
    return sorted(out[:n])


def main() -> int:
    if sys.argv[1:2] == ["--naive-child"]:
        model_path, frames, n, num_aug, out = sys.argv[2:7]
        print(json.dumps(naive_child(model_path, Path(frames), int(n), int(num_aug), Path(out))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96, help="images of the pipeline run and of the loops")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-aug", type=int, default=1)
    ap.add_argument("--max-side", type=int, default=None, help="downsize the 1088x1920 frames")
    ap.add_argument("--model", default="default")
    ap.add_argument("--gpus-per-actor", type=float, default=0.0)
    ap.add_argument("--no-beam", action="store_true", help="skip the Beam runner row")
    ap.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/pipeline.json)")
    args = ap.parse_args()

    from annotator.models import loader

    model = loader.resolve(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        paths = repeated(c.frames(work / "frames", args.images, every=2, max_side=args.max_side), args.images)
        run_args = ["--batch-size", str(args.batch_size), "--num-aug", str(args.num_aug), "--shard-size",
                    str(max(args.batch_size, 16)), "--model", args.model]
        if args.gpus_per_actor:
            run_args += ["--gpus-per-actor", str(args.gpus_per_actor)]
        result: dict = {"machine": c.machine(), "images": args.images,
                        "batch_size": args.batch_size, "num_aug": args.num_aug, "model": model.to_dict(),
                        "image_size": list(c.decode_all(paths[:1])[0].shape[:2])}
        print(f"pipeline: {args.images} images ...", flush=True)
        run = c.annotator_run(work / "frames", work / "out", *run_args)
        summ = run["summary"]
        result["pipeline"] = {
            "wall_seconds": run["wall_seconds"],
            "images_per_second": summ["steady_images_per_second"],
            "end_to_end_images_per_second": round(args.images / run["wall_seconds"], 3),
            "seconds_to_first_rows": summ["seconds_to_first_rows"],
            "stage_seconds": summ.get("stage_seconds"), "people": summ.get("people")}

        import tensorflow as tf

        print("bare model ...", flush=True)
        loaded = tf.saved_model.load(model.path)
        images = c.decode_all(paths)
        result["bare"] = c.bare_batched(loaded, images, args.batch_size, args.num_aug)
        del loaded, images
        print("naive loop ...", flush=True)
        result["naive"] = naive(model.path, work / "frames", args.images, args.num_aug, work / "naive.parquet")
        if args.no_beam:
            result["beam"] = {"available": False, "why": "--no-beam"}
        else:
            print(f"Beam runner: {args.images} images ...", flush=True)
            brun = c.annotator_run(work / "frames", work / "out-beam", *run_args, "--runner", "beam")
            bs = brun["summary"]
            result["beam"] = {
                "available": True, "wall_seconds": brun["wall_seconds"],
                "images_per_second": bs["steady_images_per_second"],
                "end_to_end_images_per_second": round(args.images / brun["wall_seconds"], 3),
                "stage_seconds": bs.get("stage_seconds"), "people": bs.get("people")}

        p, b, n = (result[k]["images_per_second"] for k in ("pipeline", "bare", "naive"))
        result["ratios"] = {"pipeline_over_bare": round(p / b, 3), "pipeline_over_naive": round(p / n, 3),
                            "pipeline_e2e_over_naive_e2e": round(
                                result["pipeline"]["end_to_end_images_per_second"]
                                / result["naive"]["end_to_end_images_per_second"], 3)}
        if result["beam"]["available"]:
            result["ratios"]["beam_over_bare"] = round(result["beam"]["images_per_second"] / b, 3)
            result["ratios"]["beam_over_pipeline"] = round(result["beam"]["images_per_second"] / p, 3)
        path = c.save("pipeline", result, args.out)
        rows = [
            ("bare model (batched, pre-decoded)", b, "-"),
            ("pipeline, steady state", p, result["pipeline"]["end_to_end_images_per_second"]),
            ("Beam runner (DirectRunner), steady state", result["beam"].get("images_per_second", "n/a"),
             result["beam"].get("end_to_end_images_per_second", "n/a")),
            ("naive loop", n, result["naive"]["end_to_end_images_per_second"]),
        ]
        print(c.table(rows, ("method", "images/s", "end-to-end images/s")))
        r = result["ratios"]
        print(f"\nefficiency pipeline/bare = {r['pipeline_over_bare']}   pipeline/naive = {r['pipeline_over_naive']}"
              f"   Beam/bare = {r.get('beam_over_bare', 'n/a')}"
              f"   (end to end: {r['pipeline_e2e_over_naive_e2e']})   pipeline's first labels after "
              f"{result['pipeline']['seconds_to_first_rows']} s\n{result['images']} images "
              f"{result['image_size'][1]}x{result['image_size'][0]}, batch {args.batch_size}, num_aug "
              f"{args.num_aug}, {result['machine']['cores']} cores -> {path}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
