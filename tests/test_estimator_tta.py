"""Test-time augmentation on a synthetic rendering: rotated, scaled, gamma-changed and mirrored crops
all give the same 3D once the augmentation is undone (rotation back, left/right swapped back).

The scene is a flat "cardboard" person facing the camera, drawn as coloured blobs. The synthetic crop
model behaves like a real one where it matters here: it finds joints in the *crop's* pixels, and it
tells left from right by where a blob is in the crop (the person faces the camera, so their left
side is on the crop's right). In a mirrored crop it therefore swaps left and right, exactly as a
trained network would, and the estimator must swap them back.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from annotator.estimator import camera, model, reconstruct, skeletons
from annotator.estimator.options import EstimatorOptions

NAMES = ("head", "left_shoulder", "right_shoulder", "left_hand", "right_hand", "left_foot", "right_foot")
SKELETON = skeletons.Skeleton("toy_7", NAMES, ((0, 1), (0, 2), (1, 3), (2, 4), (1, 5), (2, 6)))
COLOURS = {"head": (1.0, 0.0, 0.0), "shoulder": (0.0, 1.0, 0.0), "hand": (0.0, 0.0, 1.0), "foot": (1.0, 1.0, 0.0)}
# camera frame, mm: the person's left (+x in the world facing us) is on the image's right
TRUE_POSE = np.array([
    [0, -700, 3000], [200, -500, 3000], [-200, -500, 3000], [380, -100, 3000], [-380, -100, 3000],
    [160, 800, 3000], [-160, 800, 3000]], np.float32)
HEIGHT_MM = 1500.0  # head to mid-feet, what the toy model knows about people
H, W, F = 480, 640, 600.0
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]], np.float32)


def _render() -> np.ndarray:
    uv = camera.project(TRUE_POSE[None], K[None]).numpy()[0]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = np.full((H, W, 3), 0.5, np.float32)
    for name, (u, v) in zip(NAMES, uv, strict=True):
        colour = np.array(COLOURS[name.split("_")[-1]], np.float32)
        a = np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 5.0 ** 2))[..., None]
        img = img * (1 - a) + colour * a
    return np.round(img * 255).astype(np.uint8)


class ToyCropModel(tf.Module):
    """Finds each colour's blob(s) in the crop; lifts them onto a plane facing the crop camera at the
    scale that makes the person HEIGHT_MM tall, then absolute 3D as for BlazePose."""

    input_resolution = 256
    box_scale = 1.25
    skeleton = SKELETON
    num_joints = 7

    def _centroid(self, crops, colour, split=None):
        w = tf.nn.relu(1.0 - tf.norm(crops - tf.constant(colour), axis=-1) / 0.35)  # [K,r,r]
        r = self.input_resolution
        xs = tf.range(r, dtype=tf.float32)[tf.newaxis, tf.newaxis, :]
        ys = tf.range(r, dtype=tf.float32)[tf.newaxis, :, tf.newaxis]
        if split is not None:
            w = w * split(xs, w)
        total = tf.reduce_sum(w, axis=[1, 2]) + 1e-9
        return tf.stack([tf.reduce_sum(w * xs, [1, 2]) / total, tf.reduce_sum(w * ys, [1, 2]) / total], -1)

    def predict(self, crops, crop_intrinsics, reconstruction="blend"):
        pts = {"head": self._centroid(crops, COLOURS["head"])}
        for part in ("shoulder", "hand", "foot"):
            mean_x = self._centroid(crops, COLOURS[part])[:, 0][:, tf.newaxis, tf.newaxis]
            # the blob on the crop's right is the person's left (they face the camera)
            colour = COLOURS[part]
            pts["left_" + part] = self._centroid(crops, colour, lambda xs, w, m=mean_x: tf.cast(xs > m, w.dtype))
            pts["right_" + part] = self._centroid(crops, colour, lambda xs, w, m=mean_x: tf.cast(xs < m, w.dtype))
        coords2d = tf.stack([pts[n] for n in NAMES], axis=1)
        n = camera.to_normalized(coords2d, crop_intrinsics)
        feet = (n[:, 5] + n[:, 6]) / 2
        scale = HEIGHT_MM / tf.norm(n[:, 0] - feet, axis=-1)
        rel = tf.concat([n * scale[:, tf.newaxis, tf.newaxis], tf.zeros_like(n[..., :1])], -1)
        rel -= tf.reduce_mean(rel, axis=1, keepdims=True)
        poses3d = reconstruct.reconstruct_absolute(coords2d, rel, crop_intrinsics, tf.ones_like(n[..., 0]),
                                                   self.input_resolution, method=reconstruction)
        k = tf.shape(crops)[0]
        return {"poses3d": poses3d, "coords2d": coords2d, "joint_confidences": tf.ones([k, 7]),
                "pose_scores": tf.ones([k])}


@pytest.fixture(scope="module")
def toy():
    # MeTRAbs' full schedule (rotations, zooms, gamma, mirroring) and plain averaging: every kind of
    # augmentation must be undone exactly
    return model.PoseEstimator(None, ToyCropModel(), {}, EstimatorOptions.metrabs().replace(alignment=False))


def _box():
    uv = camera.project(TRUE_POSE[None], K[None]).numpy()[0]
    lo, hi = uv.min(0) - 30, uv.max(0) + 30
    return np.array([[lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]], np.float32)


def test_every_augmentation_gives_the_same_3d(toy):
    image = _render()
    out = toy.estimate_poses(image, _box(), intrinsic_matrix=K, num_aug=5, average_aug=False)
    per_aug = out["poses3d"].numpy()[0]  # [A=5, J, 3]: rolls -25..25 deg, scales .8..1.1, flips F,T,F,T,F
    assert per_aug.shape == (5, 7, 3)
    tolerance_mm = 20.0  # blob centroids are found to ~0.2 crop px; depth follows the pose's scale
    for a in range(5):
        err = np.linalg.norm(per_aug[a] - TRUE_POSE, axis=-1)
        assert err.max() < tolerance_mm, (a, err)
    # the mirrored crops really were mirrored: left and right differ by 300+ mm, so a missing
    # un-mirroring would have failed above; check that the toy model did see them swapped
    assert np.linalg.norm(TRUE_POSE[1] - TRUE_POSE[2]) > 300
    averaged = toy.estimate_poses(image, _box(), intrinsic_matrix=K, num_aug=5)["poses3d"].numpy()[0]
    np.testing.assert_allclose(averaged, per_aug.mean(0), atol=1e-3)
    # poses2d is the projection of the 3D through the camera
    p2 = toy.estimate_poses(image, _box(), intrinsic_matrix=K, num_aug=5)["poses2d"].numpy()[0]
    uv = camera.project(TRUE_POSE[None], K[None]).numpy()[0]
    assert np.abs(p2 - uv).max() < 2.0


def test_raw_2d_is_mapped_back_through_each_augmentation(toy):
    out = toy.estimate_poses(_render(), _box(), intrinsic_matrix=K, num_aug=4, average_aug=False)
    raw = out["poses2d_raw"].numpy()[0]
    uv = camera.project(TRUE_POSE[None], K[None]).numpy()[0]
    assert np.abs(raw - uv[None]).max() < 1.5


def test_world_frame_from_known_extrinsics(toy):
    """poses3d come out in the world frame: inv(extrinsic) applied to the camera-frame result."""
    image = _render()
    rot = np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], np.float32)
    ext = np.eye(4, dtype=np.float32)
    ext[:3, :3], ext[:3, 3] = rot, [100.0, -50.0, 2000.0]
    cam = toy.estimate_poses(image, _box(), intrinsic_matrix=K, num_aug=1)["poses3d"].numpy()[0]
    world = toy.estimate_poses(image, _box(), intrinsic_matrix=K, extrinsic_matrix=ext, num_aug=1)["poses3d"].numpy()[0]
    np.testing.assert_allclose(world, (cam - ext[:3, 3]) @ rot, atol=1e-2)


def test_the_default_consensus_gives_the_same_3d_and_its_mean_is_the_label():
    """The shipped defaults (gamma, zoom and mirroring, combined by consensus): every augmentation
    still lands on the true pose, and the per-augmentation poses average to the returned one."""
    toy = model.PoseEstimator(None, ToyCropModel(), {}, EstimatorOptions(alignment=False))
    image = _render()
    per_aug = toy.estimate_poses(image, _box(), intrinsic_matrix=K, num_aug=5, average_aug=False)["poses3d"].numpy()[0]
    for a in range(5):
        assert np.linalg.norm(per_aug[a] - TRUE_POSE, axis=-1).max() < 20.0, a
    averaged = toy.estimate_poses(image, _box(), intrinsic_matrix=K, num_aug=5)["poses3d"].numpy()[0]
    np.testing.assert_allclose(averaged, per_aug.mean(0), atol=1e-3)
    assert np.linalg.norm(averaged - TRUE_POSE, axis=-1).max() < 20.0
