"""1 vs 2 inference actors on the embedded local Ray (a logical split of this machine's cores).

Each actor gets ``cores / actors`` CPUs. Steady-state rates by the two-run difference method
(fixed start-up costs cancel): (N_big - N_small) / (t_big - t_small) per actor count.

    .venv/bin/python bench/scaling.py [--images 32] [--small 8] [--max-side 960]
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
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--small", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-side", type=int, default=960, help="downsize the frames (default 960 px)")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cores = os.cpu_count() or 2
    work = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    try:
        paths = c.frames(work / "frames", args.images, max_side=args.max_side)
        dirs = {}
        for name, n in (("small", args.small), ("big", args.images)):
            d = work / name
            d.mkdir()
            for p in paths[:n]:
                shutil.copy(p, d / p.name)
            dirs[name] = d
        result = {"machine": c.machine(), "images": args.images, "small_images": args.small,
                  "batch_size": args.batch_size, "runs": []}
        rows = []
        base = None
        for actors in (int(a) for a in args.actors.split(",")):
            cpus = round(cores / actors, 2)
            run_args = ["--actors", str(actors), "--cpus-per-actor", str(cpus), "--batch-size",
                        str(args.batch_size), "--shard-size", str(args.batch_size)]
            walls = {}
            for name in ("small", "big"):
                print(f"{actors} actor(s), {name} run ...", flush=True)
                walls[name] = c.annotator_run(dirs[name], work / f"out_{actors}_{name}", *run_args)["wall_seconds"]
            steady = (args.images - args.small) / (walls["big"] - walls["small"])
            base = base or steady
            run = {"actors": actors, "cpus_per_actor": cpus, "small_wall_seconds": walls["small"],
                   "big_wall_seconds": walls["big"], "images_per_second": round(steady, 3),
                   "speedup": round(steady / base, 3)}
            result["runs"].append(run)
            rows.append((actors, cpus, run["images_per_second"], run["speedup"]))
        path = c.save("scaling", result, args.out)
        print(c.table(rows, ("actors", "CPUs/actor", "images/s (steady)", "speedup")))
        print(f"\n{cores} cores -> {path}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
