"""Absolute 3D from a crop model's 2D + root-relative metric 3D (MeTRAbs ``tfu3d.reconstruct_absolute``).

The crop model predicts where each joint is in the crop (2D, pixels) and the pose's shape in
metric units up to an unknown translation (3D, mm). The translation t is the one that makes
``X + t`` project onto the 2D points: for each joint, ``X + t_x = x_n (Z + t_z)`` and the same for y,
linear in t, solved by weighted least squares. Joints outside the crop get tiny weights, so
truncated people still get a sensible depth.
"""

from __future__ import annotations

import tensorflow as tf

from annotator.estimator import camera


def solve_translation(coords2d, coords3d, intrinsics, weights, ridge=1e-6) -> tf.Tensor:
    """Least-squares t [K,3] such that coords3d + t projects to coords2d.

    coords2d: [K,J,2] px; coords3d: [K,J,3] (any metric unit, the result has the same);
    intrinsics: [K,3,3]; weights: [K,J] >= 0. ``ridge`` (relative to each diagonal entry)
    only keeps the solve defined when all weights vanish; unlike MeTRAbs' l2=0.01 it does not
    pull the depth towards the camera.
    """
    coords3d = tf.convert_to_tensor(coords3d, tf.float32)
    weights = tf.cast(weights, tf.float32)
    n = camera.to_normalized(tf.convert_to_tensor(coords2d, tf.float32), intrinsics)
    xn, yn = n[..., 0], n[..., 1]
    x, y, z = tf.unstack(coords3d, axis=-1)
    zeros, ones = tf.zeros_like(xn), tf.ones_like(xn)
    # rows: [1, 0, -xn] t = xn Z - X ; [0, 1, -yn] t = yn Z - Y
    a = tf.concat([tf.stack([ones, zeros, -xn], -1), tf.stack([zeros, ones, -yn], -1)], axis=-2)
    b = tf.concat([xn * z - x, yn * z - y], axis=-1)
    w = tf.concat([weights, weights], axis=-1)
    w = w / tf.maximum(tf.sqrt(tf.reduce_mean(tf.square(w), axis=-1, keepdims=True)), 1e-12)
    aw = a * w[..., tf.newaxis]
    ata = tf.linalg.matmul(aw, a, transpose_a=True)
    atb = tf.linalg.matvec(aw, b, transpose_a=True)
    ata += tf.linalg.diag(ridge * tf.linalg.diag_part(ata) + 1e-9)
    return tf.linalg.solve(ata, atb[..., tf.newaxis])[..., 0]


def in_crop_mask(coords2d, resolution, margin_fraction=24.0 / 256.0) -> tf.Tensor:
    """True for joints whose 2D lies safely inside the crop (MeTRAbs: [24, r-24] at r=256)."""
    r = tf.cast(resolution, tf.float32)
    m = r * margin_fraction
    inside = tf.logical_and(coords2d >= m, coords2d <= r - 1 - m)
    return tf.reduce_all(inside, axis=-1)


def reconstruct_absolute(coords2d, coords3d_rel, intrinsics, weights, resolution=None, method: str = "blend",
                         inside=None) -> tf.Tensor:
    """Absolute 3D [K,J,3] in the camera of ``intrinsics``, truncation-robust.

    ``blend`` (MeTRAbs): joints inside the crop average the translated 3D with the 2D
    back-projected to the same depth (the 2D is the more precise cue there); joints outside keep
    the translated 3D. ``translate``: the translated 3D alone (the pose's shape is the 3D head's).
    ``translate_all``: as ``translate``, every joint weighted by its confidence, inside or not.
    Which joints are inside: ``inside`` [K,J] when given, else ``in_crop_mask(coords2d, resolution)``.
    """
    coords2d = tf.convert_to_tensor(coords2d, tf.float32)
    coords3d_rel = tf.convert_to_tensor(coords3d_rel, tf.float32)
    if inside is None:
        inside = in_crop_mask(coords2d, resolution)
    w = tf.cast(weights, tf.float32)
    if method != "translate_all":
        w = w * (tf.cast(inside, tf.float32) + 1e-4)
    t = solve_translation(coords2d, coords3d_rel, intrinsics, w)
    abs3d = coords3d_rel + t[:, tf.newaxis]
    if method != "blend":
        return abs3d
    n = camera.to_normalized(coords2d, intrinsics)
    backproj = tf.concat([n, tf.ones_like(n[..., :1])], -1) * abs3d[..., 2:3]
    blended = 0.5 * abs3d + 0.5 * backproj
    return tf.where(inside[..., tf.newaxis], blended, abs3d)
