"""``OUTPUT/README.md``: a Hugging Face dataset card for a job's output, written when the job ends.

Why: ``datasets.load_dataset(OUTPUT)`` then loads the labels with no other argument (the YAML
header's ``configs`` point at ``parts/*.parquet``, safe to glob because ``parts/`` holds committed
parts only), the Hub shows the counts and provenance, and whoever finds the folder learns what it
is without annotator: counts, errors by reason, the quality distribution, the model and its
weights' licence, the skeleton, the schema and how to read it.

Two licences, kept apart: the header's ``license`` is the labels' (``annotator run --license`` / the
spec's ``license``, kept in ``_summary.json``). Labels derive from the user's images, whose terms
annotator cannot know, so it is ``other`` until the user says, with a sentence that the labels follow
the images' terms. The model weights' licence is provenance, in its own row: taking it as the labels'
licence would tell the Hub that labels of, say, non-commercial images were Apache-2.0.

Every URI the card shows goes through ``pipeline.redact`` (a card is the file most often shared).

Versions (``pipeline.versions``): the card at ``OUTPUT/README.md`` always describes the latest
version (its ``configs`` point at ``_versions/vN/parts/*.parquet``, so ``load_dataset(OUTPUT)``
loads the latest) and lists every version with its lineage; version N >= 2 also has its own card
in its folder.

Everything comes from the output itself (final manifest, summary, the first part's footer), so
``annotator card OUTPUT`` can (re)write the card of any output, e.g. one made before cards existed.
The features are the parts' own Arrow schema in the ``datasets`` YAML form, so nothing is cast.
"""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from annotator import __version__
from annotator.labels import schema
from annotator.pipeline import layout, redact, sink, versions

HF_LICENCES = {"apache-2.0": "apache-2.0", "mit": "mit", "cc-by-4.0": "cc-by-4.0", "cc-by-nc-4.0": "cc-by-nc-4.0",
               "bsd-3-clause": "bsd-3-clause", "gpl-3.0": "gpl-3.0"}
_PRIMITIVE = {pa.string(): "string", pa.large_string(): "large_string", pa.int32(): "int32", pa.int64(): "int64",
              pa.float32(): "float32", pa.float64(): "float64", pa.bool_(): "bool", pa.int8(): "int8",
              pa.int16(): "int16", pa.uint8(): "uint8"}


# ---------------------------------------------------------------------------------------------
# YAML header pieces


def feature(t: pa.DataType):
    """One Arrow type in the ``datasets`` YAML feature form (``dtype``, ``list``, struct fields)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": feature_value(t.value_type)}
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **feature(f.type)} for f in t]}
    return {"dtype": _PRIMITIVE[t]}


def feature_value(t: pa.DataType):
    """The value of a ``list:`` key: a dtype name, a nested ``list``, or a struct's field list."""
    if pa.types.is_struct(t):
        return [{"name": f.name, **feature(f.type)} for f in t]
    inner = feature(t)
    return inner["dtype"] if "dtype" in inner else inner


def features(arrow_schema: pa.Schema) -> list[dict]:
    return [{"name": f.name, **feature(f.type)} for f in arrow_schema]


def hf_licence(text: str | None) -> str:
    """The Hub's licence id for a licence text such as ``Apache-2.0 (MoveNet, ...)``; ``other`` or
    ``unknown`` otherwise."""
    if not text:
        return "unknown"
    key = text.split("(")[0].strip().lower().replace(" ", "-")
    return HF_LICENCES.get(key, "other")


def size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if rows < limit:
            return name
    return "100M<n<1B"


def licence_of(model: dict) -> str | None:
    """The weights' licence of a built-in model (from its build info), when it is built here."""
    from annotator.models import registry

    name = str(model.get("id", "")).removeprefix("annotator/")
    if name in registry.VARIANTS:
        return registry.info(registry.model_dir(name)).get("licence")
    return None


# ---------------------------------------------------------------------------------------------
# Numbers


