"""What an export is asked to do (``ExportConfig``) and one unit of its work (``PartTask``: one
source part -> one committed file under DEST), plain values so a Ray task can take it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from annotator.outputs.export.samples import Filters

FORMATS = ("webdataset", "coco", "crops")
ENGINES = ("auto", "threads", "ray")


@dataclass(frozen=True)
class ExportConfig:
    """``format``: webdataset | coco | crops. ``filters``: rows and people kept. ``crop_size`` px and
    ``crop_scale`` (the crop shows this times the person's box side; 1.25 = BlazePose's margin) for
    crops; ``jpeg_quality`` for crops and re-encoded images. ``engine``: threads (``workers`` parts at
    a time), ray (one task per part, on ``ray_address`` or a local Ray), auto (Ray from
    ``ray_min_parts`` parts on). ``overwrite`` replaces an export made with other settings."""

    format: str
    filters: Filters = field(default_factory=Filters)
    crop_size: int = 256
    crop_scale: float = 1.25
    jpeg_quality: int = 95
    engine: str = "auto"
    workers: int = 4
    ray_address: str | None = None
    ray_min_parts: int = 32
    overwrite: bool = False
    progress: bool = True
    storage_options: dict | None = None

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        if self.crop_size < 8 or not self.crop_scale > 0 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError("crop_size >= 8, crop_scale > 0 and jpeg_quality in [1, 100] are required")

    def settings(self) -> dict:
        """What decides the bytes written (the export's fingerprint covers these, not how it runs)."""
        out = {"format": self.format, "filters": asdict(self.filters), "jpeg_quality": self.jpeg_quality}
        if self.format == "crops":
            out.update(crop_size=self.crop_size, crop_scale=self.crop_scale)
        return out


def fingerprint(config: ExportConfig, source_records: list[dict], schema_version: str) -> str:
    """The export's identity: its settings and the exact source parts (their checksums)."""
    doc = {"settings": config.settings(), "schema_version": schema_version,
           "source": [(r["shard"], r.get("sha256")) for r in source_records]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PartTask:
    """Export one source part. ``image_offset`` / ``person_offset``: rows and people of the parts
    before it (COCO's numeric ids, stable whatever the filters)."""

    source: str
    dest: str
    record: dict
    config: ExportConfig
    fingerprint: str
    attempt: str
    joint_names: list[str]
    world_up: list[float]
    image_offset: int = 0
    person_offset: int = 0

    @property
    def shard(self) -> str:
        return self.record["shard"]
