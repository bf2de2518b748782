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
                   aug_scale=1.0, flip=False, distortion=None, look_at=True):
    """Rotation R [K,3,3] (camera -> crop camera) and intrinsics K' [K,3,3] for square crops.

    boxes: [K,4] x, y, w, h in pixels. intrinsics: [K,3,3] of the source image.
    The crop shows ``box_scale`` times the longer (perspective-corrected) box side, so crop models
    that expect margin around the person (BlazePose: 1.25) get it. ``roll`` rotates the crop
    (augmentation or alignment), ``aug_scale`` zooms, ``flip`` mirrors horizontally (the crop
    model's output must then be un-mirrored, see ``augment``). ``distortion`` [K,D] (optional):
    the box is in distorted pixels, so its points are undistorted before the geometry.
    ``look_at`` False keeps the source camera's viewing direction (only rolled so ``up`` is up):
    a plain image-plane crop, as MediaPipe makes them; the crop's principal point then moves off
    its centre so that the box centre still lands in the middle.
    """
    boxes = tf.cast(boxes, tf.float32)
    k = tf.cast(intrinsics, tf.float32)
    up = tf.cast(up, tf.float32)
    x, y, w, h = tf.unstack(boxes, axis=-1)
    cx, cy = x + w / 2, y + h / 2
    # centre, top, bottom, left, right midpoints
    pts = tf.stack([
        tf.stack([cx, cy], -1), tf.stack([cx, y], -1), tf.stack([cx, y + h], -1),
        tf.stack([x, cy], -1), tf.stack([x + w, cy], -1)], axis=-2)
    rays = camera.to_normalized(pts, k)
    if distortion is not None:
        rays = camera.undistort(rays, distortion)
    rays = tf.concat([rays, tf.ones_like(rays[..., :1])], -1)
    direction = rays[:, 0] if look_at else tf.broadcast_to(tf.constant([0.0, 0.0, 1.0]), tf.shape(rays[:, 0]))
    r_noaug = look_at_rotation(direction, up)
    # midpoints as seen by the rotated camera with the source focal length
    rotated = tf.linalg.matmul(rays, r_noaug, transpose_b=True)
    f = tf.stack([k[:, 0, 0], k[:, 1, 1]], -1)[:, tf.newaxis]
    uv = rotated[..., :2] / rotated[..., 2:3] * f
    side = tf.maximum(tf.norm(uv[:, 1] - uv[:, 2], axis=-1), tf.norm(uv[:, 3] - uv[:, 4], axis=-1))
    res = tf.cast(resolution, tf.float32)
    scale = res / (tf.maximum(side, 1e-3) * box_scale) * aug_scale
    roll = tf.broadcast_to(tf.cast(roll, tf.float32), tf.shape(scale))
    rot = tf.linalg.matmul(rotation_z(-roll), r_noaug)
    flip = tf.broadcast_to(tf.convert_to_tensor(flip), tf.shape(scale))
    mirror = tf.where(flip, -1.0, 1.0)
    mirror = tf.linalg.diag(tf.stack([mirror, tf.ones_like(mirror), tf.ones_like(mirror)], -1))
    rot = tf.linalg.matmul(mirror, rot)
    # principal point: where the box centre's ray must land, the crop's centre (0 offset when
    # the camera looks along that ray)
    centre = tf.linalg.matvec(rot, rays[:, 0])
    fx, fy = k[:, 0, 0] * scale, k[:, 1, 1] * scale
    px = (res - 1) / 2 - fx * centre[:, 0] / centre[:, 2]
    py = (res - 1) / 2 - fy * centre[:, 1] / centre[:, 2]
    zero, one = tf.zeros_like(scale), tf.ones_like(scale)
    new_k = tf.stack([tf.stack([fx, zero, px], -1), tf.stack([zero, fy, py], -1),
                      tf.stack([zero, zero, one], -1)], -2)
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


DISPLAY_GAMMA = 2.2


