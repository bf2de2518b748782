"""Estimator outputs -> Arrow rows of the label schema (one row per input image, errors included)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from annotator.labels import camera_codec, schema
from annotator.labels.camera_codec import Camera


@dataclass
class Prediction:
    """One image's people, as the estimator returns them (official API names)."""

    boxes: np.ndarray  # [K,5] x, y, w, h, score
    poses2d: np.ndarray  # [K,J,2] px
    poses3d: np.ndarray  # [K,J,3] mm, world frame if extrinsics were given, else camera frame
    joint_confidences: np.ndarray | None = None  # [K,J]
    pose_scores: np.ndarray | None = None  # [K]
    quality: np.ndarray | None = None  # [K], annotator.labels.quality
    depth_sigma_mm: np.ndarray | None = None  # [K], 1-sigma depth uncertainty
    depth_source: list[str] | None = None  # [K], 'monocular' or 'ground_plane'
    joint_sigma_mm: np.ndarray | None = None  # [K,J], 1-sigma per coordinate of each root-relative joint
    # what the sigmas were made of (``labels.uncertainty``; not stored, for fitting their calibration):
    # log_size_sigma [K], depth_mm [K], depth_spread_mm [K], joint_spread_mm [K,J] (None: one augmentation)
    sigma_terms: dict | None = None
    poses2d_raw: np.ndarray | None = None  # [K,J,2] the crop model's own 2D (stored as joints2d_net)
    track_ids: np.ndarray | None = None  # [K] int64, -1 = none (videos: ``pipeline.sequence`` sets them on rows)

    @staticmethod
    def empty(num_joints: int) -> Prediction:
        return Prediction(np.zeros((0, 5), np.float32), np.zeros((0, num_joints, 2), np.float32),
                          np.zeros((0, num_joints, 3), np.float32))


@dataclass
class ImageRecord:
    """What the pipeline knows about one input image by the time it is encoded."""

    image_id: str
    source_uri: str
    shard: str
    width: int | None = None
    height: int | None = None
    camera: Camera | None = None
    error: str | None = None
    prediction: Prediction | None = None


def _people(pred: Prediction, camera: Camera | None) -> list[dict]:
    ext = camera.extrinsics if camera is not None else None
    world = ext is not None
    if world:
        rot, trans = ext[:3, :3], ext[:3, 3]
        cam3d = pred.poses3d @ rot.T + trans
    else:
        cam3d = pred.poses3d
    people = []
    for i in range(len(pred.boxes)):
        people.append({
            "box": pred.boxes[i, :4].tolist(),
            "score": float(pred.boxes[i, 4]),
            "pose_score": None if pred.pose_scores is None else float(pred.pose_scores[i]),
            "joints2d": pred.poses2d[i].tolist(),
            "joints3d_cam": cam3d[i].tolist(),
            "joints3d_world": pred.poses3d[i].tolist() if world else None,
            "joint_confidences": (None if pred.joint_confidences is None
                                  else pred.joint_confidences[i].tolist()),
            "quality": (None if pred.quality is None or not np.isfinite(pred.quality[i])
                        else float(pred.quality[i])),
            "depth_sigma_mm": (None if pred.depth_sigma_mm is None or not np.isfinite(pred.depth_sigma_mm[i])
                               else float(pred.depth_sigma_mm[i])),
            "depth_source": None if pred.depth_source is None else pred.depth_source[i],
            # schema 1.3: the temporal step of videos fills these on the assembled shard
            "track_id": None if pred.track_ids is None or pred.track_ids[i] < 0 else int(pred.track_ids[i]),
            "joints2d_raw": None, "joints3d_cam_raw": None, "joints3d_world_raw": None,
            "joint_sigma_mm": None if pred.joint_sigma_mm is None else pred.joint_sigma_mm[i].tolist(),
            # schema 1.5: the network's own 2D, what the 3D was fitted to (rig fusion triangulates it)
            "joints2d_net": None if pred.poses2d_raw is None else pred.poses2d_raw[i].tolist(),
        })
    return people


def to_row(rec: ImageRecord) -> dict:
    cam = rec.camera
    ok = rec.error is None
    people = _people(rec.prediction, cam) if ok and rec.prediction is not None else []
    intrinsics, distortion, extrinsics, camera_source = camera_codec.to_lists(cam)
    return {
        "image_id": rec.image_id,
        "source_uri": rec.source_uri,
        "shard": rec.shard,
        "width": rec.width,
        "height": rec.height,
        "status": "ok" if ok else "error",
        "error": rec.error,
        "intrinsics": intrinsics,
        "distortion": distortion,
        "extrinsics": extrinsics,
        "camera_source": camera_source,
        "num_people": len(people),
        "people": people,
    }


def to_table(records: Sequence[ImageRecord]) -> pa.Table:
    """Encode records into a table of the current schema (no file metadata; the sink adds it)."""
    return pa.Table.from_pylist([to_row(r) for r in records], schema=schema.arrow_schema())
