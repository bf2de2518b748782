"""Synthetic label outputs with known geometry, committed by the real sink (no model needed).

Each image shows stick-figure people as bright blobs on a dark, textured background; their joints
are known in 3D (camera frame, mm) and projected through the image's camera (optionally through
lens distortion), so a test can check where a joint must appear in an exported image or crop.
The 17 joints are COCO's, named as the default skeleton names them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
from PIL import Image

from annotator.labels import schema
from annotator.pipeline import sink, sources

JOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle")
# mm relative to the pelvis, camera axes (x right, y down): a person facing the camera, arms out
BODY = np.array([[0, -650, -60], [35, -680, -40], [-35, -680, -40], [75, -660, 0], [-75, -660, 0],
                 [180, -450, 0], [-180, -450, 0], [330, -300, 30], [-330, -300, 30], [430, -120, 60],
                 [-430, -120, 60], [100, 0, 0], [-100, 0, 0], [120, 420, 40], [-120, 420, 40], [130, 830, 0],
                 [-130, 830, 0]], np.float64)
EDGES = [[5, 7], [7, 9], [6, 8], [8, 10], [5, 6], [11, 12], [5, 11], [6, 12], [11, 13], [13, 15], [12, 14], [14, 16]]
META = {"model": {"id": "annotator/default-full", "reference": "default", "sha256": "cd" * 32},
        "skeleton": {"name": "synthetic", "joint_names": list(JOINTS), "edges": EDGES},
        "settings": {"num_aug": 1, "world_up_vector": [0.0, -1.0, 0.0]}}


def intrinsics(width: int, height: int, f: float) -> np.ndarray:
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)


def project(points: np.ndarray, k: np.ndarray, distortion: list[float] | None = None) -> np.ndarray:
    """Camera-frame points [J,3] -> pixels [J,2] (through the lens model where ``distortion`` is given)."""
    if distortion and any(distortion):
        from annotator.estimator import camera

        return camera.project_distorted(points[np.newaxis].astype(np.float32), k.astype(np.float32),
                                        camera.pad_distortion(np.asarray([distortion], np.float32))).numpy()[0]
    uv = points[:, :2] / points[:, 2:3]
    return uv * np.diag(k)[:2] + k[:2, 2]


def draw(width: int, height: int, joints2d: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """A dark textured background with a Gaussian blob (sigma 1.5 px) at every joint."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 60, (height, width, 3)).astype(np.float64)
    yy, xx = np.mgrid[0:height, 0:width]
    for pts in joints2d:
        for x, y in pts:
            img += 230 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def person(joints3d: np.ndarray, k: np.ndarray, quality: float | None, score: float = 0.9,
           distortion: list[float] | None = None) -> dict:
    uv = project(joints3d, k, distortion)
    lo, hi = uv.min(0) - 15, uv.max(0) + 15
    return {"box": [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])], "score": score,
            "pose_score": 0.8, "joints2d": uv.tolist(), "joints3d_cam": joints3d.tolist(), "joints3d_world": None,
            "joint_confidences": [0.9] * len(JOINTS), "quality": quality, "depth_sigma_mm": 180.0,
            "depth_source": "monocular"}


def encode(image: np.ndarray, fmt: str) -> bytes:
    """``jpg``, ``png`` or ``jpg-rot`` (stored rotated with EXIF orientation 6, so viewers and the
    labelling job see ``image``)."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG")
    elif fmt == "jpg-rot":
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(image).transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=95, exif=exif)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def scene_row(image_id: str, source_uri: str, shard: str, width: int, height: int, f: float,
              pelvises: list[tuple[float, float, float]], qualities: list[float | None],
              distortion: list[float] | None = None, seed: int = 0) -> tuple[dict, np.ndarray]:
    """(row, image) of one synthetic photo with a person at each pelvis position (mm)."""
    k = intrinsics(width, height, f)
    people = [person(BODY + np.asarray(p), k, q, distortion=distortion) for p, q in zip(pelvises, qualities,
                                                                                        strict=True)]
    image = draw(width, height, [np.asarray(p["joints2d"]) for p in people], seed)
    row = {"image_id": image_id, "source_uri": source_uri, "shard": shard, "width": width, "height": height,
           "status": "ok", "error": None, "intrinsics": k.ravel().tolist(), "distortion": list(distortion or []),
           "extrinsics": None, "camera_source": "sidecar", "num_people": len(people), "people": people}
    return row, image


def error_row(image_id: str, source_uri: str, shard: str) -> dict:
    return {"image_id": image_id, "source_uri": source_uri, "shard": shard, "width": None, "height": None,
            "status": "error", "error": "truncated: image file is truncated", "intrinsics": None,
            "distortion": None, "extrinsics": None, "camera_source": None, "num_people": 0, "people": []}


def write_output(uri: str, images_uri: str, shards: int = 2, per_shard: int = 3, storage_options: dict | None = None,
                 distortion: list[float] | None = None, formats=("jpg", "png", "jpg-rot")) -> dict:
    """A committed output (final manifest) of ``shards`` x ``per_shard`` synthetic photos plus one
    error row per shard; the photos are written under ``images_uri``. Returns ``{image_id: row}``."""
    fs, root = sources.filesystem(images_uri, storage_options)
    fs.makedirs(root, exist_ok=True)
    out = sink.DatasetSink(uri, file_metadata={f"annotator.{k}".encode(): json.dumps(v).encode()
                                               for k, v in META.items()}, fingerprint="synthetic",
                           storage_options=storage_options)
    out.file_metadata[b"annotator.schema_version"] = schema.version().encode()
    out.makedirs()
    rows, records = {}, {}
    for s in range(shards):
        shard = f"{s:06d}"
        table_rows = []
        for i in range(per_shard):
            n = s * per_shard + i
            fmt = formats[n % len(formats)]
            name = f"s{s}/img{i}.{'png' if fmt == 'png' else 'jpg'}"
            # one person near the left border (seen obliquely), one in the middle on every other image
            pelvises = [(-1300.0 + 60 * n, 100.0, 3200.0)] + ([(700.0, 50.0, 4200.0)] if n % 2 == 0 else [])
            qualities = [0.9, 0.3][: len(pelvises)]
            row, image = scene_row(name, f"{images_uri.rstrip('/')}/{name}", shard, 320, 240, 260.0, pelvises,
                                   qualities, distortion, seed=n)
            fs.makedirs(f"{root.rstrip('/')}/s{s}", exist_ok=True)
            fs.pipe_file(f"{root.rstrip('/')}/{name}", encode(image, fmt))
            table_rows.append(row)
            rows[name] = row
        bad = f"s{s}/broken.jpg"
        fs.pipe_file(f"{root.rstrip('/')}/{bad}", b"\xff\xd8\xff cut")
        table_rows.append(error_row(bad, f"{images_uri.rstrip('/')}/{bad}", shard))
        rows[bad] = table_rows[-1]
        records[shard] = out.write_shard(shard, pa.Table.from_pylist(table_rows, schema=schema.arrow_schema()))
    out.write_manifest(records, final=True, shards_total=shards)
    return rows