def quality_histogram(output: layout.Output, records: list[dict]) -> list[int] | None:
    """People per quality decile, from the commit records (parts written before records carried it
    are read, ``quality`` column only); None for outputs without ``people[].quality``."""
    total = np.zeros(sink.QUALITY_BINS, np.int64)
    found = False
    for r in records:
        hist = r.get("quality_histogram")
        if hist is None and "quality_histogram" not in r:
            table = output.read_part(r)
            hist = sink.quality_histogram(table)
        if hist is not None:
            total += np.asarray(hist, np.int64)
            found = True
    return total.tolist() if found else None


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


# ---------------------------------------------------------------------------------------------
# The card


DEFAULT_LABELS_LICENCE = "other"
IMAGES_TERMS = ("The labels are derived from the input images and follow the images' terms (their licence, "
                "consent and use restrictions); annotator does not know those terms.")


def labels_licence_lines(labels: str) -> tuple[dict, list[str]]:
    """The header keys and the card's licence section for the labels' licence ``labels``."""
    hf = hf_licence(labels)
    keys = {"license": hf}
    if hf == "other":
        keys["license_name"] = "follows-source-images" if labels.strip().lower() == "other" else \
            "-".join(labels.lower().split())
    lines = ["## Licence", ""]
    if labels.strip().lower() == DEFAULT_LABELS_LICENCE:
        lines += [IMAGES_TERMS + " No licence was given: set one with `annotator run --license ID` (or `license` "
                  "in the job spec), or `annotator card OUTPUT --license ID`."]
    else:
        lines += [f"Labels: {labels} (as given by whoever ran annotator). " + IMAGES_TERMS]
    lines += ["The model weights' licence is in Provenance: it covers the model, not these labels."]
    return keys, lines


def versions_lines(lineage: dict | None, base: str) -> list[str]:
    """The card's Versions section (none for an output with one version)."""
    if not lineage:
        return []
    rows = [[f"v{v['version']}", versions.state(v, lineage), f"v{v['parent']}" if v.get("parent") else "-",
             f"`{(v.get('model') or {}).get('id', '?')}` (`{str((v.get('model') or {}).get('sha256', '?'))[:12]}`)",
             v.get("reason", ""), "-" if v.get("removed_at") else f"`{versions.version(base, v['version']).ref}`"]
            for v in lineage["versions"]]
    return ["", "## Versions", "", "Each model or settings generation is a version of its own (`annotator versions`); "
            "this card describes the latest.", ""] + \
        _table(["version", "state", "parent", "model", "why", "read it as"], rows)


def rig_lines(output: layout.Output, records: list[dict], arrow_schema: pa.Schema) -> list[str]:
    """Which rows of a multi-camera rig's output are fused (schema 1.5 ``view``); none elsewhere."""
    if "view" not in arrow_schema.names or not records:
        return []
    world = views = fused = people = 0
    for r in records:
        t = output.read_part(r, ["view", "people.list.element.fused_views"])
        kinds = t.column("view").to_pylist()
        if not any(kinds):
            return []
        world += sum(k == "world" for k in kinds)
        views += sum(k not in (None, "world") for k in kinds)
        for k, ppl in zip(kinds, t.column("people").to_pylist(), strict=True):
            if k not in (None, "world"):
                people += len(ppl or [])
                fused += sum(1 for p in ppl or [] if p.get("fused_views"))
    return ["", "### Multi-camera rig", "",
            "A calibrated rig, labelled by fusing its views (`annotator run --rig`): "
            f"{views} view rows (`view` names the camera) and {world} world rows (`view` = `world`, one per frame: "
            "the fused people in world millimetres, "
            "no image). In the view rows, a person with `fused_views` is the fused person seen from that camera "
            f"(reprojected 2D, camera-frame 3D; its own per-view values in the `*_raw` fields): {fused} of {people} "
            "people; the others no second view saw and keep their monocular labels."]


