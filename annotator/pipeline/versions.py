"""Versions of one output, with lineage: a new model or new settings on an output make a new
version beside the old ones instead of being refused or overwriting them.

Layout (names in ``pipeline/layout.py``)::

    OUTPUT/                 version 1: the output as it always was (parts/, _commits/, _plan/, ...)
    OUTPUT/_versions/v2/    version 2: a whole output of its own (its plan, parts, commits, manifest, card)
    OUTPUT/_versions.json   the lineage, written once a second version exists: every version's parent,
                            model, settings (the fingerprint's components), input plan, why it was made,
                            when it was created, published and removed; ``latest`` and ``latest_parts``

So an output made before versions is v1 as it is (nothing migrates), and each version is read
exactly as a single output is: ``layout.Output("OUTPUT@v2")`` (or the folder itself). Why one folder
per version and not a table format's log: a version is a model/settings generation (days of GPU
time), not a commit, and every reader that globs ``parts/`` keeps working on a version's folder
(``docs/table-formats.md``).

Which version a run writes (``runners/job.py``): the newest. A rerun with the same model and
settings resumes, appends or detects changes there exactly as before versions. Where the newest
holds committed shards made with another model or settings, the run makes version N+1 (parent: the
newest) with a fresh plan, says so in one line, and labels everything; with ``--append``,
``--frozen`` or ``--retry-errors`` (which continue a version) it is refused instead.
``--new-version`` makes one even with the same settings (inputs changed in place: their rows change
only in a new version); ``--overwrite`` still discards the whole output, every version.

The latest version, which readers get for ``OUTPUT`` (``Output.open``), is the newest *published*
one: a version is published when a run of it ends with every planned shard committed, so readers
never see a half-relabelled dataset while a new model runs for days. v1 is always published (it is
what readers read before versions existed).

Every write of ``_versions.json`` happens under ``OUTPUT/_lock`` (whole file, renamed into place).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from annotator.pipeline import layout, sources
from annotator.pipeline import plan as plan_mod
from annotator.pipeline.fingerprint import check_committed
from annotator.pipeline.lock import OutputLock
from annotator.pipeline.sink import CommitSink

log = logging.getLogger(__name__)

LABEL_KEYS_IGNORED = ("plan_hash",)  # a version is a model/settings generation; its plan is its own


@dataclass(frozen=True)
class Version:
    number: int
    uri: str  # its folder (the output itself for v1)
    base: str  # the output

    @property
    def ref(self) -> str:
        """How readers name it, whatever becomes the latest later: ``OUTPUT@vN``."""
        return f"{self.base}@v{self.number}"


def version(base: str, number: int) -> Version:
    return Version(number, layout.version_uri(base, number), base)


def read(base: str, storage_options: dict | None = None) -> dict | None:
    """The lineage document, None for an output with one version."""
    return layout.Output(base, storage_options).read_json(layout.VERSIONS_FILE)


def live(doc: dict) -> list[dict]:
    return [v for v in doc["versions"] if not v.get("removed_at")]


def newest(base: str, storage_options: dict | None = None) -> Version:
    """The version a run continues: the newest one not removed (v1 without lineage; one number past
    every version when all were removed)."""
    doc = read(base, storage_options)
    if doc is None:
        return version(base, 1)
    kept = live(doc)
    return version(base, max(v["version"] for v in kept) if kept else max(v["version"] for v in doc["versions"]) + 1)


def differences(old: dict, new: dict) -> list[str]:
    """The fingerprint components (``fingerprint.fingerprint_doc``) that differ, settings key by key
    (compared as JSON holds them: a tuple is a list)."""
    old, new = json.loads(json.dumps(old)), json.loads(json.dumps(new))
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if key in LABEL_KEYS_IGNORED or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def plan_info(meta: dict, num_shards: int | None = None, num_members: int | None = None) -> dict:
    """What the lineage keeps of a version's input plan."""
    return {"input": meta.get("input"), "kind": meta.get("kind"), "shard_size": meta.get("shard_size"),
            "hash": meta.get("hash"), "head": (meta.get("segments") or [{}])[-1].get("head", meta.get("hash")),
            "segments": len(meta.get("segments") or []), "created_at": meta.get("created_at"),
            "num_shards": num_shards if num_shards is not None else meta.get("num_shards"),
            "num_members": num_members if num_members is not None else meta.get("num_members")}


