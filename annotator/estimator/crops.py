"""Perspective-correct person crops: a virtual camera that looks straight at each box.

Why not a plain axis-aligned crop: a person near the image border is seen obliquely, and a
crop-and-resize keeps that distortion, which the crop model never saw in training. MeTRAbs
instead rotates a virtual camera to point at the box centre (keeping the world's up direction
upright), scales it so the box fills the crop, and resamples the image through the homography
between the two cameras (``multiperson_model._get_new_rotation_and_scale``).

All functions are batched over a leading box axis K.
"""

from __future__ import annotations

import tensorflow as tf

from annotator.estimator import camera


def _normalize(v, axis=-1):
    return v / tf.maximum(tf.norm(v, axis=axis, keepdims=True), 1e-12)


def rotation_z(angle) -> tf.Tensor:
    """Rotation about the optical axis by ``angle`` radians (image-plane roll), [..., 3, 3]."""
    c, s = tf.cos(angle), tf.sin(angle)
    z, o = tf.zeros_like(angle), tf.ones_like(angle)
    return tf.stack([tf.stack([c, -s, z], -1), tf.stack([s, c, z], -1), tf.stack([z, z, o], -1)], -2)


def look_at_rotation(direction, up) -> tf.Tensor:
    """Rotation whose rows are the virtual camera's axes: z along ``direction``, y down w.r.t. ``up``.

    ``up`` is the world's up vector expressed in the camera frame (default (0, -1, 0)), so a
    rolled camera still yields upright crops.
    """
    z = _normalize(direction)
    x = _normalize(tf.linalg.cross(z, tf.broadcast_to(up, tf.shape(z))))
    y = tf.linalg.cross(z, x)
    return tf.stack([x, y, z], axis=-2)


def virtual_camera(boxes, intrinsics, up, resolution, box_scale=1.0, roll=0.0,
                   aug_scale=1.0, flip=False):
    """Rotation R [K,3,3] (camera -> crop camera) and intrinsics K' [K,3,3] for square crops.

    boxes: [K,4] x, y, w, h in pixels. intrinsics: [K,3,3] of the source image.
    The crop shows ``box_scale`` times the longer (perspective-corrected) box side, so crop models
    that expect margin around the person (BlazePose: 1.25) get it. ``roll`` rotates the crop
    (augmentation or alignment), ``aug_scale`` zooms, ``flip`` mirrors horizontally (the crop
    model's output must then be un-mirrored, see ``augment``).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    k = tf.convert_to_tensor(intrinsics, tf.float32)
    x, y, w, h = tf.unstack(boxes, axis=-1)
    cx, cy = x + w / 2, y + h / 2
    # centre, top, bottom, left, right midpoints
    pts = tf.stack([
        tf.stack([cx, cy], -1), tf.stack([cx, y], -1), tf.stack([cx, y + h], -1),
        tf.stack([x, cy], -1), tf.stack([x + w, cy], -1)], axis=-2)
    rays = camera.to_normalized(pts, k)
    rays = tf.concat([rays, tf.ones_like(rays[..., :1])], -1)
    r_noaug = look_at_rotation(rays[:, 0], up)
    # midpoints as seen by the rotated camera with the source focal length
    rotated = tf.linalg.matmul(rays, r_noaug, transpose_b=True)
    f = tf.stack([k[:, 0, 0], k[:, 1, 1]], -1)[:, tf.newaxis]
    uv = rotated[..., :2] / rotated[..., 2:3] * f
    side = tf.maximum(tf.norm(uv[:, 1] - uv[:, 2], axis=-1), tf.norm(uv[:, 3] - uv[:, 4], axis=-1))
    res = tf.cast(resolution, tf.float32)
    scale = res / (tf.maximum(side, 1e-3) * box_scale) * aug_scale
    new_k = tf.stack([
        tf.stack([k[:, 0, 0] * scale, tf.zeros_like(scale), tf.fill(tf.shape(scale), (res - 1) / 2)], -1),
        tf.stack([tf.zeros_like(scale), k[:, 1, 1] * scale, tf.fill(tf.shape(scale), (res - 1) / 2)], -1),
        tf.constant([0.0, 0.0, 1.0])[tf.newaxis] * tf.ones_like(scale)[:, tf.newaxis],
    ], -2)
    roll = tf.broadcast_to(tf.cast(roll, tf.float32), tf.shape(scale))
    rot = tf.linalg.matmul(rotation_z(-roll), r_noaug)
    flip = tf.broadcast_to(tf.convert_to_tensor(flip), tf.shape(scale))
    mirror = tf.where(flip, -1.0, 1.0)
    mirror = tf.linalg.diag(tf.stack([mirror, tf.ones_like(mirror), tf.ones_like(mirror)], -1))
    rot = tf.linalg.matmul(mirror, rot)
    return rot, new_k


def crop_to_image_homography(intrinsics, rotation, crop_intrinsics) -> tf.Tensor:
    """H [K,3,3] mapping crop pixels to source-image pixels: K R^-1 K'^-1 (R orthogonal)."""
    return tf.linalg.matmul(
        tf.linalg.matmul(intrinsics, rotation, transpose_b=True), tf.linalg.inv(crop_intrinsics))


def apply_homography(h, points) -> tf.Tensor:
    """Map [K,J,2] points with homographies [K,3,3]."""
    ph = tf.concat([points, tf.ones_like(points[..., :1])], -1)
    out = tf.linalg.matmul(ph, h, transpose_b=True)
    return out[..., :2] / out[..., 2:3]


def warp(images, homographies, resolution, image_index) -> tf.Tensor:
    """Resample crops [K,r,r,C] from ``images`` [N,H,W,C] float through crop->image homographies.

    ``image_index`` [K] says which image each crop comes from. Bilinear, zero outside the image.
    Crops are rendered one at a time in a graph loop (as MeTRAbs does) so memory holds K crops,
    never K copies of a full image.
    """
    h = homographies / homographies[:, 2:3, 2:3]
    transforms = tf.reshape(h, [-1, 9])[:, :8]
    size = tf.stack([resolution, resolution])

    def one(args):
        idx, t = args
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images[idx][tf.newaxis], transforms=t[tf.newaxis], output_shape=size,
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")[0]

    return tf.map_fn(one, (tf.cast(image_index, tf.int32), transforms),
                     fn_output_signature=tf.TensorSpec([None, None, images.shape[-1]], images.dtype))