def card_text(output: layout.Output, licence: str | None = None, labels_licence: str | None = None,
              prefix: str = "") -> str:
    """The card. ``licence``: the model weights' licence (default: the built-in model's); ``labels_licence``:
    the labels' (default: the run's ``license`` from ``_summary.json``, else ``other``). ``prefix``: where
    ``output`` lies from the card's folder (``_versions/vN/`` for the output's own card of version N)."""
    manifest = output.manifest()
    records = output.records()
    summary = redact.obj(output.read_json(layout.SUMMARY) or {})
    filtered = redact.obj(output.read_json(layout.FILTER))
    first = records[0] if records else None
    if first:
        with output.fs.open(output.path(first["part"]), "rb") as f:
            arrow_schema = pq.read_schema(f)
    else:
        arrow_schema = schema.arrow_schema()
    meta = schema.read_metadata(arrow_schema)
    arrow_schema = arrow_schema.remove_metadata()
    model = meta.get("model") or {}
    licence = licence or licence_of(model)
    skeleton = meta.get("skeleton") or {}
    settings = meta.get("settings") or {}
    rows = sum(int(r.get("rows", 0)) for r in records) if records and "rows" in records[0] else manifest.get("rows", 0)
    lineage = versions.read(output.base_uri, output.storage_options)
    name = redact.uri(output.base_uri).rstrip("/").rsplit("/", 1)[-1] + (f" v{output.version}" if lineage else "")
    labels = labels_licence or summary.get("license") or DEFAULT_LABELS_LICENCE
    licence_keys, licence_lines = labels_licence_lines(labels)
    header = {
        "pretty_name": f"annotator 3D pose labels: {name}",
        **licence_keys,
        "tags": ["3d-human-pose", "keypoints", "pseudo-labels", "annotator"],
        "task_categories": ["keypoint-detection"],
        "size_categories": [size_category(rows)],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": "train", "path": f"{prefix}{layout.PARTS}/*.parquet"}]}],
        "dataset_info": {"config_name": "default", "features": features(arrow_schema)},
    }
    errors = manifest.get("errors_by_reason") or {}
    shards_total = manifest.get("shards_total") or summary.get("shards_total")
    failed = summary.get("failed_shards") or {}
    lines = ["---", yaml.safe_dump(header, sort_keys=False, width=120).rstrip(), "---", "",
             f"# {header['pretty_name']}", "",
             "3D human pose pseudo-labels: one row per input image (errors included), each with the people found in",
             "it: box, 2D joints (pixels), 3D joints (mm, camera frame; world frame where extrinsics were given),",
             "per-joint confidence and a per-person label quality. Written by "
             f"annotator {meta.get('version', __version__)}; "
             f"label schema {meta.get('schema_version', schema.version())}.", ""]
    lines += ["## Contents", ""]
    lines += _table(["", "count"], [
        ["images (rows)", rows], ["ok", manifest.get("rows_ok", "?")], ["errors", manifest.get("rows_error", "?")],
        ["people", manifest.get("people", "?")],
        ["parts committed", f"{len(records)}" + (f" of {shards_total}" if shards_total else "")]])
    if failed:
        lines += ["", f"**Incomplete**: {len(failed)} shard(s) failed in the last run and are not in this dataset "
                      "(rerun `annotator run` with the same arguments to finish it)."]
    if filtered:
        lines += ["", f"A filtered copy of `{filtered.get('source')}` (`annotator filter`: min_quality "
                      f"{filtered.get('min_quality')}, min_score {filtered.get('min_score')})."]
    lines += rig_lines(output, records, arrow_schema)
    lines += ["", "### Errors by reason", ""]
    lines += _table(["reason", "rows"], [[k, v] for k, v in sorted(errors.items())]) if errors else ["none"]
    hist = quality_histogram(output, records)
    lines += ["", "### Label quality (`people[].quality`)", ""]
    if hist is None:
        lines += ["This output has no stored quality (schema 1.0)."]
    else:
        n = sum(hist)
        lines += _table(["quality", "people", "share"],
                        [[f"{i / len(hist):.1f}-{(i + 1) / len(hist):.1f}", c, f"{100 * c / n:.1f} %" if n else "-"]
                         for i, c in enumerate(hist)])
        lines += ["", "Compare scores only between outputs made with the same `num_aug` (see the schema)."]
    lines += versions_lines(lineage, redact.uri(output.base_uri).rstrip("/"))
    lines += [""] + licence_lines
    lines += ["", "## Provenance", ""]
    lines += _table(["", ""], [
        ["model", f"`{model.get('id', '?')}` (reference `{redact.text(str(model.get('reference', '?')))}`)"],
        ["model sha256", f"`{model.get('sha256', '?')}`"],
        ["weights licence", licence or "unknown"],
        ["skeleton", f"`{skeleton.get('name', '?')}`, {len(skeleton.get('joint_names', []))} joints"],
        ["settings", "`" + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())) + "`"],
        ["input", f"`{summary.get('input', '?')}`"],
        ["fingerprint", f"`{manifest.get('fingerprint', '?')}`"]])
    if skeleton.get("joint_names"):
        lines += ["", "Joints, in order: " + ", ".join(f"`{j}`" for j in skeleton["joint_names"]) + "."]
    lines += ["", "## Fields", ""]
    docs = {f["name"]: f for f in schema.definition()["fields"]}
    people_docs = {g["name"]: g for g in docs["people"]["type"]["list"]["struct"]}
    table_rows = [[f"`{f.name}`", docs.get(f.name, {}).get("doc", "")] for f in arrow_schema]
    people_type = arrow_schema.field("people").type.value_type if "people" in arrow_schema.names else None
    if people_type is not None:
        table_rows += [[f"`people[].{g.name}`", people_docs.get(g.name, {}).get("doc", "")] for g in people_type]
    lines += _table(["field", "meaning"], [[a, b.replace("|", "/")] for a, b in table_rows])
    out = redact.uri(output.uri).rstrip("/")
    parts = f"{out}/{layout.PARTS}"
    if prefix:  # the output's card: datasets loads the output (this card), the others read the version's folder
        out = redact.uri(output.base_uri).rstrip("/")
    lines += ["", "## How to read it", "", "```python",
              "import datasets", f"ds = datasets.load_dataset({out!r}, split='train')  # this card's configs",
              "", "import pandas as pd", f"df = pd.read_parquet({parts!r})  # parts/ holds committed parts only",
              "", "import ray", f"ds = ray.data.read_parquet({parts!r})", "```", "",
              "`_manifest.json` lists every part with its sha256 (`annotator.pipeline.layout.Output` verifies them); "
              "`annotator export` writes WebDataset shards, COCO keypoints or person crops with their camera. "
              "Coordinates: pixel centres at integers (OpenCV), millimetres, camera x right, y down, z forward.", ""]
    return "\n".join(lines)


def write_card(output_uri: str, storage_options: dict | None = None, licence: str | None = None,
               labels_licence: str | None = None) -> str:
    """Write the card of ``output_uri`` (``OUT@vN``, else the latest version): ``OUTPUT/README.md``
    when it is the latest (or the only) version, and version N >= 2's own card in its folder. Each is
    written whole or not at all (aside, then moved); returns the URI of the output's card, else the
    version's. ``licence`` is the model weights' licence (its meaning since cards exist); ``labels_licence``
    the labels'."""
    output = layout.Output.open(output_uri, storage_options)
    number = output.version or 1
    lineage = versions.read(output.base_uri, storage_options)
    latest = lineage is None or lineage.get("latest") == number
    if number == 1 and not latest:
        raise ValueError(f"v1 of {output.base_uri} has no card of its own: OUTPUT/README.md describes the latest "
                         f"version (v{lineage.get('latest')}); `annotator card {output.base_uri}` rewrites it")
    written = []
    if number > 1:
        written.append(_put_card(output.uri, storage_options, card_text(output, licence, labels_licence)))
    if latest:
        prefix = f"{layout.version_folder(number)}/" if number > 1 else ""
        written.append(_put_card(output.base_uri, storage_options,
                                 card_text(output, licence, labels_licence, prefix)))
    return written[-1]


def _put_card(folder: str, storage_options: dict | None, text: str) -> str:
    target = layout.Output(folder, storage_options)
    tmp = target.path(f".{layout.CARD}.{uuid.uuid4().hex[:8]}")
    target.fs.pipe_file(tmp, text.encode())
    sink.CommitSink(folder, storage_options).publish(tmp[len(target.root) + 1:], layout.CARD)
    return f"{redact.uri(target.uri).rstrip('/')}/{layout.CARD}"
