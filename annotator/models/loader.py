"""Model references -> a local SavedModel folder, plus what identifies the model in the output.

A reference is a built-in name (``default``, ``default-full``, ...) or a local SavedModel folder.
Any SavedModel with the official MeTRAbs API works, ours or an official one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from annotator.models import registry


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    path: str
    model_id: str
    sha256: str

    def to_dict(self) -> dict:
        return {"reference": self.reference, "id": self.model_id, "sha256": self.sha256}


def resolve(reference: str, build_missing: bool = True) -> ResolvedModel:
    """Resolve ``reference`` without downloading anything."""
    local = Path(reference).expanduser()
    if local.is_dir():
        if not (local / "saved_model.pb").exists():
            raise FileNotFoundError(f"{local} is not a SavedModel folder (no saved_model.pb)")
        info = registry.info(local)
        sha = info.get("sha256") or _cached_sha(local)
        return ResolvedModel(reference, str(local.resolve()), info.get("id") or local.name, sha)
    path = registry.path(reference, build_missing=build_missing, fetch=False)
    info = registry.info(path)
    return ResolvedModel(reference, str(path), info["id"], info["sha256"])


def _cached_sha(path: Path) -> str:
    """Hash an external SavedModel once; the result is keyed by its files' sizes and mtimes."""
    stamp = [(str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
             for p in sorted(path.rglob("*")) if p.is_file()]
    key = hashlib.sha256(json.dumps(stamp).encode()).hexdigest()
    cache = registry.cache_dir() / "hashes" / f"{key}.txt"
    if cache.exists():
        return cache.read_text().strip()
    digest = registry.directory_sha256(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(digest)
    return digest
