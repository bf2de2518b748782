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


# ------------------------------------------------------------------------------ lens distortion
NUM_DISTORTION = 12


def pad_distortion(coeffs) -> tf.Tensor:
    """[..., D] OpenCV coefficients (D <= 12, any length) -> [..., 12], zero-padded.

    Order: k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 (OpenCV's ``distCoeffs``). Zeros mean
    "no distortion", so a short or empty vector is the pinhole model.
    """
    coeffs = tf.convert_to_tensor(coeffs, tf.float32)
    n = tf.shape(coeffs)[-1]
    pad = tf.maximum(NUM_DISTORTION - n, 0)
    rank = tf.rank(coeffs)
    paddings = tf.concat([tf.zeros([rank - 1, 2], tf.int32), [[0, pad]]], 0)
    out = tf.pad(coeffs, paddings)[..., :NUM_DISTORTION]
    return tf.ensure_shape(out, coeffs.shape[:-1].concatenate([NUM_DISTORTION]))


def _unpack(coeffs) -> tuple[tf.Tensor, ...]:
    """The 12 coefficients as separate [..., 1] tensors that broadcast over the point axis.

    Unpacked once per call, not once per use: the graph (and so the SavedModel's load time)
    grows with every slice, and ``undistort`` used to repeat them in each Newton step.
    """
    c = pad_distortion(coeffs)[..., tf.newaxis, :]
    return tuple(tf.unstack(c, NUM_DISTORTION, axis=-1))


def _radial(x, y, c):
    """r^2 and the numerator/denominator polynomials of the rational radial model."""
    k1, k2, _, _, k3, k4, k5, k6 = c[:8]
    r2 = x * x + y * y
    a = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    b = 1.0 + r2 * (k4 + r2 * (k5 + r2 * k6))
    return r2, a, b


def _distort_xy(x, y, c):
    _, _, p1, p2, _, _, _, _, s1, s2, s3, s4 = c
    r2, a, b = _radial(x, y, c)
    rad = a / b
    xd = x * rad + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) + r2 * (s1 + s2 * r2)
    yd = y * rad + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y + r2 * (s3 + s4 * r2)
    return xd, yd


def distort(normalized, coeffs) -> tf.Tensor:
    """Apply OpenCV's lens model to normalised coordinates [..., J, 2] (coeffs [..., D]).

    x' = x (1 + k1 r^2 + k2 r^4 + k3 r^6) / (1 + k4 r^2 + k5 r^4 + k6 r^6)
         + 2 p1 x y + p2 (r^2 + 2 x^2) + s1 r^2 + s2 r^4, and symmetrically for y'.
    """
    n = tf.convert_to_tensor(normalized, tf.float32)
    return tf.stack(_distort_xy(n[..., 0], n[..., 1], _unpack(coeffs)), -1)


def _radial_slope(r2, a, b, c):
    """d(rad)/d(r^2) of rad = a / b."""
    k1, k2, _, _, k3, k4, k5, k6 = c[:8]
    da = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
    db = k4 + r2 * (2.0 * k5 + 3.0 * k6 * r2)
    return (da * b - a * db) / (b * b)


def distortion_is_monotonic(normalized, coeffs) -> tf.Tensor:
    """True [..., J] where the radial model still grows with the radius.

    Polynomial lens models fold back far outside the calibrated field of view; a point beyond the
    fold would be mapped onto unrelated pixels, so warping treats it as outside the image.
    """
    n = tf.convert_to_tensor(normalized, tf.float32)
    c = _unpack(coeffs)
    r2, a, b = _radial(n[..., 0], n[..., 1], c)
    # d(r * rad)/dr = rad + 2 r^2 d(rad)/d(r^2)
    return (a / b + 2.0 * r2 * _radial_slope(r2, a, b, c)) > 0.0


def _distort_jacobian(x, y, c):
    _, _, p1, p2, _, _, _, _, s1, s2, s3, s4 = c
    r2, a, b = _radial(x, y, c)
    rad = a / b
    rad_r2 = _radial_slope(r2, a, b, c)
    sx = s1 + 2.0 * s2 * r2
    sy = s3 + 2.0 * s4 * r2
    j11 = rad + 2.0 * x * x * rad_r2 + 2.0 * p1 * y + 6.0 * p2 * x + 2.0 * x * sx
    j12 = 2.0 * x * y * rad_r2 + 2.0 * p1 * x + 2.0 * p2 * y + 2.0 * y * sx
    j21 = 2.0 * x * y * rad_r2 + 2.0 * p1 * x + 2.0 * p2 * y + 2.0 * x * sy
    j22 = rad + 2.0 * y * y * rad_r2 + 6.0 * p1 * y + 2.0 * p2 * x + 2.0 * y * sy
    return j11, j12, j21, j22


def undistort(distorted, coeffs, iterations: int = 8) -> tf.Tensor:
    """Invert ``distort`` by Newton's method on [..., J, 2] normalised coordinates.

    MeTRAbs uses 5 fixed-point iterations; Newton with the analytic Jacobian converges to float
    precision for all 12 coefficients in a few steps, also where fixed-point iteration is slow.
    A ``tf.while_loop``, not a Python loop: in a graph the step then exists once, not
    ``iterations`` times.
    """
    target = tf.convert_to_tensor(distorted, tf.float32)
    c = _unpack(coeffs)
    zero = tf.zeros_like(c[0])  # broadcast the points and the coefficients' batch axes once
    tx, ty = target[..., 0] + zero, target[..., 1] + zero

    def step(i, x, y):
        xd, yd = _distort_xy(x, y, c)
        rx, ry = xd - tx, yd - ty
        j11, j12, j21, j22 = _distort_jacobian(x, y, c)
        det = j11 * j22 - j12 * j21
        det = tf.where(tf.abs(det) < 1e-9, tf.ones_like(det), det)
        return i + 1, x - (j22 * rx - j12 * ry) / det, y - (-j21 * rx + j11 * ry) / det

    _, x, y = tf.while_loop(lambda i, x, y: i < iterations, step, (tf.constant(0), tx, ty))
    return tf.stack([x, y], -1)


def project_distorted(points, intrinsics, coeffs) -> tf.Tensor:
    """Camera-frame points [..., J, 3] -> pixels through the lens model: K distort(P / z)."""
    points = tf.convert_to_tensor(points, tf.float32)
    z = tf.maximum(points[..., 2:3], 1e-6)
    return apply_intrinsics(distort(points[..., :2] / z, coeffs), intrinsics)


def pixels_to_rays(pixels, intrinsics, coeffs) -> tf.Tensor:
    """Distorted pixels [..., J, 2] -> undistorted normalised coordinates [..., J, 2]."""
    return undistort(to_normalized(pixels, intrinsics), coeffs)
