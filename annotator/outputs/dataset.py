"""Reading a job's output for training: the committed parts as one table, the images as the job
decoded them, and a torch-free loader that yields ``(image uint8 HxWx3, labels dict of numpy
arrays)``. Files and parts are read through ``annotator.pipeline.layout.Output``.

Why it exists although pandas/polars/DuckDB/``datasets`` open the Parquet directly
(``docs/consumers.md``): training code wants the pixels with the labels, decoded exactly as the
labeller saw them (EXIF orientation applied, same decoder), and only committed parts (the
``_manifest.json``, never a glob that could pick up a half-written attempt).

:class:`PoseDataset` is map-style (``len`` + ``[i]``) and iterable, so it plugs into
``torch.utils.data.DataLoader``, ``tf.data.Dataset.from_generator`` or a plain loop without
importing any of them. Reading is lazy: one Parquet part is held in memory at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa

from annotator.pipeline import decode, sources
from annotator.pipeline.layout import Output
from annotator.pipeline.rig import WORLD_VIEW

log = logging.getLogger(__name__)


def read_table(output_uri: str, columns: list[str] | None = None, storage_options: dict | None = None) -> pa.Table:
    """All committed parts as one table, checksums verified (for small outputs; stream parts otherwise)."""
    return Output.open(output_uri, storage_options).read_table(columns)


def has_quality(arrow_schema: pa.Schema) -> bool:
    """Whether ``people[]`` has the ``quality`` field (schema 1.1 and later)."""
    people = arrow_schema.field("people").type
    return people.value_type.get_field_index("quality") >= 0


# ---------------------------------------------------------------------------------------------
# Images


def image_uri(source_uri: str) -> str:
    """An fsspec URI for a row's ``source_uri``: tar members (``TAR#MEMBER``) become fsspec's chained
    ``tar://MEMBER::TAR``; anything else is used as is."""
    if "#" in source_uri and "://" not in source_uri.split("#", 1)[1]:
        container, member = source_uri.split("#", 1)
        if container.lower().endswith((".tar", ".tar.gz", ".tgz")):
            return f"tar://{member}::{container}"
    return source_uri


def load_image(source_uri: str, storage_options: dict | None = None) -> np.ndarray:
    """RGB uint8 [H,W,3] of a row's image, decoded by the same code (and EXIF orientation) as the
    labelling job, so pixels and labels line up: files, tar members (``TAR#key.ext``) and video
    frames (``VIDEO#frame=N``). Raises ``ValueError`` when it no longer decodes."""
    base, _, fragment = source_uri.partition("#")
    if fragment.startswith("frame=") and fragment[len("frame="):].isdigit():
        index = int(fragment[len("frame="):])
        for i, frame in sources.iter_video_frames(base, index, index + 1, 1, storage_options):
            if i == index:
                return frame
        raise ValueError(f"{source_uri}: the video has no frame {index}")
    data = sources.read_bytes(image_uri(source_uri), storage_options)
    decoded = decode.decode(data)
    if not decoded.ok:
        raise ValueError(f"{source_uri}: {decoded.error}")
    return decoded.image


# ---------------------------------------------------------------------------------------------
# Labels of one row as numpy