def to_linear(images, encoding_gamma: float = DISPLAY_GAMMA) -> tf.Tensor:
    """uint8 sRGB-ish images -> linear light in [0, 1]: (x / 255) ^ 2.2 (MeTRAbs' approximation).

    Averaging (pyramid, supersampling, bilinear taps) must happen in linear light: averaging
    encoded values darkens fine bright/dark detail such as a checkerboard. Computed as
    exp(2.2 log x), which vectorises (2.4x faster than ``pow`` and 2x faster than a 256-entry
    table gather on a full-HD image on CPU); 0 stays 0. ``encoding_gamma`` 1 keeps the encoded
    values (for measuring what linear light adds).
    """
    x = tf.cast(images, tf.float32) / 255.0
    if encoding_gamma == 1.0:
        return x
    return tf.exp(encoding_gamma * tf.math.log(tf.maximum(x, 1e-30)))


def to_display(linear, gamma=1.0, encoding_gamma: float = DISPLAY_GAMMA) -> tf.Tensor:
    """Linear light -> encoded values in [0, 1]: x ^ (gamma / 2.2). ``gamma`` = 1 inverts
    ``to_linear``; other values are the brightness augmentation of test-time augmentation."""
    gamma = tf.convert_to_tensor(gamma, tf.float32)
    return tf.pow(tf.maximum(linear, 0.0), gamma / encoding_gamma)


def crop_to_image_points(points, intrinsics, rotation, crop_intrinsics, distortion=None):
    """Crop pixels [K,P,2] -> source-image pixels through the lens model (``distortion`` [K,D]).

    Returns (pixels [K,P,2], valid [K,P]): a crop pixel is invalid when its ray points behind the
    source camera or beyond the fold of the polynomial lens model. Without distortion this is the
    homography ``crop_to_image_homography``.
    """
    points = tf.convert_to_tensor(points, tf.float32)
    ph = tf.concat([points, tf.ones_like(points[..., :1])], -1)
    # ray in the crop camera, then in the source camera: d = R^T K'^-1 u (row vectors: u K'^-T R)
    rays = tf.linalg.matmul(tf.linalg.matmul(ph, tf.linalg.inv(crop_intrinsics), transpose_b=True), rotation)
    z = rays[..., 2]
    valid = z > 1e-6
    normalized = rays[..., :2] / tf.where(valid, z, tf.ones_like(z))[..., tf.newaxis]
    if distortion is not None:
        valid = tf.logical_and(valid, camera.distortion_is_monotonic(normalized, distortion))
        normalized = camera.distort(normalized, distortion)
    return camera.apply_intrinsics(normalized, intrinsics), valid


def build_pyramid(images, levels: int = 3) -> list[tf.Tensor]:
    """[N,H,W,C] -> list of ``levels`` images, each a 2x2 average of the previous (odd edges kept).

    Done in linear light by the caller, so averaging is physically right (no darkening of edges).
    Pixel centres follow ``x_l = (x + 0.5) / 2^l - 0.5``.
    """
    out = [images]
    for _ in range(levels - 1):
        # 2x2 mean, stride 2; at an odd last row/column "SAME" pads past the edge and averages only
        # the existing pixels (as mirroring the edge would). The pooling op, not a 6-D reshape and
        # mean: measured 58 -> 9 ms per 1088x1920 image for levels 1-2 on 2 CPU cores, same values
        # (0.0 difference on even sizes, 1e-7 on odd ones: summation order)
        out.append(tf.nn.avg_pool2d(out[-1], ksize=2, strides=2, padding="SAME"))
    return out


def pyramid_level(scale, antialias_factor, levels: int = 3) -> tf.Tensor:
    """Pyramid level for a crop with ``scale`` crop pixels per source pixel, rendered at ``af`` times
    its resolution: floor(-log2(scale * af)), clipped to [0, levels-1] (MeTRAbs ``warping.py``).
    Shrinking by more than 2x samples a pre-averaged level, so bilinear taps do not skip detail."""
    s = tf.cast(scale, tf.float32) * tf.cast(antialias_factor, tf.float32)
    level = tf.floor(-tf.math.log(tf.maximum(s, 1e-6)) / tf.math.log(2.0))
    return tf.cast(tf.clip_by_value(level, 0.0, float(levels - 1)), tf.int32)


class PixelTable:
    """All pyramid levels of all images flattened into one [P, C] table, plus where each level
    starts and its size: what ``warp`` gathers from. Build it once per batch (``pixel_table``)."""

    def __init__(self, table, offsets, heights, widths, levels: int):
        self.table, self.offsets, self.heights, self.widths, self.levels = table, offsets, heights, widths, levels


