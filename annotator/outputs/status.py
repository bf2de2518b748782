"""``annotator status OUTPUT``: what a job's output holds, for a running or finished job.

Reads only small, known files (never a glob of the data): ``_plan/plan.json`` for the shard count,
``_manifest.json`` for committed parts (refreshed by a running job every ``manifest_interval_s``),
``_progress.json`` (every few seconds: rates, ETA, fresher dataset totals), ``_summary.json`` and
``_lock`` (is a job writing right now?). ``OUTPUT@vN`` reads version N; ``OUTPUT`` its latest
(``pipeline.versions``), saying which versions exist and which newer one is being built.
"""

from __future__ import annotations

import time

from annotator.pipeline import layout, versions
from annotator.pipeline import plan as plan_mod

TOTALS = ("shards_committed", "rows", "rows_ok", "rows_error", "people", "errors_by_reason")


def read(output_uri: str, storage_options: dict | None = None, stale_after_s: float = 300.0) -> dict:
    out = layout.Output.open(output_uri, storage_options)
    if not out.fs.exists(out.root):
        raise FileNotFoundError(f"{output_uri} does not exist")
    lineage = versions.read(out.base_uri, storage_options)
    plan = plan_mod.read_meta(f"{out.uri.rstrip('/')}/{layout.PLAN}", storage_options)  # with its appends' totals
    manifest = out.read_json(layout.MANIFEST) or {}
    progress = out.read_json(layout.PROGRESS) or {}
    summary = out.read_json(layout.SUMMARY) or {}
    lock = out.read_json(layout.LOCK)
    totals = {k: manifest.get(k, {} if k == "errors_by_reason" else 0) for k in TOTALS}
    live = progress.get("dataset")
    if live and progress.get("updated_at", 0) > manifest.get("updated_at", 0):
        totals = {k: live[k] for k in TOTALS}
    running = bool(lock) and time.time() - float(lock.get("heartbeat_at", 0)) < stale_after_s
    state = progress.get("state") or ("finished" if summary else "not started")
    if state == "running" and not running:
        state = "interrupted"
    finished_run = summary.get("attempt_id") and summary.get("attempt_id") == progress.get("attempt_id")
    return {
        "output": output_uri,
        "state": state,
        "shards_total": plan.get("num_shards"),
        **totals,
        "images_planned": plan.get("num_members"),
        "shards_failed": progress.get("shards_failed", 0),
        "failed_shards": summary.get("failed_shards", {}) if finished_run else {},
        "progress": {k: progress.get(k) for k in ("images_per_second", "people_per_second", "error_rate",
                                                  "eta_seconds", "elapsed_seconds", "processed", "updated_at")},
        "lock": lock,
        "finished": state in ("finished", "failed"),
        "summary": summary,
        "version": None if lineage is None else {
            "number": out.version or 1, "latest": lineage.get("latest"),
            "parent": next((v.get("parent") for v in lineage["versions"] if v["version"] == (out.version or 1)), None),
            "states": {f"v{v['version']}": versions.state(v, lineage) for v in lineage["versions"]}},
    }


def to_text(st: dict) -> str:
    """What ``annotator status`` prints."""
    total = st["shards_total"] if st["shards_total"] is not None else "?"
    p = st["progress"]
    lines = [
        f"output:  {st['output']}",
        f"state:   {st['state']}" + (f" (host {st['lock'].get('host')}, pid {st['lock'].get('pid')})"
                                     if st["state"] == "running" and st["lock"] else ""),
        f"shards:  {st['shards_committed']}/{total} committed"
        + (f", {st['shards_failed']} failed" if st["shards_failed"] else ""),
        f"rows:    {st['rows']} ({st['rows_ok']} ok, {st['rows_error']} errors)",
        f"people:  {st['people']}",
    ]
    if p.get("images_per_second") is not None:
        eta = p.get("eta_seconds")
        lines.append(f"speed:   {p['images_per_second']} images/s, {p['people_per_second']} people/s, "
                     f"error rate {100 * (p['error_rate'] or 0):.1f}%"
                     + (f", ETA {eta:.0f} s" if st["state"] == "running" and eta is not None else ""))
    if st["errors_by_reason"]:
        lines.append("errors:  " + ", ".join(f"{k}={v}" for k, v in sorted(st["errors_by_reason"].items())))
    for shard, reason in st["failed_shards"].items():
        lines.append(f"failed:  shard {shard}: {reason}")
    v = st.get("version")
    if v:
        lines.insert(1, f"version: v{v['number']}" + (f" (parent v{v['parent']})" if v["parent"] else "") + "; "
                     + ", ".join(f"{k} {s}" for k, s in v["states"].items()))
    return "\n".join(lines)
