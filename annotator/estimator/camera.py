"""Pinhole cameras: intrinsics, projection, extrinsics. Pure TF, batched over leading axes.

Conventions (as OpenCV and MeTRAbs): camera frame x right, y down, z forward, millimetres;
pixel centres at integer coordinates; extrinsics map world to camera (``X_cam = R X_w + t``).
An intrinsic matrix whose [0,0] entry is not positive means "unknown" (the official default is
all -1) and is replaced by one with a ``default_fov_degrees`` field of view on the longer side.
"""

from __future__ import annotations

import math

import tensorflow as tf


def default_intrinsics(height, width, fov_degrees) -> tf.Tensor:
    """K with f = max(H, W) / (2 tan(fov/2)) and the principal point at the image centre."""
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    fov = tf.cast(fov_degrees, tf.float32)
    f = tf.maximum(height, width) / (2.0 * tf.tan(fov * (math.pi / 360.0)))
    zero = tf.zeros_like(f)
    one = tf.ones_like(f)
    return tf.stack([
        tf.stack([f, zero, (width - 1.0) / 2.0], -1),
        tf.stack([zero, f, (height - 1.0) / 2.0], -1),
        tf.stack([zero, zero, one], -1),
    ], -2)


def resolve_intrinsics(intrinsics, height, width, fov_degrees) -> tf.Tensor:
    """Use ``intrinsics`` [..., 3, 3] where known, else the default-FOV matrix."""
    intrinsics = tf.convert_to_tensor(intrinsics, tf.float32)
    default = default_intrinsics(height, width, fov_degrees)
    default = tf.broadcast_to(default, tf.shape(intrinsics))
    known = intrinsics[..., 0, 0] > 0
    return tf.where(known[..., tf.newaxis, tf.newaxis], intrinsics, default)


def project(points, intrinsics) -> tf.Tensor:
    """Project [..., J, 3] camera-frame points with K [..., 3, 3] to [..., J, 2] pixels."""
    points = tf.convert_to_tensor(points, tf.float32)
    z = tf.maximum(points[..., 2:3], 1e-6)
    normalized = points[..., :2] / z
    return apply_intrinsics(normalized, intrinsics)


def apply_intrinsics(normalized, intrinsics) -> tf.Tensor:
    """Normalised image coordinates [..., J, 2] -> pixels, via the affine part of K."""
    k = tf.convert_to_tensor(intrinsics, tf.float32)
    return tf.linalg.matmul(normalized, k[..., :2, :2], transpose_b=True) + k[..., tf.newaxis, :2, 2]


def to_normalized(pixels, intrinsics) -> tf.Tensor:
    """Pixels [..., J, 2] -> normalised image coordinates (inverse of ``apply_intrinsics``)."""
    k = tf.convert_to_tensor(intrinsics, tf.float32)
    centred = pixels - k[..., tf.newaxis, :2, 2]
    return tf.linalg.matmul(centred, tf.linalg.inv(k[..., :2, :2]), transpose_b=True)


def camera_to_world(points, extrinsics) -> tf.Tensor:
    """Map [..., J, 3] camera-frame points to the world frame with world->camera ``extrinsics``."""
    e = tf.convert_to_tensor(extrinsics, tf.float32)
    rot = e[..., :3, :3]
    trans = e[..., tf.newaxis, :3, 3]
    # X_w = R^T (X_c - t); with row vectors: (X_c - t) @ R
    return tf.linalg.matmul(points - trans, rot)


def world_to_camera(points, extrinsics) -> tf.Tensor:
    e = tf.convert_to_tensor(extrinsics, tf.float32)
    return tf.linalg.matmul(points, e[..., :3, :3], transpose_b=True) + e[..., tf.newaxis, :3, 3]