def pixel_table(pyramid) -> PixelTable:
    channels = pyramid[0].shape[-1]
    flats, offsets, heights, widths = [], [], [], []
    offset = tf.constant(0, tf.int64)
    for img in pyramid:
        shape = tf.shape(img, out_type=tf.int64)
        flats.append(tf.reshape(img, [-1, channels]))
        offsets.append(offset)
        heights.append(shape[1])
        widths.append(shape[2])
        offset += shape[0] * shape[1] * shape[2]
    return PixelTable(tf.concat(flats, 0), tf.stack(offsets), tf.stack(heights), tf.stack(widths), len(pyramid))


def _gather_bilinear(pixels: PixelTable, image_index, level, coords, valid):
    """Bilinear samples [K,P,C] at level-0 pixel coords [K,P,2] from pyramid level ``level`` [K] of
    image ``image_index`` [K]; zero outside the image and where ``valid`` is False. One gather for
    all crops from the flattened pixel table."""
    table = pixels.table
    level = tf.cast(level, tf.int32)
    height = tf.gather(pixels.heights, level)[:, tf.newaxis]
    width = tf.gather(pixels.widths, level)[:, tf.newaxis]
    base = tf.gather(pixels.offsets, level) + tf.cast(image_index, tf.int64) * height[:, 0] * width[:, 0]
    factor = tf.pow(2.0, tf.cast(level, tf.float32))[:, tf.newaxis]
    x = (coords[..., 0] + 0.5) / factor - 0.5
    y = (coords[..., 1] + 0.5) / factor - 0.5
    x0f, y0f = tf.floor(x), tf.floor(y)
    fx, fy = x - x0f, y - y0f
    x0 = tf.cast(x0f, tf.int64)
    y0 = tf.cast(y0f, tf.int64)
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height) & valid
            idx = base[:, tf.newaxis] + tf.clip_by_value(yi, 0, height - 1) * width + tf.clip_by_value(xi, 0, width - 1)
            w = tf.where(inside, wx * wy, 0.0)
            out += tf.gather(table, idx) * w[..., tf.newaxis]
    return out


def warp(images, intrinsics, rotation, crop_intrinsics, resolution, image_index, distortion=None,
         antialias_factor=1, pyramid=None, pixels: PixelTable | None = None):
    """Render crops [K,r,r,C] from linear-light ``images`` [N,H,W,C] through virtual cameras.

    Per crop k: source intrinsics [K,3,3], rotation (source -> crop camera) [K,3,3], crop
    intrinsics [K,3,3], ``image_index`` [K], optional ``distortion`` [K,D]. Every crop pixel is
    traced back through the lens model (so distortion is handled per pixel) and sampled
    bilinearly from the pyramid level that matches the crop's scale; with ``antialias_factor``
    af > 1 the crop is rendered at r*af and box-filtered down. All crops of the batch are sampled
    in one gather, from one pixel table: no per-crop loop and no per-crop image copy. Pass
    ``pixels`` (``pixel_table``) when warping the same images several times.
    """
    if pixels is None:
        pixels = pixel_table(build_pyramid(images) if pyramid is None else pyramid)
    af = tf.cast(antialias_factor, tf.int32)
    af = tf.maximum(af, 1)
    size = resolution * af
    n_crops = tf.shape(rotation)[0]
    # supersampled grid, in crop pixels: centres of the r*af sub-pixels
    sub = (tf.range(size, dtype=tf.float32) + 0.5) / tf.cast(af, tf.float32) - 0.5
    gx, gy = tf.meshgrid(sub, sub)
    grid = tf.reshape(tf.stack([gx, gy], -1), [1, -1, 2])
    grid = tf.broadcast_to(grid, [n_crops, size * size, 2])
    coords, valid = crop_to_image_points(grid, intrinsics, rotation, crop_intrinsics, distortion)
    scale = crop_intrinsics[:, 0, 0] / intrinsics[:, 0, 0]
    level = pyramid_level(scale, af, pixels.levels)
    samples = _gather_bilinear(pixels, image_index, level, coords, valid)
    channels = images.shape[-1]
    # box filter: each output pixel is the mean of its af x af sub-pixels (exact for any integer af)
    crops = tf.reshape(samples, [n_crops, resolution, af, resolution, af, channels])
    return tf.reduce_mean(crops, axis=[2, 4])
