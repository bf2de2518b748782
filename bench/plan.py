"""Planning cost vs input size: a synthetic Parquet manifest of 10^4, 10^5, 10^6 URIs -> frozen plan.

Each size is planned in a fresh subprocess that reports its wall time and peak RSS (VmHWM: unlike
ru_maxrss it is not inherited from the parent across fork + exec), next to the RSS it had before
planning (Python + imports), so the growth is the plan's own.
Target: 10^6 URIs in under 30 s and 1 GiB.

    .venv/bin/python bench/plan.py [--sizes 10000,100000,1000000] [--shard-size 256]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

CHILD = c.CHILD_PRELUDE + r"""
from annotator.pipeline import plan
manifest, out, shard_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
p = plan.create(plan.PlanOptions(manifest, kind="manifest", shard_size=shard_size), out)
planned = time.perf_counter() - t
t = time.perf_counter()
again = plan.load(out)
reload_s = time.perf_counter() - t
assert again.num_members == p.num_members
print(json.dumps({"seconds": planned, "reload_seconds": reload_s, "shards": p.num_shards,
                  "members": p.num_members, "rss_before_mib": before / 1024,
                  "peak_rss_mib": status_kib("VmHWM") / 1024}))
"""


def write_manifest(path: Path, n: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    uris = pa.array([f"gs://bucket/photos/{i // 1000:05d}/img_{i:09d}.jpg" for i in range(n)])
    pq.write_table(pa.table({"uri": uris}), path)


def main() -> int:
    args = c.plan_sizes_args(__doc__, "10000,100000,1000000")
    result = {"machine": c.machine(), "shard_size": args.shard_size, "runs": []}
    rows = []
    for n, manifest, tmp in c.sized_manifests(args.sizes, "bench-plan-", write_manifest):
        r = c.run_child(CHILD, str(manifest), f"{tmp}/plan_{n}", str(args.shard_size))
        plan_bytes = sum(f.stat().st_size for f in Path(tmp, f"plan_{n}").rglob("*") if f.is_file())
        run = {"uris": n, **r, "plan_mib_on_disk": round(plan_bytes / 2**20, 2)}
        result["runs"].append(run)
        rows.append((n, run["seconds"], run["peak_rss_mib"], run["growth_mib"], run["shards"],
                     run["plan_mib_on_disk"], run["reload_seconds"]))
        print(rows[-1], flush=True)
    path = c.save("plan", result, args.out)
    print(c.table(rows, ("URIs", "seconds", "peak RSS MiB", "growth MiB", "shards", "plan MiB", "reload s")))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
