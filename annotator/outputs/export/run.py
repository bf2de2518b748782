"""The export driver: checks the source, locks DEST, works out what is left, runs one task per
source part (threads, or Ray tasks for large outputs), then writes DEST's manifest.

Exactly-once like ``annotator run``: each source part becomes one file under DEST, written by the
sink's commit protocol (attempt -> commit record -> publish), so a killed export rerun with the same
settings keeps what was committed and redoes the rest under the same names; the bytes are
deterministic, so a part written twice (a retried task) is the same file. ``DEST/_export.json``
records the settings and the source; another export into the same DEST is refused unless
``overwrite``. DEST layout::

    _export.json, _lock, _attempts/, _commits/part-<shard>.json, _manifest.json
    <shard>.tar                       webdataset, crops (one per source part, even if empty)
    _coco/part-<shard>.json           coco: the committed parts of ...
    person_keypoints.json             ... the one COCO file, rebuilt at the end
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

from annotator.labels import schema
from annotator.outputs import status as status_mod
from annotator.outputs.export import coco, crops, webdataset
from annotator.outputs.export.config import ExportConfig, PartTask, fingerprint
from annotator.pipeline import layout, sources
from annotator.pipeline.lock import OutputLock
from annotator.pipeline.sink import CommitSink

log = logging.getLogger(__name__)

EXPORT = "_export.json"
WRITERS: dict[str, Callable[[PartTask, CommitSink], dict]] = {
    "webdataset": webdataset.write_part, "coco": coco.write_part, "crops": crops.write_part}
TOTALS = ("samples", "people", "bytes", "rows_in")


class ExportError(RuntimeError):
    """The source cannot be exported (still running, failed, not an output) or DEST holds another export."""


def check_source(source: str, storage_options: dict | None) -> dict:
    """The source's status; raises ``ExportError`` unless it is a finished, complete output."""
    try:
        st = status_mod.read(source, storage_options)
    except FileNotFoundError as e:
        raise ExportError(str(e)) from e
    manifest = layout.Output.open(source, storage_options).read_json(layout.MANIFEST) or {}
    state, total = st["state"], st["shards_total"]
    progress = f"{st['shards_committed']} of {total if total is not None else '?'} shard(s) committed"
    if state == "running":
        lock = st["lock"] or {}
        raise ExportError(f"{source} is still being written (host {lock.get('host')}, pid {lock.get('pid')}; "
                          f"{progress}): export it when the job has finished")
    if state == "failed":
        failed = ", ".join(st["failed_shards"]) or str(st["shards_failed"])
        raise ExportError(f"{source} failed ({progress}; failed shard(s): {failed}): rerun `annotator run` with "
                          "the same arguments to finish it, then export")
    if state == "interrupted" or not manifest.get("final", True):
        raise ExportError(f"{source} did not finish ({progress}): rerun `annotator run` with the same arguments "
                          "to finish it, then export")
    if not manifest:
        raise ExportError(f"{source} has no {layout.MANIFEST}: not an annotator output")
    return st


def _same_place(a: str, b: str) -> bool:
    return sources.protocol_of(a) == sources.protocol_of(b) and \
        a.rstrip("/").split("://")[-1] == b.rstrip("/").split("://")[-1]


def _run_task(task: PartTask) -> dict:
    """One part, anywhere (a driver thread or a Ray worker)."""
    out = CommitSink(task.dest, task.config.storage_options, attempt=task.attempt)
    return WRITERS[task.config.format](task, out)


def _threads(tasks: list[PartTask], workers: int) -> Iterator[dict]:
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="annotator-export") as pool:
        for future in as_completed([pool.submit(_run_task, t) for t in tasks]):
            yield future.result()


def _ray(tasks: list[PartTask], address: str | None) -> Iterator[dict]:
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(_run_task)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started:
            ray.shutdown()


def use_ray(config: ExportConfig, parts: int, dest: str) -> bool:
    if config.engine == "threads" or (config.engine == "auto" and parts < config.ray_min_parts
                                      and not config.ray_address):
        return False
    if sources.is_process_local(dest):
        raise ExportError(f"{dest}: a Ray export needs a destination every worker reaches (not memory://)")
    return True


