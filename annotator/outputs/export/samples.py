"""What every export format shares: which rows and people pass the filters, their stable keys, the
labels of a row as JSON, and the image as the labelling job saw it.

Stable keys: a sample's key is ``<shard>-<row>`` (its source part's shard id and its row in that
part, which is sorted by image id), a crop's is ``<shard>-<row>-<person>`` (the person's index in
the row's ``people``). They do not change with the filters, the format or a rerun, contain no dots
(the WebDataset key/extension rule), and the labels carry the ``image_id`` they stand for.

Filters (as ``annotator filter``): ``status`` picks ok rows, error rows or all; a person passes when
their detector score >= ``min_score`` and quality >= ``min_quality`` (an unknown quality fails; a
schema-1.0 output gets it computed from the stored columns); a row that had people and lost them
all is left out unless ``keep_emptied`` (it would teach "nobody here"), a row with no detections
at all is kept (the detector's negatives).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa
from PIL import Image

from annotator.labels import quality
from annotator.outputs import dataset
from annotator.pipeline import decode, sources
from annotator.pipeline.rig import WORLD_VIEW

T = TypeVar("T")

STATUSES = ("ok", "error", "all")
ORIENTATION = 0x0112  # EXIF tag
KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # original bytes kept when upright RGB/L


@dataclass(frozen=True)
class Filters:
    status: str = "ok"
    min_quality: float | None = None
    min_score: float | None = None
    keep_emptied: bool = False

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")


@dataclass
class Selected:
    """One row that passes, with the people that pass (their indices in the row's ``people``)."""

    row: int
    data: dict
    people: list[int]
    key: str


def sample_key(shard: str, row: int) -> str:
    return f"{shard}-{row:06d}"


def crop_key(shard: str, row: int, person: int) -> str:
    return f"{sample_key(shard, row)}-{person:02d}"


def person_passes(person: dict, filters: Filters, joint_names: list[str], size) -> bool:
    if filters.min_score is not None and not (person.get("score") or 0.0) >= filters.min_score:
        return False
    if filters.min_quality is not None:
        q = person["quality"] if "quality" in person else quality.score_stored_person(person, joint_names, size)
        if q is None or not q >= filters.min_quality:
            return False
    return True


def select(table: pa.Table, shard: str, filters: Filters, joint_names: list[str]) -> list[Selected]:
    """The rows of one part that pass, in part order (one Python pass: parts are a few hundred rows)."""
    out = []
    for i, row in enumerate(table.to_pylist()):
        ok = row["status"] == "ok"
        if (filters.status == "ok" and not ok) or (filters.status == "error" and ok) or row.get("view") == WORLD_VIEW:
            continue  # a rig's world rows have no image to export
        people = row.get("people") or []
        size = (row["width"], row["height"]) if row.get("width") is not None else None
        kept = [k for k, p in enumerate(people) if person_passes(p, filters, joint_names, size)]
        if people and not kept and not filters.keep_emptied:
            continue
        out.append(Selected(i, row, kept, sample_key(shard, i)))
    return out


# ---------------------------------------------------------------------------------------------
# Labels as JSON


def rounded(values, decimals: int):
    """Nested lists of float32 values rounded (JSON of float32 as doubles is 17 digits of noise)."""
    if values is None:
        return None
    arr = np.asarray(values, np.float64)
    return np.round(arr, decimals).tolist()


def matrix(values, n: int, decimals: int = 4):
    return rounded(np.asarray(values, np.float64).reshape(n, n), decimals) if values else None


def person_json(person: dict, index: int) -> dict:
    """One person's labels (coordinates to 0.01 px / 0.01 mm, scores to 1e-4); ``index``: their place
    in the row's ``people``."""
    out = {"index": index}
    for key, value in person.items():
        if key in ("box", "joints2d", "joints3d_cam", "joints3d_world"):
            out[key] = rounded(value, 2)
        elif isinstance(value, float) or key == "joint_confidences":
            out[key] = rounded(value, 4)
        else:
            out[key] = value
    return out


def row_json(sel: Selected) -> dict:
    """A sample's ``.json``: the row's image fields, its camera as matrices, the people that passed."""
    r = sel.data
    return {"key": sel.key, "image_id": r["image_id"], "source_uri": r["source_uri"], "shard": r["shard"],
            "row": sel.row, "status": r["status"], "error": r["error"], "width": r["width"], "height": r["height"],
            "camera_source": r["camera_source"], "intrinsics": matrix(r["intrinsics"], 3),
            "distortion": rounded(r["distortion"] or [], 6), "extrinsics": matrix(r["extrinsics"], 4),
            "people": [person_json(r["people"][k], k) for k in sel.people]}


# ---------------------------------------------------------------------------------------------
# Images


class ImageChanged(ValueError):
    """The image no longer matches its labels (other size): it changed since labelling."""


def image_or_reason(read: Callable[[], T]) -> T | str:
    """What ``read`` returns for a selected row's image, or why there is none ("image_changed": the
    source no longer matches the row; "image_unreadable"): the export then counts the reason and
    goes on with the next sample."""
    try:
        return read()
    except ImageChanged:
        return "image_changed"
    except (OSError, ValueError):
        return "image_unreadable"


def _check_size(row: dict, width: int, height: int) -> None:
    if row.get("width") is not None and (width, height) != (row["width"], row["height"]):
        raise ImageChanged(f"{row['image_id']}: image is {width}x{height} now, labels are for "
                           f"{row['width']}x{row['height']}")


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decoded_image(row: dict, storage_options: dict | None) -> np.ndarray:
    """RGB uint8 of a row, decoded as the labelling job did (EXIF orientation applied)."""
    image = dataset.load_image(row["source_uri"], storage_options)
    _check_size(row, image.shape[1], image.shape[0])
    return image


def image_file(row: dict, storage_options: dict | None, jpeg_quality: int = 95) -> tuple[str, bytes, str]:
    """``(extension, bytes, how)`` of a row's image for a sample: the original bytes ("original") when
    any decoder shows them as the job saw them (JPEG/PNG/WebP, RGB or grey, no EXIF rotation), else
    the job's decoding re-encoded as JPEG ("reencoded": rotated photos, video frames, other formats)."""
    fragment = row["source_uri"].partition("#")[2]
    if not fragment.startswith("frame="):
        data = sources.read_bytes(dataset.image_uri(row["source_uri"]), storage_options)
        with Image.open(io.BytesIO(data)) as img:
            upright = img.getexif().get(ORIENTATION, 1) == 1
            if img.format in KEEP_FORMATS and upright and img.mode in ("RGB", "L"):
                _check_size(row, *img.size)
                return KEEP_FORMATS[img.format], data, "original"
        decoded = decode.decode(data, max_pixels=1 << 62)
        if not decoded.ok:
            raise ValueError(f"{row['image_id']}: {decoded.error}")
        _check_size(row, decoded.width, decoded.height)
        return "jpg", encode_jpeg(decoded.image, jpeg_quality), "reencoded"
    return "jpg", encode_jpeg(decoded_image(row, storage_options), jpeg_quality), "reencoded"