def _first(base: str, storage_options: dict | None) -> dict:
    """v1's entry, from what the output holds (written when v2 is made)."""
    out = layout.Output(base, storage_options)
    meta = plan_mod.read_meta(sources.join(base, layout.PLAN), storage_options)
    model = (out.read_json(layout.SUMMARY) or {}).get("model")
    if model is None:
        try:
            model = out.metadata().get("model")
        except FileNotFoundError:
            model = None
    created = meta.get("created_at") or time.time()
    return {"version": 1, "path": "", "parent": None, "reason": "first version", "created_at": created,
            "published_at": created, "model": model,
            "components": (out.read_json(layout.FINGERPRINT) or {}).get("components"), "plan": plan_info(meta)}


def _write(base: str, storage_options: dict | None, doc: dict) -> None:
    published = [v["version"] for v in live(doc) if v.get("published_at")]
    doc["latest"] = max(published) if published else None
    doc["latest_parts"] = "/".join(p for p in (layout.version_folder(doc["latest"]), layout.PARTS) if p) \
        if doc["latest"] else None
    doc["versions"].sort(key=lambda v: v["version"])
    CommitSink(base, storage_options).write_json(layout.VERSIONS_FILE, doc)


def create(parent: Version, storage_options: dict | None, model: dict, components: dict,
           forced: bool = False) -> Version:
    """Version N+1 of ``parent``'s output, child of ``parent``: its lineage entry (unpublished), and
    the one line that says so. Call under the output's lock."""
    base = parent.base
    doc = read(base, storage_options) or {"versions": [_first(base, storage_options)]}
    number = max(v["version"] for v in doc["versions"]) + 1
    old = layout.Output(parent.uri, storage_options).read_json(layout.FINGERPRINT) or {}
    changed = differences(old.get("components") or {}, components)
    reason = ", ".join(changed) + " changed" if changed else "--new-version"
    doc["versions"].append({"version": number, "path": layout.version_folder(number), "parent": parent.number,
                            "reason": reason, "created_at": time.time(), "published_at": None, "model": model,
                            "components": components, "plan": None})
    _write(base, storage_options, doc)
    log.warning("%s: new version v%d (%s since v%d, which is kept): labelling every input; readers of the output "
                "move to v%d once all its shards are committed (`annotator versions`)", base, number, reason,
                parent.number, number)
    return version(base, number)


def successor(current: Version, committed: dict[str, dict], fp: str, doc: dict, model: dict, spec,
              storage_options: dict | None = None) -> Version | None:
    """The version a run of ``spec`` (a ``spec.RunSpec``) labels into instead of ``current``, whose
    shards are ``committed``: None to continue ``current`` (the same fingerprint ``fp``), else a new
    one (its lineage entry written). Refused (``FingerprintError``) where the run asked to continue
    ``current`` (``--append``, ``--frozen``, ``--retry-errors``) with another model or settings."""
    if not spec.new_version and all(r.get("fingerprint") == fp for r in committed.values()):
        return None
    if not spec.new_version and (spec.append or spec.frozen or spec.retry_errors):
        previous = layout.Output(current.uri, storage_options).read_json(layout.FINGERPRINT) or {}
        check_committed(current.ref, committed, fp, doc, previous.get("components") or {}, continuing=True)
    return create(current, storage_options, model, doc, forced=spec.new_version)


def finish(v: Version, storage_options: dict | None, model: dict, components: dict, plan: plan_mod.Plan,
           complete: bool) -> dict | None:
    """After a run of ``v``: its lineage entry gets the plan (and model, settings: a version that was
    empty may have been started again with others) and, on the first complete run, is published.
    Nothing for an output with one version. Returns what the run summary says of the version."""
    doc = read(v.base, storage_options)
    if doc is None:
        return None
    entry = next((e for e in doc["versions"] if e["version"] == v.number), None)
    if entry is None:  # every earlier version was removed: a version without a parent
        entry = {"version": v.number, "path": layout.version_folder(v.number), "parent": None,
                 "reason": "every earlier version was removed", "created_at": time.time(), "published_at": None}
        doc["versions"].append(entry)
    entry.update(model=model, components=components,
                 plan=plan_info(plan.meta, plan.num_shards, plan.num_members))
    if complete and not entry.get("published_at"):
        entry["published_at"] = time.time()
    _write(v.base, storage_options, doc)
    return {"number": v.number, "parent": entry.get("parent"), "reason": entry.get("reason"), "ref": v.ref,
            "published": bool(entry.get("published_at")), "latest": doc["latest"]}