def export(source: str, dest: str, config: ExportConfig) -> dict:
    """Export ``source`` (a finished output) to ``dest``; returns the summary (also in ``_manifest.json``)."""
    so = config.storage_options
    try:
        src = layout.Output.open(source, so)  # OUT@vN, else the latest version
    except FileNotFoundError as e:
        raise ExportError(str(e)) from e
    source = src.ref
    if _same_place(src.base_uri, dest) or dest.rstrip("/").startswith(src.base_uri.rstrip("/") + "/"):
        raise ExportError("DEST must be outside OUTPUT")
    check_source(source, so)
    records = src.records()
    meta = src.metadata()
    joint_names = list((meta.get("skeleton") or {}).get("joint_names", []))
    if config.format == "coco":
        coco.joint_indices(joint_names)  # refuse early: the skeleton must have COCO's joints
    world_up = list((meta.get("settings") or {}).get("world_up_vector", [0.0, -1.0, 0.0]))
    fp = fingerprint(config, records, meta.get("schema_version", schema.version()))
    started = time.time()
    with OutputLock(dest, so):
        out = CommitSink(dest, so)
        _prepare(out, config, fp, source, meta)
        committed = {s: r for s, r in out.committed().items() if r.get("fingerprint") == fp}
        image_offset = person_offset = 0
        tasks = []
        for r in records:
            if r["shard"] not in committed:
                tasks.append(PartTask(source, dest, r, config, fp, out.attempt, joint_names, world_up,
                                      image_offset, person_offset))
            image_offset += int(r.get("rows", 0))
            person_offset += int(r.get("people", 0))
        out.write_json(layout.MANIFEST, _manifest(committed, config, fp, source, final=False))
        on_ray = use_ray(config, len(tasks), dest)
        from tqdm import tqdm

        bar = tqdm(total=sum(int(t.record.get("rows", 0)) for t in tasks), unit="img", disable=not config.progress,
                   desc=f"export {config.format}")
        results = _ray(tasks, config.ray_address) if on_ray else _threads(tasks, config.workers)
        try:
            for rec in results:
                committed[rec["shard"]] = rec
                bar.update(int(rec.get("rows_in", 0)))
        finally:
            bar.close()
        ordered = [committed[r["shard"]] for r in records]
        extra = {}
        if config.format == "coco":
            extra["file"] = coco.merge(out, ordered, {"source": source, "fingerprint": fp})
        manifest = _manifest(committed, config, fp, source, final=True, **extra)
        elapsed = time.time() - started
        manifest.update(parts_written=len(tasks), parts_skipped=len(records) - len(tasks),
                        engine="ray" if on_ray else "threads", elapsed_seconds=round(elapsed, 3))
        out.write_json(layout.MANIFEST, manifest)
        out.remove_attempts()
    return {"dest": dest, **{k: v for k, v in manifest.items() if k not in ("parts", "records")}}


def format_summary(s: dict) -> str:
    """What ``annotator export`` prints."""
    rate = s["rows_in"] / s["elapsed_seconds"] if s.get("elapsed_seconds") else 0.0
    lines = [f"format:   {s['format']} ({s['parts_committed']} part(s); {s['parts_written']} written now, "
             f"{s['parts_skipped']} already committed; {s['engine']})",
             f"samples:  {s['samples']} ({s['people']} people) from {s['rows_in']} rows",
             f"size:     {s['bytes'] / 1e6:.1f} MB",
             f"time:     {s['elapsed_seconds']:.1f} s ({rate:.1f} rows/s)"]
    if s.get("skipped"):
        lines.append("skipped:  " + ", ".join(f"{k}={v}" for k, v in s["skipped"].items()))
    if s.get("file"):
        lines.append(f"file:     {s['file']}")
    lines.append(f"output:   {s['dest']}")
    return "\n".join(lines)


def _prepare(out: CommitSink, config: ExportConfig, fp: str, source: str, meta: dict) -> None:
    prev = out.read_json(EXPORT)
    if prev is not None and prev.get("fingerprint") != fp:
        if not config.overwrite:
            raise ExportError(f"{out.uri} holds another export ({prev.get('settings')} of {prev.get('source')}); "
                              "use --overwrite to replace it, or export elsewhere")
    if config.overwrite or (prev is not None and prev.get("fingerprint") != fp):
        _remove_export(out)
    out.fs.makedirs(out.path(layout.COMMITS), exist_ok=True)
    out.write_json(EXPORT, {"fingerprint": fp, "source": source, "settings": config.settings(),
                            "skeleton": meta.get("skeleton"), "model": meta.get("model"),
                            "schema_version": meta.get("schema_version"), "created_at": time.time()})


def _remove_export(out: CommitSink) -> None:
    """What an earlier export wrote here (its manifest's and commit records' files), nothing else."""
    names = {r["part"] for r in out.commit_records().values()}
    names |= {r["part"] for r in (out.read_json(layout.MANIFEST) or {}).get("records", [])}
    for name in sorted(names) + [coco.FILE, layout.MANIFEST, EXPORT]:
        if out.fs.exists(out.path(name)):
            out.fs.rm_file(out.path(name))
    out.reset(folders=(layout.COMMITS, layout.ATTEMPTS, coco.PARTS), files=())


def _manifest(committed: dict[str, dict], config: ExportConfig, fp: str, source: str, final: bool,
              **extra) -> dict:
    recs = [committed[s] for s in sorted(committed)]
    skipped: Counter = Counter()
    for r in recs:
        skipped.update(r.get("skipped") or {})
    return {"final": final, "updated_at": time.time(), "format": config.format, "fingerprint": fp,
            "source": source, "settings": config.settings(), "parts_committed": len(recs),
            **{k: sum(int(r.get(k, 0)) for r in recs) for k in TOTALS}, "skipped": dict(sorted(skipped.items())),
            **extra, "parts": [r["part"] for r in recs], "records": recs}
