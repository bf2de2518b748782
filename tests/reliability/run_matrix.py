"""The longer reliability runs, outside CI: every driver kill point of ``killer.POINTS`` (a kill, then
a rerun that must finish the job), jobs on ``gs://`` and ``s3://`` through the fault proxy, and an
actor and a node lost on a 3-node loopback cluster.
Each scenario is checked as the tests check it (``common.rows_by_id``: through the manifest, parts
verified, nothing unlisted under ``parts/``) and compared with an uninterrupted run; the table
(``bench/results/reliability.md``, and ``.json`` beside it) is what docs/reliability.md shows.

    .venv/bin/python -m tests.reliability.run_matrix [--photos 47] [--only POINT,...] [--stores gs,s3]
                                                    [--rate 0.1] [--no-cluster] [--out bench/results]

Everything runs on this machine: one local Ray for all drivers (started here, on loopback),
emulators and the proxy on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from tests.reliability.common import PYTHON, REPO, assert_same, make_photos, rows_by_id, spec_toml  # noqa: E402
from tests.reliability.killer import POINTS  # noqa: E402

COLUMNS = ("scenario", "load", "faults", "jobs_completed", "rows_expected", "rows_written", "rows_lost",
           "rows_duplicated", "retries", "shards_kept", "seconds", "overhead", "labels_equal")


def run(cmd: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO, env=env)
    return proc, time.perf_counter() - started


def annotator(spec: Path, point: str | None = None, env: dict | None = None):
    pre = [PYTHON, "-m", "tests.reliability.killer", point, "--"] if point else [PYTHON, "-m", "annotator.cli"]
    return run([*pre, "run", "--spec", str(spec)], env)


def outcome(output: str, reference: dict, storage_options: dict | None = None,
            moved: tuple[str, str] | None = None) -> dict:
    """Rows expected / written / lost / duplicated, and whether the labels equal the reference's.
    Counted from the parts the manifest lists (each verified), before any assert can stop it."""
    from annotator.pipeline import layout

    out = layout.Output(output, storage_options)
    ids = out.read_table(["image_id"]).column("image_id").to_pylist()
    row = {"rows_expected": len(reference), "rows_written": len(ids),
           "rows_lost": len(set(reference) - set(ids)), "rows_duplicated": len(ids) - len(set(ids))}
    try:
        assert_same(rows_by_id(output, storage_options), reference, moved)
        row["labels_equal"] = True
    except AssertionError as e:
        row["labels_equal"] = False
        row["why"] = str(e)[:300]
    return row


def driver_kills(work: Path, points: list[str], photos: Path, model: str, address: str, reference: dict,
                 base_seconds: float, load: str) -> list[dict]:
    rows = []
    for point in points:
        out = work / f"kill-{point}"
        spec = spec_toml(work / f"kill-{point}.toml", str(photos), str(out), model, {"ray_address": address},
                         manifest_interval_s=0.0)
        killed, t1 = annotator(spec, point)
        rerun, t2 = annotator(spec)
        row = {"scenario": f"driver SIGKILL: {point}", "load": load, "faults": f"1 kill ({POINTS[point][1]})",
               "jobs_completed": f"{int(rerun.returncode == 0)}/1",
               "seconds": round(t1 + t2, 1), "overhead": f"{(t1 + t2) / base_seconds - 1:+.0%}",
               "killed": killed.returncode == -9}
        if killed.returncode != -9:
            row["why"] = f"not killed (rc {killed.returncode}): " + killed.stderr[-300:]
        if rerun.returncode == 0:
            s = json.loads((out / "_summary.json").read_text())
            # shards_kept: committed before the kill, not redone by the rerun
            row.update(outcome(str(out), reference), shards_kept=s["shards_skipped"], retries=s["storage_retries"])
        else:
            row["why"] = rerun.stderr[-500:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def flaky_stores(work: Path, stores: list[str], photos: Path, model: str, address: str, reference: dict,
                 rate: float, load: str) -> list[dict]:
    from tests.reliability.flaky import flaky_store, upload

    rows = []
    for store in stores:
        for faulty in (False, True):
            with flaky_store(store, rate if faulty else 0.0, seed=1) as (proxy, options, fs):
                src, out = upload(fs, store, photos)
                spec = spec_toml(work / f"{store}-{faulty}.toml", src, out, model,
                                 {"ray_address": address, "read_retries": 3}, storage_options=options)
                proc, seconds = annotator(spec)
                row = {"scenario": f"{store}:// {'through the fault proxy' if faulty else 'direct (baseline)'}",
                       "load": load, "faults": f"{proxy.total_faults}/{proxy.requests} requests "
                       f"({', '.join(f'{k} {v}' for k, v in sorted(proxy.faults.items())) or 'none'})",
                       "jobs_completed": f"{int(proc.returncode == 0)}/1", "seconds": round(seconds, 1)}
                proxy.rate = 0.0  # read the result back without faults
                if proc.returncode == 0:
                    s = json.loads(fs.cat_file(out.split("://", 1)[1] + "/_summary.json"))
                    row.update(outcome(out, reference, options, (src, str(photos))), retries=s["storage_retries"],
                               shards_failed=s["shards_failed"])
                else:
                    row["why"] = proc.stderr[-500:]
            if not faulty:
                base = seconds
            else:
                row["overhead"] = f"{seconds / base - 1:+.0%}"
            row.setdefault("overhead", "-")
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def cluster_faults(work: Path, photos: Path, reference: dict, load: str) -> list[dict]:
    """A head and two 1-GPU worker nodes on loopback (``cluster.py``), two inference actors and the
    busy model (each call ~1 s of CPU, same labels): an uninterrupted run, then one with an actor
    SIGKILLed mid-batch, then one that loses a worker node mid-run (as ``test_cluster.py`` does)."""
    import signal

    from tests.reliability.cluster import loopback_cluster, wait_for
    from tests.reliability.common import tiny_model_folder
    from tests.reliability.conftest import BUSY_WORK
    from tests.reliability.test_cluster import TWO_ACTORS, cpu_ticks

    busy = tiny_model_folder(work / "busy_model", BUSY_WORK)
    rows: list[dict] = []
    with loopback_cluster(head_cpus=2, worker_cpus=1, workers=2) as c:
        def commits(out: Path) -> int:
            return len(list((out / "_commits").glob("part-*.json"))) if (out / "_commits").exists() else 0

        def busy_actor():
            for pid in c.inference_actors():
                before = cpu_ticks(pid)
                time.sleep(0.2)
                if cpu_ticks(pid) - before >= 5:
                    return pid
            return None

        def actor_kill(out: Path, proc) -> str:
            os.kill(wait_for(busy_actor, 300, "an actor in a batch"), signal.SIGKILL)
            return "1 inference actor SIGKILLed mid-batch"

        def node_loss(out: Path, proc) -> str:
            wait_for(lambda: len(c.inference_actors()) == 2 or proc.poll() is not None, 300, "both actors")
            c.kill_worker(c.nodes[-1])
            return f"1 of 2 worker nodes killed after {commits(out)}/{(len(reference) + 1) // 2} commits"

        base = None
        for name, fault in (("cluster: uninterrupted", None), ("cluster: actor SIGKILL", actor_kill),
                            ("cluster: worker node lost", node_loss)):
            out = work / name.replace(" ", "_").replace(":", "")
            spec = spec_toml(work / f"{out.name}.toml", str(photos), str(out), busy,
                             {**TWO_ACTORS, "ray_address": c.address, "no_progress_timeout_s": 30.0})
            started = time.perf_counter()
            proc = subprocess.Popen([PYTHON, "-m", "annotator.cli", "run", "--spec", str(spec)], cwd=REPO,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            what = "none"
            if fault:
                wait_for(lambda o=out, p=proc: commits(o) >= 1 or p.poll() is not None, 600, "a first commit")
                what = fault(out, proc)
            log, _ = proc.communicate(timeout=1800)
            seconds = time.perf_counter() - started
            base = base or seconds
            row = {"scenario": name, "load": f"{load}, busy model, 2 actors", "faults": what,
                   "jobs_completed": f"{int(proc.returncode == 0)}/1", "seconds": round(seconds, 1),
                   "overhead": f"{seconds / base - 1:+.0%}" if fault else "-"}
            if proc.returncode == 0:
                s = json.loads((out / "_summary.json").read_text())
                row.update(outcome(str(out), reference), retries=s["storage_retries"], rounds=s["rounds"])
            else:
                row["why"] = log[-500:]
            rows.append(row)
            print(json.dumps(row), flush=True)
            if fault is node_loss:
                c.add_worker()
    return rows


def context() -> dict:
    """When, on what, with which versions (as bench/results/*.json carry them)."""
    from importlib.metadata import version

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit, "cpus": os.cpu_count(),
            "versions": {p: version(p) for p in ("ray", "apache-beam", "gcsfs", "s3fs", "botocore", "moto")}}


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=47, help="real photos (+1 broken file), 2 per shard")
    ap.add_argument("--only", default=",".join(POINTS), help="kill points (comma-separated; '' for none)")
    ap.add_argument("--stores", default="gs,s3", help="object stores behind the fault proxy ('' for none)")
    ap.add_argument("--rate", type=float, default=0.1, help="share of proxied requests that fail")
    ap.add_argument("--no-cluster", action="store_true", help="skip the 3-node cluster scenarios")
    ap.add_argument("--out", default=str(REPO / "bench/results"))
    ap.add_argument("--work", default=None, help="scratch folder (default: a new temp folder)")
    args = ap.parse_args(argv)
    import ray

    from tests.reliability.common import tiny_model_folder

    work = Path(args.work or tempfile.mkdtemp(prefix="reliability-"))
    photos = work / "photos"
    if not photos.exists():
        make_photos(photos, args.photos)
    model = tiny_model_folder(work / "tiny_model")
    load = f"{args.photos + 1} images, {(args.photos + 2) // 2} shards"
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        address = ray.get_runtime_context().gcs_address
        ref_out = work / "reference"
        spec = spec_toml(work / "reference.toml", str(photos), str(ref_out), model, {"ray_address": address})
        proc, base_seconds = annotator(spec)
        assert proc.returncode == 0, proc.stderr[-3000:]
        reference = rows_by_id(str(ref_out))
        rows = [{"scenario": "uninterrupted (reference)", "load": load, "faults": "none", "jobs_completed": "1/1",
                 "rows_expected": len(reference), "rows_written": len(reference), "rows_lost": 0,
                 "rows_duplicated": 0, "retries": 0, "seconds": round(base_seconds, 1), "overhead": "-",
                 "labels_equal": True}]
        points = [p for p in args.only.split(",") if p]
        rows += driver_kills(work, points, photos, model, address, reference, base_seconds, load)
        stores = [s for s in args.stores.split(",") if s]
        rows += flaky_stores(work, stores, photos, model, address, reference, args.rate, load)
    finally:
        ray.shutdown()
    if not args.no_cluster:
        rows += cluster_faults(work, photos, reference, load)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps({**context(), "args": vars(args), "rows": rows}, indent=1))
    (out / "reliability.md").write_text(table(rows) + "\n")
    print(table(rows))
    bad = [r for r in rows if r.get("jobs_completed") != "1/1" or r.get("rows_lost") or r.get("rows_duplicated")
           or not r.get("labels_equal") or r.get("killed") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
