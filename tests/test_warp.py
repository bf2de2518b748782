"""Crop rendering: per-pixel lens distortion, pyramid + supersampling anti-aliasing, linear light."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from annotator.estimator import camera, crops

UP = np.array([[0.0, -1.0, 0.0]], np.float32)


def _k(f, w, h):
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float32)


def _scene(n):
    """A smooth function of the undistorted normalised ray: what a pinhole camera would see."""
    x, y = n[..., 0], n[..., 1]
    return np.stack([0.5 + 0.4 * np.sin(3 * x), 0.5 + 0.4 * np.cos(2 * y), 0.5 + 0.3 * x * y], -1)


def test_warp_undoes_lens_distortion_per_pixel():
    """Render a distorted photo of a known scene; a crop warped with the lens model sees the scene
    as a pinhole camera would (and one warped ignoring the distortion does not)."""
    h, w = 240, 320
    k = _k(260.0, w, h)
    dist = np.array([-0.3, 0.1, 1e-3, -1e-3, -0.02], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pix = np.stack([xx, yy], -1).reshape(1, -1, 2)
    rays = camera.pixels_to_rays(pix, k[None], dist[None]).numpy().reshape(h, w, 2)
    image = _scene(rays)[None].astype(np.float32)

    box = np.array([[200.0, 20.0, 100.0, 120.0]], np.float32)  # near the corner: strong distortion
    rot, crop_k = crops.virtual_camera(box, k[None], UP, 64, distortion=dist[None])
    crop = crops.warp(tf.constant(image), k[None], rot, crop_k, 64, tf.constant([0]),
                      distortion=dist[None]).numpy()[0]
    grid = np.stack(np.meshgrid(np.arange(64), np.arange(64)), -1).reshape(1, -1, 2).astype(np.float32)
    ph = np.concatenate([grid, np.ones_like(grid[..., :1])], -1)
    r = ph[0] @ np.linalg.inv(crop_k.numpy()[0]).T @ rot.numpy()[0]
    expected = _scene(r[:, :2] / r[:, 2:]).reshape(64, 64, 3)
    err = np.abs(crop - expected).max()
    assert err < 0.01, err
    naive = crops.warp(tf.constant(image), k[None], rot, crop_k, 64, tf.constant([0])).numpy()[0]
    assert np.abs(naive - expected).max() > 5 * err


def test_warp_zero_outside_image_and_batched_equals_single():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(2, 40, 50, 3)).astype(np.float32)
    k = np.repeat(_k(60.0, 50, 40)[None], 3, 0)
    boxes = np.array([[-30.0, -30.0, 20.0, 20.0], [10.0, 5.0, 30.0, 30.0], [20.0, 10.0, 20.0, 25.0]], np.float32)
    idx = np.array([0, 1, 0], np.int32)
    rot, crop_k = crops.virtual_camera(boxes, k, np.repeat(UP, 3, 0), 16)
    together = crops.warp(tf.constant(images), k, rot, crop_k, 16, idx).numpy()
    assert np.abs(together[0][:4, :4]).max() == 0.0, "pixels outside the image are zero"
    for i in range(3):
        alone = crops.warp(tf.constant(images), k[i:i + 1], rot[i:i + 1], crop_k[i:i + 1], 16, idx[i:i + 1]).numpy()
        np.testing.assert_allclose(alone[0], together[i], atol=1e-6)


def test_pyramid_levels_average_and_keep_pixel_centres():
    img = np.arange(2 * 5 * 7 * 1, dtype=np.float32).reshape(2, 5, 7, 1)
    pyr = crops.build_pyramid(tf.constant(img), 3)
    assert [tuple(p.shape[1:3]) for p in pyr] == [(5, 7), (3, 4), (2, 2)]
    np.testing.assert_allclose(pyr[1].numpy()[0, 0, 0, 0], img[0, :2, :2, 0].mean())
    # odd edge: the last row/column averages only the pixels that exist
    np.testing.assert_allclose(pyr[1].numpy()[0, 2, 3, 0], img[0, 4, 6, 0])
    assert crops.pyramid_level(1.0, 1).numpy() == 0
    assert crops.pyramid_level(0.4, 1).numpy() == 1
    assert crops.pyramid_level(0.2, 1).numpy() == 2
    assert crops.pyramid_level(0.05, 1).numpy() == 2  # clipped
    assert crops.pyramid_level(0.4, 2).numpy() == 0  # supersampling needs less pre-blur


def _checkerboard(size=512, period=2):
    yy, xx = np.mgrid[0:size, 0:size]
    return (((xx // period) + (yy // period)) % 2).astype(np.float32)


@pytest.mark.parametrize("antialias_factor", [1, 2, 4])
def test_antialiasing_lowers_aliasing_energy(antialias_factor):
    """A 1-pixel checkerboard seen 5.3x smaller should be flat grey: whatever varies is aliasing."""
    board = _checkerboard()
    image = np.repeat(board[None, :, :, None], 3, -1)
    k = _k(500.0, 512, 512)
    box = np.array([[-0.5, -0.5, 512.0, 512.0]], np.float32)
    rot, crop_k = crops.virtual_camera(box, k[None], UP, 96)
    crop_k = crop_k.numpy()
    crop_k[:, :2, 2] = 47.5
    args = (k[None], rot, crop_k, 96, tf.constant([0]))
    plain = crops.warp(tf.constant(image), *args, pyramid=[tf.constant(image)]).numpy()
    smooth = crops.warp(tf.constant(image), *args, antialias_factor=antialias_factor).numpy()
    centre = slice(16, 80)
    energy_plain = float(np.var(plain[0, centre, centre, 0]))
    energy_aa = float(np.var(smooth[0, centre, centre, 0]))
    assert energy_plain > 0.02, energy_plain
    assert energy_aa < 0.1 * energy_plain, (energy_aa, energy_plain)
    # the mean is the board's mean in linear light
    assert abs(float(smooth[0, centre, centre, 0].mean()) - 0.5) < 0.02


def test_supersampling_alone_reduces_aliasing():
    """Without a pyramid, rendering at 4x and box-filtering also removes most aliasing."""
    board = _checkerboard(256, 1)
    image = np.repeat(board[None, :, :, None], 3, -1)
    k = _k(300.0, 256, 256)
    rot, crop_k = crops.virtual_camera(np.array([[0.0, 0.0, 255.0, 255.0]], np.float32), k[None], UP, 100)
    one = [tf.constant(image)]
    plain = crops.warp(tf.constant(image), k[None], rot, crop_k, 100, [0], pyramid=one).numpy()
    ss = crops.warp(tf.constant(image), k[None], rot, crop_k, 100, [0], antialias_factor=4, pyramid=one).numpy()
    assert np.var(ss[0, 20:80, 20:80, 0]) < 0.2 * np.var(plain[0, 20:80, 20:80, 0])


def test_gamma_round_trip_and_linear_light_averaging():
    values = np.arange(256, dtype=np.uint8)
    lin = crops.to_linear(values)
    back = crops.to_display(lin).numpy() * 255.0
    np.testing.assert_allclose(back, values.astype(np.float32), atol=1e-3)
    # black/white detail averaged in linear light is 0.5 linear = 0.73 encoded, not 0.5
    bw = np.array([0, 255], np.uint8)
    mean_encoded = float(crops.to_display(tf.reduce_mean(crops.to_linear(bw))).numpy())
    assert mean_encoded == pytest.approx(0.5 ** (1 / 2.2), abs=1e-4)
    # brightness augmentation: gamma 0.6 brightens mid-grey
    assert float(crops.to_display(0.2, 0.6)) > float(crops.to_display(0.2, 1.0))