def state(entry: dict, doc: dict) -> str:
    if entry.get("removed_at"):
        return "removed"
    if entry["version"] == doc.get("latest"):
        return "latest"
    return "published" if entry.get("published_at") else "building"


def listing(base: str, storage_options: dict | None = None) -> list[dict]:
    """Every version (removed ones too, for their lineage) with its state and dataset totals."""
    doc = read(base, storage_options)
    if doc is None:
        out = layout.Output(base, storage_options)
        if not out.fs.exists(out.root):
            raise FileNotFoundError(f"{base} does not exist")
        doc = {"versions": [_first(base, storage_options)], "latest": 1}
    out = []
    for entry in doc["versions"]:
        v = version(base, entry["version"])
        manifest = {} if entry.get("removed_at") else \
            layout.Output(v.uri, storage_options).read_json(layout.MANIFEST) or {}
        out.append({**entry, "state": state(entry, doc), "ref": v.ref, "folder": v.uri,
                    **{k: manifest.get(k) for k in ("rows", "rows_ok", "people", "shards_committed", "shards_total")}})
    return out


def to_text(rows: list[dict]) -> str:
    """What ``annotator versions`` prints."""
    lines = [f"{'version':8s} {'state':9s} {'parent':6s} {'rows':>7s} {'people':>7s}  model / why"]
    for r in rows:
        model = r.get("model") or {}
        parent = f"v{r['parent']}" if r.get("parent") else "-"
        lines.append(f"v{r['version']:<7d} {r['state']:9s} {parent:6s} {r.get('rows') or 0:>7} "
                     f"{r.get('people') or 0:>7}  {model.get('id', '?')} ({str(model.get('sha256', '?'))[:12]}); "
                     f"{r.get('reason', '')}")
        if r["state"] != "removed":
            parts = sources.join(r["folder"], layout.PARTS)
            lines.append(f"{'':8s} read: {r['ref']}  (plain Parquet readers: {parts})")
    return "\n".join(lines)


def remove(base: str, number: int, storage_options: dict | None = None, force: bool = False) -> dict:
    """Remove version ``number`` (its files; its lineage entry stays, marked removed). Refused for the
    latest version and the only one unless ``force``. Under the output's lock (no job writes it)."""
    with OutputLock(base, storage_options):
        doc = read(base, storage_options)
        entries = doc["versions"] if doc else [_first(base, storage_options)]
        entry = next((e for e in entries if e["version"] == number), None)
        if entry is None:
            raise FileNotFoundError(f"{base} has no version v{number}")
        kept = [e for e in entries if not e.get("removed_at")]
        if not entry.get("removed_at") and not force:
            if len(kept) == 1:
                raise ValueError(f"v{number} is the only version of {base}; --force removes it (and every label)")
            if doc and number == doc.get("latest"):
                raise ValueError(f"v{number} is the latest version of {base} (what its readers read); --force "
                                 "removes it, and readers then read the latest version before it")
        if doc is not None:  # marked first: readers stop resolving it before its files go
            entry["removed_at"] = entry.get("removed_at") or time.time()
            _write(base, storage_options, doc)
        v = version(base, number)
        sink = CommitSink(v.uri, storage_options)
        if number == 1:  # the output's own files, not the other versions (nor the card: the latest's)
            sink.reset([f for f in layout.JOB_FOLDERS if f != layout.VERSIONS],
                       [f for f in layout.JOB_FILES if f not in (layout.VERSIONS_FILE, layout.CARD)])
            if doc is None:
                sink.reset([], [layout.CARD])
        elif sink.fs.exists(sink.root):
            sink.fs.rm(sink.root, recursive=True)
        return entry
