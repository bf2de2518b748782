"""The label schema, read from ``schemas/pose_labels_v<N>.json``: one definition for code and docs.

The JSON is the source of truth; this module turns it into a ``pyarrow.Schema`` and builds the
Parquet key-value metadata every file carries (schema version, model, skeleton, settings).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import pyarrow as pa

from annotator import __version__

SCHEMA_MAJOR = 1
REPO_SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
_PRIMITIVES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
               "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_()}


def _schema_file(major: int) -> Path:
    """The schema JSON: shipped inside the package, or from the repository's ``schemas/``."""
    name = f"pose_labels_v{major}.json"
    packaged = resources.files("annotator") / "schemas" / name
    if packaged.is_file():
        return Path(str(packaged))
    return REPO_SCHEMA_DIR / name


@cache
def definition(major: int = SCHEMA_MAJOR) -> dict:
    return json.loads(_schema_file(major).read_text())


def _arrow_type(spec) -> pa.DataType:
    if isinstance(spec, str):
        return _PRIMITIVES[spec]
    if "list" in spec:
        return pa.list_(_arrow_type(spec["list"]))
    if "struct" in spec:
        return pa.struct([_arrow_field(f) for f in spec["struct"]])
    raise ValueError(f"bad type spec {spec!r}")


def _arrow_field(f: dict) -> pa.Field:
    return pa.field(f["name"], _arrow_type(f["type"]), nullable=f.get("nullable", True),
                    metadata={"doc": f.get("doc", "")})


@cache
def arrow_schema(major: int = SCHEMA_MAJOR) -> pa.Schema:
    """The Arrow schema (without file metadata)."""
    return pa.schema([_arrow_field(f) for f in definition(major)["fields"]])


def version(major: int = SCHEMA_MAJOR) -> str:
    return definition(major)["version"]


def file_metadata(model: dict, skeleton: dict, settings: dict, temporal: dict | None = None) -> dict[bytes, bytes]:
    """Parquet key-value metadata for one output file (``temporal``: videos' temporal step)."""
    def js(x):
        return json.dumps(x, sort_keys=True).encode()
    out = {
        b"annotator.schema_version": version().encode(),
        b"annotator.version": __version__.encode(),
        b"annotator.model": js(model),
        b"annotator.skeleton": js(skeleton),
        b"annotator.settings": js(settings),
    }
    if temporal is not None:
        out[b"annotator.temporal"] = js(temporal)
    return out


_JSON_KEYS = ("model", "skeleton", "settings", "temporal")


def read_metadata(schema: pa.Schema) -> dict:
    """Decode annotator's key-value metadata from a file's schema (JSON values parsed)."""
    md = schema.metadata or {}
    out = {}
    for key, value in md.items():
        k = key.decode()
        if k.startswith("annotator."):
            name = k[len("annotator."):]
            out[name] = json.loads(value) if name in _JSON_KEYS else value.decode()
    return out


def _type_name(spec) -> str:
    if isinstance(spec, str):
        return spec
    if "list" in spec:
        return f"list<{_type_name(spec['list'])}>"
    return "struct"


def markdown(major: int = SCHEMA_MAJOR) -> str:
    """``schemas/README.md``, generated from the JSON so the two never drift
    (regenerate: ``python -m annotator.labels.schema > schemas/README.md``)."""
    d = definition(major)
    lines = [f"# Label schema v{d['version']} (`pose_labels_v{major}.json`)", "",
             "The JSON file is the machine-readable definition (`annotator.labels.schema.arrow_schema()` builds",
             "the Arrow schema from it). One row per input image, errors included; plain Arrow types only, so",
             "pandas, polars, DuckDB and Hugging Face `datasets` read it without annotator. This page is generated",
             "from the JSON:",
             "`python -m annotator.labels.schema > schemas/README.md`.", "", d["doc"], "",
             "| field | type | nullable | meaning |", "|---|---|---|---|"]

    def row(name, f):
        nullable = "yes" if f.get("nullable", True) else "no"
        lines.append(f"| `{name}` | {_type_name(f['type'])} | {nullable} | {f['doc']} |")

    for f in d["fields"]:
        row(f["name"], f)
        item = f["type"].get("list") if isinstance(f["type"], dict) else None
        if isinstance(item, dict) and "struct" in item:
            for g in item["struct"]:
                row(f"{f['name']}[].{g['name']}", g)
    lines += ["", "Parquet key-value metadata of every file:", ""]
    lines += [f"- `{k}`: {v}" for k, v in d["metadata"].items()]
    lines += ["", "## Versioning", "",
              "`annotator.schema_version` is `MAJOR.MINOR`. A minor version only adds nullable fields or metadata",
              "keys, so readers of an older minor version keep working; a major version gets a new file",
              "(`pose_labels_v2.json`). Readers should check the major version before trusting field meanings.",
              "",
              "- 1.5: `view` (a rig's camera, or 'world' for a rig frame's fused row); `people[].fused_views`,",
              "  `views_used`, `reprojection_px` (multi-camera rigs, `annotator.pipeline.rig`); depth_source 'rig';",
              "  `people[].joints2d_net` (the network's own 2D, what the 3D was fitted to).",
              "- 1.4: `people[].joint_sigma_mm` (calibrated per-joint uncertainty); `depth_sigma_mm` calibrated,",
              "  body size fused with a population prior (`annotator.labels.body_size`).",
              "- 1.3: `people[].track_id` and the per-frame `people[].joints2d_raw`, `joints3d_cam_raw`,",
              "  `joints3d_world_raw` (videos: tracks and the temporal step); metadata key `annotator.temporal`.",
              "- 1.2: `people[].depth_sigma_mm` and `people[].depth_source` (depth uncertainty, ground plane).",
              "- 1.1: `people[].quality` (per-person label quality in [0, 1]).",
              "- 1.0: first version.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")

