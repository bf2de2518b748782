"""Change detection against a frozen plan: a synthetic Parquet manifest of 10^6 URIs (with size and
etag columns) is planned, then compared with itself (an unchanged rerun) and with a grown copy
(+1,000 rows, -500 rows, 500 rows with another etag), then the grown copy's new rows are appended
as a plan segment.

Each comparison runs in a fresh subprocess that reports its wall time and peak RSS (VmHWM) next to
the RSS it had before (Python + imports), so the growth is the comparison's own.
Target (issue 26): 10^6 objects in <= 60 s and <= 1 GiB.

    .venv/bin/python bench/changes.py [--sizes 100000,1000000] [--shard-size 256]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

ADDED, REMOVED, CHANGED = 1000, 500, 500

CHILD = c.CHILD_PRELUDE + r"""
from annotator.pipeline import changes, plan
manifest, plan_dir, shard_size, append = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
opts = plan.PlanOptions(manifest, kind="manifest", shard_size=shard_size)
t = time.perf_counter()
p = plan.load(plan_dir)
load_s = time.perf_counter() - t
t = time.perf_counter()
if append:
    grown, report = changes.reconcile(p, opts, append=True)
else:
    found, _ = changes.detect(p, opts)
    report = found.to_dict()
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "load_seconds": load_s, "added": report["added"],
                  "removed": report["removed"], "changed": report["changed"],
                  "appended_shards": report.get("appended_shards"),
                  "rss_before_mib": before / 1024, "peak_rss_mib": status_kib("VmHWM") / 1024}))
"""


def write_manifest(path: Path, n: int, grown: bool = False) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = list(range(REMOVED, n + ADDED)) if grown else list(range(n))
    uris = [f"gs://bucket/photos/{i // 1000:05d}/img_{i:09d}.jpg" for i in ids]
    etags = [f"etag-{i}{'-v2' if grown and REMOVED <= i < REMOVED + CHANGED else ''}" for i in ids]
    sizes = [50_000 + i % 1000 for i in ids]
    pq.write_table(pa.table({"uri": uris, "size": pa.array(sizes, pa.int64()), "etag": etags}), path)


def child(manifest: Path, plan_dir: str, shard_size: int, append: bool) -> dict:
    return c.run_child(CHILD, str(manifest), plan_dir, str(shard_size), "1" if append else "0")


def main() -> int:
    from annotator.pipeline import plan

    args = c.plan_sizes_args(__doc__, "100000,1000000")
    result = {"machine": c.machine(), "shard_size": args.shard_size, "runs": []}
    rows = []
    for n, manifest, tmp in c.sized_manifests(args.sizes, "bench-changes-", write_manifest):
        plan_dir = f"{tmp}/plan_{n}"
        plan.create(plan.PlanOptions(str(manifest), kind="manifest", shard_size=args.shard_size), plan_dir)
        for case, grown, append in (("unchanged", False, False), ("grown", True, False),
                                    ("grown + append", True, True)):
            if grown:
                write_manifest(manifest, n, grown=True)
            r = child(manifest, plan_dir, args.shard_size, append)
            expect = (0, 0, 0) if not grown else (ADDED, REMOVED, CHANGED)
            assert (r["added"], r["removed"], r["changed"]) == expect, (case, r)
            result["runs"].append({"objects": n, "case": case, **r})
            rows.append((n, case, r["seconds"], r["load_seconds"], r["peak_rss_mib"], r["growth_mib"],
                         f"+{r['added']} -{r['removed']} ~{r['changed']}"))
            print(rows[-1], flush=True)
    path = c.save("changes", result, args.out)
    print(c.table(rows, ("objects", "case", "seconds", "plan load s", "peak RSS MiB", "growth MiB", "found")))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
