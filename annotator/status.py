"""``annotator status OUTPUT``: what a job's output holds, from its commit records and summary."""

from __future__ import annotations

import json
from collections import Counter

import fsspec


def read(output_uri: str) -> dict:
    fs, root = fsspec.core.url_to_fs(output_uri)
    root = root.rstrip("/")
    if not fs.exists(root):
        raise FileNotFoundError(f"{output_uri} does not exist")
    commits = [json.loads(fs.cat_file(p)) for p in fs.glob(f"{root}/_commits/part-*.json")]
    summary = {}
    if fs.exists(f"{root}/_summary.json"):
        summary = json.loads(fs.cat_file(f"{root}/_summary.json"))
    errors: Counter = Counter()
    for reason, n in (summary.get("errors_by_reason") or {}).items():
        errors[reason] += n
    return {
        "output": output_uri,
        "shards_total": summary.get("shards_total"),
        "shards_committed": len(commits),
        "rows": sum(c["rows"] for c in commits),
        "rows_ok": sum(c["rows_ok"] for c in commits),
        "rows_error": sum(c["rows_error"] for c in commits),
        "people": sum(c["people"] for c in commits),
        "errors_by_reason": dict(errors),
        "finished": bool(summary),
        "summary": summary,
    }


def format(st: dict) -> str:
    total = st["shards_total"] if st["shards_total"] is not None else "?"
    lines = [
        f"output:  {st['output']}",
        f"shards:  {st['shards_committed']}/{total} committed"
        + ("" if st["finished"] else " (running or interrupted)"),
        f"rows:    {st['rows']} ({st['rows_ok']} ok, {st['rows_error']} errors)",
        f"people:  {st['people']}",
    ]
    if st["errors_by_reason"]:
        lines.append("errors:  " + ", ".join(f"{k}={v}" for k, v in sorted(st["errors_by_reason"].items())))
    return "\n".join(lines)