def _array(values, shape_tail: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    return np.asarray(values, dtype).reshape(-1, *shape_tail) if values else np.zeros((0, *shape_tail), dtype)


def labels_from_row(row: dict, num_joints: int) -> dict:
    """A row (as ``pyarrow`` ``to_pylist`` gives it) -> numpy labels.

    Keys: ``image_id``, ``source_uri``, ``status``, ``error``, ``width``, ``height``, ``intrinsics``
    [3,3], ``distortion`` [D], ``extrinsics`` [4,4] or None, ``boxes`` [K,4] (x,y,w,h px), ``scores``
    [K], ``pose_scores`` [K] (NaN where null), ``joints2d`` [K,J,2], ``joints3d_cam`` [K,J,3] mm, ``joints3d_world``
    [K,J,3] or None, ``joint_confidences`` [K,J] (NaN where null), ``quality`` [K] (NaN where the
    dataset has no quality or it is null), ``depth_sigma_mm`` [K] and ``joint_sigma_mm`` [K,J]
    (calibrated 1-sigma, mm; NaN where null or older than schema 1.2 / 1.4).
    """
    people = row.get("people") or []
    j = num_joints

    def per_person(key, tail, default=np.nan):
        vals = [p.get(key) for p in people]
        arr = np.full((len(people), *tail), default, np.float32)
        for i, v in enumerate(vals):
            if v is not None:
                arr[i] = np.asarray(v, np.float32).reshape(tail)
        return arr

    world = [p.get("joints3d_world") for p in people]
    ext = row.get("extrinsics")
    return {
        "image_id": row["image_id"],
        "source_uri": row["source_uri"],
        "status": row["status"],
        "error": row.get("error"),
        "width": row.get("width"),
        "height": row.get("height"),
        "intrinsics": np.asarray(row["intrinsics"], np.float32).reshape(3, 3) if row.get("intrinsics") else None,
        "distortion": np.asarray(row.get("distortion") or [], np.float32),
        "extrinsics": np.asarray(ext, np.float32).reshape(4, 4) if ext else None,
        "boxes": _array([p["box"] for p in people], (4,)),
        "scores": np.asarray([p["score"] for p in people], np.float32),
        "pose_scores": per_person("pose_score", ()),
        "joints2d": _array([p["joints2d"] for p in people], (j, 2)),
        "joints3d_cam": _array([p["joints3d_cam"] for p in people], (j, 3)),
        "joints3d_world": (_array(world, (j, 3)) if people and all(w is not None for w in world) else None),
        "joint_confidences": per_person("joint_confidences", (j,)),
        "quality": per_person("quality", ()),
        "depth_sigma_mm": per_person("depth_sigma_mm", ()),
        "joint_sigma_mm": per_person("joint_sigma_mm", (j,)),
    }


# ---------------------------------------------------------------------------------------------
# The loader


@dataclass(frozen=True)
class LoaderConfig:
    """What :class:`PoseDataset` yields.

    skip_errors: leave out rows whose image failed to decode at labelling time (they have no labels);
        with False they are yielded as ``(None, labels)`` with ``status``/``error`` set.
    min_quality / min_score: drop people below these (rows keep their other people); a person whose
        quality is unknown fails ``min_quality``.
    rank / world_size: this worker's slice of the rows (row i goes to worker i % world_size), for
        data-parallel training without a framework sampler.
    storage_options: fsspec options per protocol for reading the images.
    """

    skip_errors: bool = True
    min_quality: float | None = None
    min_score: float | None = None
    rank: int = 0
    world_size: int = 1
    storage_options: dict = field(default_factory=dict)


class PoseDataset:
    """``(image, labels)`` pairs of a job's output; see the module doc."""

    def __init__(self, output_uri: str, config: LoaderConfig | None = None):
        self.output_uri = str(output_uri)
        self.config = config or LoaderConfig()
        if not 0 <= self.config.rank < self.config.world_size:
            raise ValueError(f"rank {self.config.rank} not in [0, {self.config.world_size})")
        self.output = Output.open(self.output_uri, self.config.storage_options)
        self.parts = self.output.records()
        self.metadata = self.output.metadata()
        self.skeleton = self.metadata.get("skeleton") or {}
        self.joint_names: list[str] = list(self.skeleton.get("joint_names", []))
        self.edges: list[list[int]] = [list(e) for e in self.skeleton.get("edges", [])]
        self._cached: tuple[int, pa.Table] | None = None

    @cached_property
    def _index(self) -> list[tuple[int, int]]:
        """(part, row) of every row this worker yields, from the small status (and view) columns only."""
        out = []
        n = 0
        for p, record in enumerate(self.parts):
            part = self.output.open_part(record)
            table = part.read(columns=[c for c in ("status", "view") if c in part.schema_arrow.names])
            status = table.column("status").to_pylist()
            views = table.column("view").to_pylist() if "view" in table.column_names else [None] * len(status)
            for r, (s, view) in enumerate(zip(status, views, strict=True)):
                if (self.config.skip_errors and s != "ok") or view == WORLD_VIEW:  # a rig's world rows: no image
                    continue
                if n % self.config.world_size == self.config.rank:
                    out.append((p, r))
                n += 1
        return out

    def __len__(self) -> int:
        return len(self._index)

    def _part(self, p: int) -> pa.Table:
        if self._cached is None or self._cached[0] != p:
            self._cached = (p, self.output.read_part(self.parts[p]))
        return self._cached[1]

    def labels(self, i: int) -> dict:
        """Labels of item ``i`` without reading its image."""
        p, r = self._index[i]
        row = self._part(p).slice(r, 1).to_pylist()[0]
        labels = labels_from_row(row, len(self.joint_names))
        return self._filter_people(labels)

    def _filter_people(self, labels: dict) -> dict:
        keep = np.ones(len(labels["scores"]), bool)
        if self.config.min_score is not None:
            keep &= labels["scores"] >= self.config.min_score
        if self.config.min_quality is not None:
            keep &= np.nan_to_num(labels["quality"], nan=-1.0) >= self.config.min_quality
        if keep.all():
            return labels
        for key, value in labels.items():
            if isinstance(value, np.ndarray) and key not in ("intrinsics", "distortion", "extrinsics"):
                labels[key] = value[keep]
        return labels

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, dict]:
        if i < 0:
            i += len(self)
        labels = self.labels(i)
        if labels["status"] != "ok":  # only with skip_errors=False: the image did not decode when labelled
            return None, labels
        image = load_image(labels["source_uri"], self.config.storage_options)
        if labels["width"] is not None and image.shape[:2] != (labels["height"], labels["width"]):
            raise ValueError(f"{labels['image_id']}: image is {image.shape[1]}x{image.shape[0]} now, labels are for "
                             f"{labels['width']}x{labels['height']} (the file changed since labelling)")
        return image, labels

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, dict]]:
        for i in range(len(self)):
            yield self[i]


def safe_name(image_id: str) -> str:
    """A file name for an image id (``a/b.jpg`` -> ``a_b.jpg``)."""
    base = image_id.replace("\\", "/").strip("/")
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base.replace("/", "_")) or "image"


def find_rows(output: Output, ids: list[str] | None = None, limit: int | None = None,
              ok_only: bool = True) -> list[dict]:
    """Rows by image id (in the order given; missing ids raise ``KeyError``), else the first ``limit``
    rows in manifest order. Reads one part at a time."""
    wanted = list(ids or [])
    found: dict[str, dict] = {}
    out: list[dict] = []
    for record in output.records():
        if wanted:
            ids_here = output.read_part(record, ["image_id"]).column("image_id").to_pylist()
            hits = [i for i, x in enumerate(ids_here) if x in wanted and x not in found]
            if hits:
                table = output.read_part(record)
                for i in hits:
                    found[ids_here[i]] = table.slice(i, 1).to_pylist()[0]
            if len(found) == len(set(wanted)):
                break
            continue
        table = output.read_part(record)
        for row in table.to_pylist():
            if (ok_only and row["status"] != "ok") or row.get("view") == WORLD_VIEW:
                continue
            out.append(row)
            if limit is not None and len(out) >= limit:
                return out
    if wanted:
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"image id(s) not in {output.uri}: {', '.join(missing)}")
        return [found[i] for i in wanted]
    return out

