"""Job specification: everything ``annotator run`` takes, as dataclasses, loadable from TOML.

Unknown keys and bad values are errors that name the key, so a typo never silently falls back
to a default on a thousand-GPU-hour job.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from annotator.decode import DEFAULT_MAX_PIXELS
from annotator.infer import InferenceSettings
from annotator.sources import DEFAULT_SHARD_SIZE


class SpecError(ValueError):
    pass


@dataclass
class ComputeSpec:
    """How the inference stage is laid out on the cluster."""

    actors: int = 1
    max_actors: int | None = None  # autoscale the actor pool between actors..max_actors
    cpus_per_actor: float = 0.5  # fractional: leaves CPUs for reading and decoding
    gpus_per_actor: float = 0.0
    decode_cpus: float = 0.5  # per decode task
    batch_size: int = 8  # images per inference call
    ray_address: str | None = None  # None: start an embedded local Ray
    no_progress_timeout_s: float = 600.0


@dataclass
class RunSpec:
    input: str
    output: str
    model: str = "default"
    shard_size: int = DEFAULT_SHARD_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    compute: ComputeSpec = field(default_factory=ComputeSpec)
    progress: bool = True

    def validate(self) -> RunSpec:
        s, c = self.settings, self.compute
        checks = [
            (self.shard_size >= 1, "shard_size must be >= 1"),
            (self.max_pixels >= 1, "max_pixels must be >= 1"),
            (s.num_aug >= 1, "settings.num_aug must be >= 1"),
            (0.0 <= s.detector_threshold <= 1.0, "settings.detector_threshold must be in [0, 1]"),
            (0.0 < s.detector_nms_iou_threshold <= 1.0, "settings.detector_nms_iou_threshold must be in (0, 1]"),
            (s.antialias_factor >= 1, "settings.antialias_factor must be >= 1"),
            (0.0 < s.default_fov_degrees < 180.0, "settings.default_fov_degrees must be in (0, 180)"),
            (c.actors >= 1, "compute.actors must be >= 1"),
            (c.max_actors is None or c.max_actors >= c.actors, "compute.max_actors must be >= compute.actors"),
            (c.batch_size >= 1, "compute.batch_size must be >= 1"),
            (c.cpus_per_actor >= 0 and c.gpus_per_actor >= 0, "compute resources must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SpecError(msg)
        return self


def _build(cls, data: dict, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"unknown key(s) in {where or 'job spec'}: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        nested = {"settings": InferenceSettings, "compute": ComputeSpec}.get(name) if cls is RunSpec else None
        if nested is not None:
            if not isinstance(value, dict):
                raise SpecError(f"[{name}] must be a table")
            kwargs[name] = _build(nested, value, f"[{name}]")
        else:
            kwargs[name] = _coerce(value, f.type, f"{where + '.' if where else ''}{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise SpecError(f"{where or 'job spec'}: {e}") from None


def _coerce(value, type_str, key):
    t = str(type_str)
    if t.startswith("tuple"):
        if not isinstance(value, list | tuple):
            raise SpecError(f"{key} must be a list")
        return tuple(float(v) for v in value)
    base = t.replace(" | None", "")
    if value is None and "None" in t:
        return None
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(base)
    if expected is None:
        return value
    if isinstance(value, bool) and base != "bool":
        raise SpecError(f"{key} must be {base}, got {value!r}")
    if not isinstance(value, expected):
        raise SpecError(f"{key} must be {base}, got {value!r}")
    return float(value) if base == "float" else value


def from_dict(data: dict) -> RunSpec:
    return _build(RunSpec, data, "").validate()


def load(path: str | Path, **overrides) -> RunSpec:
    """Load a TOML job spec; ``overrides`` (e.g. from the command line) win over the file."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    return from_dict(data)
