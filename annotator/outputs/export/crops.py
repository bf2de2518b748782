"""``--format crops``: one square crop per person, seen by a virtual camera that looks at the person
(the estimator's own geometry: ``annotator.estimator.crops``), as WebDataset shards ``<shard>.tar``
with ``<key>.jpg`` + ``<key>.json`` per person: what a crop-based 3D pose model trains on.

The virtual camera is rotated to look at the box centre with the world's up direction upright and
scaled so the box (times ``crop_scale``) fills ``crop_size`` pixels; the crop is resampled through
the lens model in linear light (pyramid level per scale), exactly as the estimator prepares its
input. Per crop the JSON stores that camera, so the labels need nothing else:

- ``intrinsics`` K' [3][3] of the crop (pinhole, no distortion: the lens is undone by the warp);
- ``rotation`` R [3][3], source camera -> crop camera: ``X_crop = R X_cam``;
- ``joints3d`` [J][3] mm in the crop camera (= R X_cam), ``joints2d`` [J][2] crop pixels: joints3d
  projected through K' (``u = K' X / Z``);
- the person's other labels (score, quality, joint confidences, depth sigma) and the source camera
  (``source_intrinsics``, ``source_distortion``, ``source_extrinsics`` world -> source camera).
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from annotator.outputs.export import samples
from annotator.outputs.export.config import PartTask
from annotator.outputs.export.webdataset import IMAGE_THREADS, prefetched, read_selected, write_tar
from annotator.pipeline.sink import CommitSink


def up_in_camera(row: dict, world_up: list[float]) -> np.ndarray:
    """The world's up direction in the row's camera frame (the job's ``world_up_vector`` setting,
    rotated by the extrinsics where given)."""
    up = np.asarray(world_up, np.float64)
    if row.get("extrinsics"):
        up = np.asarray(row["extrinsics"], np.float64).reshape(4, 4)[:3, :3] @ up
    return up


def person_crops(image: np.ndarray, row: dict, people: list[int], world_up: list[float], size: int,
                 scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops uint8 [K,size,size,3], rotations [K,3,3], crop intrinsics [K,3,3]) for ``people``."""
    import tensorflow as tf

    from annotator.estimator import camera, crops

    k = len(people)
    boxes = tf.constant([row["people"][i]["box"] for i in people], tf.float32)
    intr = tf.broadcast_to(tf.constant(np.asarray(row["intrinsics"], np.float32).reshape(3, 3)), [k, 3, 3])
    up = tf.broadcast_to(tf.constant(up_in_camera(row, world_up), tf.float32), [k, 3])
    dist = None
    if row.get("distortion") and any(row["distortion"]):
        dist = tf.broadcast_to(camera.pad_distortion(tf.constant(row["distortion"], tf.float32)),
                               [k, camera.NUM_DISTORTION])
    rot, crop_k = crops.virtual_camera(boxes, intr, up, size, box_scale=scale, distortion=dist)
    # only the part of the image the crops see is linearised and pyramided (a person in a full-HD frame
    # covers a fraction of it): a window aligned to the coarsest pyramid level, so its pixels are the
    # full image's; cutting it shifts the principal point, nothing else
    edge = np.linspace(-0.5, size - 0.5, 17, dtype=np.float32)
    border = np.concatenate([np.stack([edge, np.full_like(edge, v)], -1) for v in (-0.5, size - 0.5)]
                            + [np.stack([np.full_like(edge, v), edge], -1) for v in (-0.5, size - 0.5)])
    seen, valid = crops.crop_to_image_points(tf.broadcast_to(border, [k, *border.shape]), intr, rot, crop_k, dist)
    seen = seen.numpy()[valid.numpy()]
    height, width = image.shape[:2]
    x0, y0, x1, y1 = 0, 0, width, height
    if len(seen) and valid.numpy().all():
        align, margin = 4, 8  # 2 ** (pyramid levels - 1); bilinear taps and pyramid edges
        x0 = int(max(0, np.floor((seen[:, 0].min() - margin) / align) * align))
        y0 = int(max(0, np.floor((seen[:, 1].min() - margin) / align) * align))
        x1 = int(min(width, np.ceil(seen[:, 0].max() + margin)))
        y1 = int(min(height, np.ceil(seen[:, 1].max() + margin)))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crops see nothing of the image: keep it whole
        x0, y0, x1, y1 = 0, 0, width, height
    shift = tf.constant([[0, 0, x0], [0, 0, y0], [0, 0, 0]], tf.float32)
    linear = crops.to_linear(tf.constant(image[np.newaxis, y0:y1, x0:x1]))
    out = crops.warp(linear, intr - shift, rot, crop_k, size, tf.zeros([k], tf.int32), distortion=dist)
    pixels = tf.cast(tf.round(tf.clip_by_value(crops.to_display(out), 0.0, 1.0) * 255.0), tf.uint8)
    return pixels.numpy(), rot.numpy().astype(np.float64), crop_k.numpy().astype(np.float64)


