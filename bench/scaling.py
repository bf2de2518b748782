"""1 vs 2 inference actors on the embedded local Ray (a logical split of this machine's cores).

Each actor reserves ``(cores - 0.5) / actors`` CPUs (half a core stays free for the read and decode
tasks: an actor pool that reserves every CPU never gets its input). TensorFlow in each actor uses
every core whatever it reserves, so two actors on this machine share the same cores.
One run per actor count; its steady-state rate is the run summary's (each actor's images after its
first batch over the time after it, summed over actors: start-up, model loads and warm-up
excluded, waits for input included); its end-to-end rate counts everything.

    .venv/bin/python bench/scaling.py [--images 48] [--max-side 960]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-side", type=int, default=960, help="downsize the frames (default 960 px)")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cores = os.cpu_count() or 2
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        c.frames(work / "frames", args.images, every=2, max_side=args.max_side)
        result = {"machine": c.machine(), "images": args.images, "max_side": args.max_side,
                  "batch_size": args.batch_size, "runs": []}
        rows = []
        base = None
        for actors in (int(a) for a in args.actors.split(",")):
            cpus = round((cores - 0.5) / actors, 2)
            run_args = ["--actors", str(actors), "--cpus-per-actor", str(cpus), "--batch-size",
                        str(args.batch_size), "--shard-size", str(args.batch_size)]
            print(f"{actors} actor(s) ...", flush=True)
            done = c.annotator_run(work / "frames", work / f"out_{actors}", *run_args)
            steady = done["summary"]["steady_images_per_second"]
            base = base or steady
            run = {"actors": actors, "cpus_per_actor": cpus, "wall_seconds": done["wall_seconds"],
                   "images_per_second": steady, "speedup": round(steady / base, 3),
                   "end_to_end_images_per_second": round(args.images / done["wall_seconds"], 3),
                   "seconds_to_first_rows": done["summary"]["seconds_to_first_rows"]}
            result["runs"].append(run)
            rows.append((actors, cpus, steady, run["speedup"], run["end_to_end_images_per_second"]))
        path = c.save("scaling", result, args.out)
        print(c.table(rows, ("actors", "CPUs/actor", "images/s (steady)", "speedup", "end-to-end images/s")))
        print(f"\n{cores} cores -> {path}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
