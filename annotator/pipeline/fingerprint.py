"""What makes an output's shards belong together: one fingerprint of the model's sha256, the
settings, the schema version and the frozen plan. A shard committed under another fingerprint is
never mixed with this run's: the run is refused, naming what differs."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from annotator.labels import fusion, schema
from annotator.pipeline import rig, sequence


class FingerprintError(RuntimeError):
    """The output holds shards made with another model, settings, schema or plan."""


def fingerprint_doc(model_sha256: str, settings: dict, plan_hash: str, max_pixels: int) -> dict:
    """The components the fingerprint is made of (written beside it, so a refusal can name them)."""
    return {"model_sha256": model_sha256, "settings": settings, "schema_version": schema.version(),
            "plan_hash": plan_hash, "max_pixels": max_pixels}


def fingerprint(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def for_plan(spec, model_sha256: str, plan, temporal: sequence.TemporalSettings) -> tuple[str, dict, dict]:
    """The fingerprint of a run of ``spec`` (a ``spec.RunSpec``) over ``plan`` (a ``plan.Plan``),
    its components and the plan's video sequences (whose temporal settings are part of it)."""
    doc = fingerprint_doc(model_sha256, spec.settings.to_dict(), plan.hash, spec.max_pixels)
    rows = plan.rows()
    sequences = sequence.plan_sequences(rows, temporal)  # video shards only
    if sequences:
        doc["temporal"] = temporal.to_dict()
    rig_shards = rig.plan_shards(rows, spec.rig)  # rig windows: fused at their commit
    if rig_shards:
        doc["rig"] = {"temporal": bool(spec.rig is None or spec.rig.temporal),
                      "fusion": dataclasses.asdict(fusion.FusionConfig())}
    return fingerprint(doc), doc, {**sequences, **rig_shards}


def check_committed(output: str, committed: dict[str, dict], fp: str, doc: dict, previous: dict,
                    continuing: bool = False) -> None:
    """Refuse an output whose committed shards carry another fingerprint; ``previous``: the
    components last written, to say which of them differ. ``continuing``: the run asked to continue
    this version (``--append``, ``--frozen``, ``--retry-errors``) rather than make a new one."""
    other = [s for s, r in committed.items() if r.get("fingerprint") != fp]
    if other:
        diff = sorted(k for k in set(doc) | set(previous) if doc.get(k) != previous.get(k)) or ["unknown"]
        what = f"{output} holds {len(other)} committed shard(s) made with a different {', '.join(diff)}"
        if continuing:
            raise FingerprintError(
                f"{what}; --append, --frozen and --retry-errors continue that version: rerun without them to "
                "label everything into a new version (this one is kept), or with --overwrite to replace it")
        raise FingerprintError(f"{what}; rerun with --overwrite to replace them, or write to a new output")