def crop_json(sel: samples.Selected, k: int, rot: np.ndarray, crop_k: np.ndarray, size: int) -> dict:
    r = sel.data
    p = r["people"][k]
    x3 = np.asarray(p["joints3d_cam"], np.float64) @ rot.T
    uv = x3[:, :2] / x3[:, 2:3] * np.diag(crop_k)[:2] + crop_k[:2, 2]
    person = samples.person_json(p, k)
    for key in ("joints2d", "joints3d_cam", "joints3d_world", "box"):
        person.pop(key, None)
    return {"key": samples.crop_key(r["shard"], sel.row, k), "image_key": sel.key, "image_id": r["image_id"],
            "source_uri": r["source_uri"], "person": k, "size": size, "box": samples.rounded(p["box"], 2),
            "intrinsics": samples.rounded(crop_k, 6), "rotation": samples.rounded(rot, 8),
            "joints3d": samples.rounded(x3, 3), "joints2d": samples.rounded(uv, 3),
            **{key: v for key, v in person.items() if key != "index"},
            "source_intrinsics": samples.matrix(r["intrinsics"], 3), "source_distortion": samples.rounded(
                r["distortion"] or [], 6), "source_extrinsics": samples.matrix(r["extrinsics"], 4),
            "camera_source": r["camera_source"], "width": r["width"], "height": r["height"]}


def write_part(task: PartTask, out: CommitSink) -> dict:
    cfg = task.config
    selected = [s for s in read_selected(task) if s.data["status"] == "ok" and s.people]
    counts: dict = {"fingerprint": task.fingerprint, "source_sha256": task.record.get("sha256"),
                    "rows_in": int(task.record.get("rows", 0)), "samples": 0, "people": 0, "images": 0,
                    "skipped": {}}
    skipped: Counter = Counter()

    def image(sel: samples.Selected):
        return samples.image_or_reason(lambda: samples.decoded_image(sel.data, cfg.storage_options))

    def members():
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(IMAGE_THREADS) as pool:
            for sel, img in prefetched(pool, image, selected, window=IMAGE_THREADS):  # decoded: bounded memory
                if isinstance(img, str):
                    skipped[img] += len(sel.people)
                    continue
                pixels, rots, ks = person_crops(img, sel.data, sel.people, task.world_up, cfg.crop_size,
                                                cfg.crop_scale)
                counts["images"] += 1
                for j, k in enumerate(sel.people):
                    labels = crop_json(sel, k, rots[j], ks[j], cfg.crop_size)
                    yield f"{labels['key']}.jpg", samples.encode_jpeg(pixels[j], cfg.jpeg_quality)
                    yield f"{labels['key']}.json", json.dumps(labels, separators=(",", ":")).encode()
                    counts["samples"] += 1
                    counts["people"] += 1
        counts["skipped"] = dict(sorted(skipped.items()))

    return out.write_file(task.shard, f"{task.shard}.tar", lambda f: write_tar(f, members()), counts)
