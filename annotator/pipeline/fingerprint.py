"""What makes an output's shards belong together: one fingerprint of the model's sha256, the
settings, the schema version and the frozen plan. A shard committed under another fingerprint is
never mixed with this run's: the run is refused, naming what differs."""

from __future__ import annotations

import hashlib
import json

from annotator.labels import schema


class FingerprintError(RuntimeError):
    """The output holds shards made with another model, settings, schema or plan."""


def fingerprint_doc(model_sha256: str, settings: dict, plan_hash: str, max_pixels: int) -> dict:
    """The components the fingerprint is made of (written beside it, so a refusal can name them)."""
    return {"model_sha256": model_sha256, "settings": settings, "schema_version": schema.version(),
            "plan_hash": plan_hash, "max_pixels": max_pixels}


def fingerprint(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def check_committed(output: str, committed: dict[str, dict], fp: str, doc: dict, previous: dict) -> None:
    """Refuse an output whose committed shards carry another fingerprint; ``previous``: the
    components last written, to say which of them differ."""
    other = [s for s, r in committed.items() if r.get("fingerprint") != fp]
    if other:
        diff = sorted(k for k in set(doc) | set(previous) if doc.get(k) != previous.get(k)) or ["unknown"]
        raise FingerprintError(
            f"{output} holds {len(other)} committed shard(s) made with a different "
            f"{', '.join(diff)}; rerun with --overwrite to replace them, or write to a new output")
