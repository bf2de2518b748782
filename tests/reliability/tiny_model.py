"""A tiny SavedModel with the official MeTRAbs API (``detect_poses_batched`` and the skeleton
variables), for the reliability tests: what they check (rows lost, duplicated, moved between
nodes, retried) does not depend on what the model sees, and the real one costs seconds per
image on 2 cores. Its answer is a deterministic function of the pixels and the camera (one person
per image, scaled by the image's mean colour), so two runs over the same input give equal
labels, and a mixed-up row would show.

``work`` makes every call do that many 64x64 matrix products first: a batch then takes a
measurable time, so an actor killed "mid-batch" really is.

``fail`` makes it a broken model, for the error budget's tests (``pipeline.budget``): "images"
fails on every image that is not all black (its warm-up on a black image passes), "marked" on
images whose top-left corner is magenta (``MARK_RGB``: one bad image among good ones), "always"
on every call, its warm-up included. Each failure is TensorFlow's own ``InvalidArgumentError``
from a failed assertion in the graph, as a real model's failing op raises it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

JOINTS = ("pelv", "neck", "head", "lank", "rank")
EDGES = ((0, 1), (1, 2), (0, 3), (0, 4))
# a standing person in the camera frame (mm), 3 m in front of the camera
FAILS = ("", "images", "marked", "always")
MARK_RGB = (255, 0, 255)  # "marked": the top-left 8x8 corner of a failing image, JPEG-tolerant
BASE = ((0.0, 0.0, 3000.0), (0.0, -500.0, 3000.0), (0.0, -700.0, 3000.0), (-100.0, 900.0, 3000.0),
        (100.0, 900.0, 3000.0))


def build(folder: Path, work: int = 0, fail: str = "") -> Path:
    """Export the tiny model to ``folder`` (returns it); ``work``: matrix products per call;
    ``fail``: one of ``FAILS``."""
    import tensorflow as tf

    if fail not in FAILS:
        raise ValueError(f"fail must be one of {FAILS}, got {fail!r}")

    class TinyPoseModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.joint_names = tf.Variable(list(JOINTS), dtype=tf.string, trainable=False)
            self.joint_edges = tf.Variable(np.array(EDGES, np.int32), trainable=False)
            self.per_skeleton_joint_names = {"tiny_5": tf.Variable(list(JOINTS), dtype=tf.string, trainable=False)}
            self.per_skeleton_joint_edges = {"tiny_5": tf.Variable(np.array(EDGES, np.int32), trainable=False)}
            self.base = tf.constant(BASE, tf.float32)
            self.work = tf.constant(work, tf.int32)

        @tf.function(input_signature=[
            tf.TensorSpec((None, None, None, 3), tf.uint8, name="images"),
            tf.TensorSpec((None, 3, 3), tf.float32, name="intrinsic_matrix"),
            tf.TensorSpec((None, None), tf.float32, name="distortion_coeffs"),
            tf.TensorSpec((None, 4, 4), tf.float32, name="extrinsic_matrix"),
            tf.TensorSpec((3,), tf.float32, name="world_up_vector"),
            tf.TensorSpec((), tf.float32, name="default_fov_degrees"),
            tf.TensorSpec((), tf.int32, name="internal_batch_size"),
            tf.TensorSpec((), tf.int32, name="antialias_factor"),
            tf.TensorSpec((), tf.int32, name="num_aug"),
            tf.TensorSpec((), tf.bool, name="average_aug"),
            tf.TensorSpec((), tf.string, name="skeleton"),
            tf.TensorSpec((), tf.float32, name="detector_threshold"),
            tf.TensorSpec((), tf.float32, name="detector_nms_iou_threshold"),
            tf.TensorSpec((), tf.int32, name="max_detections"),
            tf.TensorSpec((), tf.bool, name="detector_flip_aug"),
            tf.TensorSpec((), tf.bool, name="suppress_implausible_poses")])
        def detect_poses_batched(self, images, intrinsic_matrix, distortion_coeffs, extrinsic_matrix,
                                 world_up_vector, default_fov_degrees, internal_batch_size, antialias_factor,
                                 num_aug, average_aug, skeleton, detector_threshold, detector_nms_iou_threshold,
                                 max_detections, detector_flip_aug, suppress_implausible_poses):
            n = tf.shape(images)[0]
            if fail == "images":
                broken = tf.reduce_max(images) > 0
            elif fail == "marked":
                corner = tf.reduce_mean(tf.cast(images[:, :8, :8, :], tf.float32), axis=[1, 2])  # [N,3]
                broken = tf.reduce_any(tf.reduce_all(tf.abs(corner - tf.constant(MARK_RGB, tf.float32)) < 40, -1))
            else:
                broken = tf.logical_and(n >= 0, fail == "always")
            with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(broken), [f"tiny model fails: {fail}"])]):
                n = tf.identity(n)
            # depends on the input, so that the loop is not folded away as a constant
            m = tf.eye(64) * tf.cast(n, tf.float32) * 0.01
            m = tf.while_loop(lambda i, x: i < self.work, lambda i, x: (i + 1, tf.tanh(tf.matmul(x, x) + 0.1)),
                              (0, m))[1]
            busy = tf.reduce_sum(m) * 0.0  # keeps the loop in the graph, changes nothing
            h = tf.cast(tf.shape(images)[1], tf.float32)
            w = tf.cast(tf.shape(images)[2], tf.float32)
            colour = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0  # [N,3]
            score = 0.5 + 0.5 * colour[:, 0] + busy  # [N]
            boxes = tf.stack([tf.fill([n], w * 0.25), tf.fill([n], h * 0.1), tf.fill([n], w * 0.5),
                              tf.fill([n], h * 0.8), score], axis=-1)  # [N,5]
            scale = (0.8 + 0.4 * colour[:, 1])[:, None, None]  # [N,1,1]
            shift = tf.stack([200.0 * (colour[:, 2] - 0.5), tf.zeros([n]), tf.zeros([n])], -1)[:, None]
            pose = self.base[None] * scale + shift  # [N,J,3]
            a = tf.maximum(num_aug, 1)
            jitter = tf.cast(tf.range(a), tf.float32)[None, :, None, None] * 0.5  # mm per augmentation
            per_aug = pose[:, None] + jitter  # [N,A,J,3]
            proj = tf.einsum("nij,naj->nai", intrinsic_matrix, tf.reshape(per_aug, [n, -1, 3]))
            uv = tf.reshape(proj[..., :2] / proj[..., 2:], [n, a, len(JOINTS), 2])
            conf = tf.fill([n, len(JOINTS)], 0.9)
            one = tf.ones([n], tf.int64)
            return {"boxes": tf.RaggedTensor.from_row_lengths(boxes, one),
                    "poses3d": tf.RaggedTensor.from_row_lengths(per_aug, one),
                    "poses2d": tf.RaggedTensor.from_row_lengths(uv, one),
                    "joint_confidences": tf.RaggedTensor.from_row_lengths(conf, one),
                    "pose_scores": tf.RaggedTensor.from_row_lengths(score, one)}

    folder = Path(folder)
    tf.saved_model.save(TinyPoseModel(), str(folder))
    return folder


if __name__ == "__main__":
    import sys

    folder, work, fail = [*sys.argv[1:], "0", ""][:3] if len(sys.argv) < 3 else [*sys.argv[1:], ""][:3]
    print(build(Path(folder), int(work), fail))
