"""Estimator geometry with synthetic cameras: tests that know the answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from annotator.estimator import augment, camera, crops, reconstruct


def _k(f=1000.0, cx=640.0, cy=360.0):
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float32)


def test_default_intrinsics_fov():
    k = camera.default_intrinsics(480, 640, 55.0).numpy()
    # the longer side spans exactly the field of view
    half = math.degrees(math.atan((640 / 2) / k[0, 0]))
    assert half * 2 == pytest.approx(55.0, abs=1e-3)
    assert k[0, 2] == pytest.approx(319.5) and k[1, 2] == pytest.approx(239.5)


def test_unknown_intrinsics_are_replaced_known_kept():
    unknown = -np.ones((1, 3, 3), np.float32)
    known = _k()[None]
    both = camera.resolve_intrinsics(np.concatenate([unknown, known]), 720, 1280, 55.0).numpy()
    np.testing.assert_allclose(both[0], camera.default_intrinsics(720, 1280, 55.0).numpy())
    np.testing.assert_allclose(both[1], known[0])


def test_project_normalize_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.uniform([-500, -500, 1000], [500, 500, 5000], (1, 17, 3)).astype(np.float32)
    k = _k()[None]
    px = camera.project(pts, k)
    n = camera.to_normalized(px, k).numpy()
    np.testing.assert_allclose(n, pts[..., :2] / pts[..., 2:], atol=1e-6)


def test_world_frame_known_extrinsics():
    # camera 2 m behind the world origin along world z, rotated 90 degrees about y
    rot = np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], np.float32)
    t = np.array([0, 0, 2000], np.float32)
    ext = np.eye(4, dtype=np.float32)
    ext[:3, :3], ext[:3, 3] = rot, t
    world = np.array([[[100.0, -200.0, 300.0], [0.0, 0.0, 0.0]]], np.float32)
    cam = camera.world_to_camera(world, ext[None]).numpy()
    np.testing.assert_allclose(cam[0, 1], t, atol=1e-4)
    np.testing.assert_allclose(cam[0, 0], rot @ world[0, 0] + t, atol=1e-3)
    back = camera.camera_to_world(cam, ext[None]).numpy()
    np.testing.assert_allclose(back, world, atol=1e-3)


def test_virtual_camera_looks_at_box_centre_and_fits_box():
    k = _k()[None]
    box = np.array([[900.0, 100.0, 200.0, 400.0]], np.float32)  # off-centre, tall
    up = np.array([[0.0, -1.0, 0.0]], np.float32)
    rot, crop_k = crops.virtual_camera(box, k, up, 256)
    h = crops.crop_to_image_homography(k, rot, crop_k)
    centre = crops.apply_homography(h, np.array([[[127.5, 127.5]]], np.float32)).numpy()
    np.testing.assert_allclose(centre[0, 0], [1000.0, 300.0], atol=1e-2)
    # the rotation is orthonormal and keeps the up vector in the crop's y-z plane (no roll)
    r = rot.numpy()[0]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
    assert abs((r @ up[0])[0]) < 1e-6
    # the box's longer side (height) spans the crop
    top = crops.apply_homography(tf.linalg.inv(h), np.array([[[1000.0, 100.0]]], np.float32)).numpy()
    bottom = crops.apply_homography(tf.linalg.inv(h), np.array([[[1000.0, 500.0]]], np.float32)).numpy()
    assert np.linalg.norm(bottom - top) == pytest.approx(256.0, rel=0.02)


def test_crop_homography_round_trip_subpixel():
    rng = np.random.default_rng(1)
    k = np.repeat(_k()[None], 8, 0)
    boxes = np.column_stack([rng.uniform(0, 1000, 8), rng.uniform(0, 500, 8),
                             rng.uniform(50, 300, 8), rng.uniform(50, 300, 8)]).astype(np.float32)
    up = np.tile([[0.0, -1.0, 0.0]], (8, 1)).astype(np.float32)
    rot, crop_k = crops.virtual_camera(boxes, k, up, 256, box_scale=1.25, roll=rng.uniform(-1, 1, 8),
                                       aug_scale=rng.uniform(0.8, 1.1, 8), flip=rng.uniform(size=8) > 0.5)
    h = crops.crop_to_image_homography(k, rot, crop_k)
    pts = rng.uniform(0, 255, (8, 50, 2)).astype(np.float32)
    img = crops.apply_homography(h, pts)
    back = crops.apply_homography(tf.linalg.inv(h), img).numpy()
    assert np.abs(back - pts).max() < 0.01


def test_warp_samples_the_right_pixels():
    """A crop of a synthetic image equals the image resampled at the homography's points."""
    h_img, w_img = 120, 160
    yy, xx = np.mgrid[0:h_img, 0:w_img].astype(np.float32)
    image = np.stack([xx, yy, xx + yy], -1)[None] / 300.0  # smooth, so bilinear is exact
    k = _k(150.0, 79.5, 59.5)[None]
    rot, crop_k = crops.virtual_camera(np.array([[40.0, 30.0, 60.0, 60.0]], np.float32), k,
                                       np.array([[0.0, -1.0, 0.0]], np.float32), 32)
    h = crops.crop_to_image_homography(k, rot, crop_k)
    crop = crops.warp(tf.constant(image), k, rot, crop_k, 32, tf.constant([0])).numpy()[0]
    grid = np.stack(np.meshgrid(np.arange(32), np.arange(32)), -1).reshape(1, -1, 2).astype(np.float32)
    src = crops.apply_homography(h, grid).numpy().reshape(32, 32, 2)
    expected = np.stack([src[..., 0], src[..., 1], src[..., 0] + src[..., 1]], -1) / 300.0
    np.testing.assert_allclose(crop, expected, atol=1e-4)


def _synthetic_pose(n=17, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform([-300, -900, -200], [300, 900, 200], (n, 3)).astype(np.float32)


@pytest.mark.parametrize("truncate", [False, True])
def test_reconstruction_recovers_translation(truncate):
    """Known pose + translation seen by a synthetic crop camera: t comes back to < 1 mm, also when
    the person is cut off by the crop border (half the joints outside, low-weighted)."""
    rel = _synthetic_pose()
    rel = rel - rel.mean(0)
    t_true = np.array([100.0, 1400.0 if truncate else -120.0, 4200.0], np.float32)
    k = np.array([[300.0, 0, 127.5], [0, 300.0, 127.5], [0, 0, 1]], np.float32)
    abs3d = rel + t_true
    uv = camera.project(abs3d[None], k[None]).numpy()
    inside = reconstruct.in_crop_mask(uv, 256).numpy()[0]
    if truncate:
        assert 0.3 * len(rel) <= inside.sum() <= 0.7 * len(rel)
    else:
        assert inside.all()
    weights = np.ones((1, len(rel)), np.float32)
    t = reconstruct.solve_translation(uv, rel[None], k[None], weights * inside).numpy()[0]
    np.testing.assert_allclose(t, t_true, atol=1.0)
    out = reconstruct.reconstruct_absolute(uv, rel[None], k[None], weights, 256).numpy()[0]
    np.testing.assert_allclose(out, abs3d, atol=1.0)


def test_augmentation_schedule_matches_reference():
    g, r, s, f = (x.numpy() for x in augment.schedule(5))
    np.testing.assert_allclose(g, [0.6, 0.7, 0.8, 0.9, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.degrees(r), [-25, -12.5, 0, 12.5, 25], atol=1e-4)
    np.testing.assert_allclose(s, [0.8, 0.9, 1.0, 1.05, 1.1], atol=1e-6)
    assert f.tolist() == [False, True, False, True, False]
    g, r, s, f = (x.numpy() for x in augment.schedule(1))
    np.testing.assert_allclose([g[0], r[0], s[0]], [0.8, 0.0, 1.05], atol=1e-6)
    assert f.tolist() == [False]


def test_centred_schedule_perturbs_the_single_crop():
    """Centred, the augmentations are the single crop times MeTRAbs' perturbations: its middle
    augmentation (odd A) is the single crop itself, and MeTRAbs' gammas are the case gamma = 0.8."""
    g, r, s, f = (x.numpy() for x in augment.schedule(5, single_crop=(1.0, 1.05), scale_range=(0.9, 1.1),
                                                        centred=True))
    np.testing.assert_allclose(g, [0.75, 0.875, 1.0, 1.125, 1.25], atol=1e-6)
    np.testing.assert_allclose(s, 1.05 * np.array([0.9, 0.95, 1.0, 1.05, 1.1]), atol=1e-6)
    single = [x.numpy() for x in augment.schedule(1, single_crop=(1.0, 1.05), centred=True)]
    np.testing.assert_allclose([g[2], r[2], s[2]], [single[0][0], single[1][0], single[2][0]], atol=1e-6)
    assert not f[2] and not single[3][0]
    g, _, _, _ = (x.numpy() for x in augment.schedule(5, single_crop=(0.8, 1.05), centred=True))
    np.testing.assert_allclose(g, [0.6, 0.7, 0.8, 0.9, 1.0], atol=1e-6)
    # a kind left out stays at the single crop's value, not at 1
    g, r, s, f = (x.numpy() for x in augment.schedule(5, kinds=("flip",), single_crop=(1.0, 1.05), centred=True))
    np.testing.assert_allclose(s, 1.05, atol=1e-6)
    np.testing.assert_allclose(g, 1.0, atol=1e-6)
    assert f.tolist() == [False, True, False, True, False]


def test_unmirror_swaps_left_right_only_for_flipped():
    values = tf.constant(np.arange(2 * 1 * 3, dtype=np.float32).reshape(2, 1, 3))
    out = augment.unmirror_joints(values, tf.constant([False, True]), [0, 2, 1]).numpy()
    np.testing.assert_array_equal(out[0, 0], [0, 1, 2])
    np.testing.assert_array_equal(out[1, 0], [3, 5, 4])


# Realistic magnitudes per coefficient (OpenCV order), within the monotonic part of the model.
DISTORTION = np.array([-0.28, 0.09, 1.5e-3, -1e-3, -0.02, 0.05, 0.01, 0.002, 1e-3, -5e-4, 2e-3, 1e-3], np.float32)


@pytest.mark.parametrize("which", list(range(12)) + ["all"])
def test_distort_undistort_identity(which):
    """distort then undistort is the identity (< 1e-4 normalised) for each of the 12 coefficients."""
    coeffs = DISTORTION.copy() if which == "all" else np.where(np.arange(12) == which, DISTORTION, 0.0)
    rng = np.random.default_rng(3)
    pts = rng.uniform(-0.7, 0.7, (2, 300, 2)).astype(np.float32)
    d = camera.distort(pts, np.stack([coeffs, coeffs]).astype(np.float32))
    assert np.abs(d.numpy() - pts).max() > 1e-4, "the coefficient has a visible effect"
    back = camera.undistort(d, np.stack([coeffs, coeffs]).astype(np.float32)).numpy()
    assert np.abs(back - pts).max() < 1e-4


def test_distortion_padding_and_projection():
    """5 coefficients behave as the same 12 zero-padded; projection goes through the lens model."""
    five = DISTORTION[:5][None]
    twelve = np.concatenate([DISTORTION[:5], np.zeros(7, np.float32)])[None]
    assert camera.pad_distortion(five).shape == (1, 12)
    pts = np.array([[[300.0, -200.0, 2000.0], [0.0, 0.0, 3000.0]]], np.float32)
    k = _k()[None]
    np.testing.assert_allclose(camera.project_distorted(pts, k, five), camera.project_distorted(pts, k, twelve))
    n = pts[0, 0, :2] / pts[0, 0, 2]
    r2 = (n ** 2).sum()
    k1, k2, p1, p2, k3 = DISTORTION[:5]
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = n[0] * radial + 2 * p1 * n[0] * n[1] + p2 * (r2 + 2 * n[0] ** 2)
    yd = n[1] * radial + p1 * (r2 + 2 * n[1] ** 2) + 2 * p2 * n[0] * n[1]
    expected = [1000 * xd + 640, 1000 * yd + 360]
    np.testing.assert_allclose(camera.project_distorted(pts, k, five).numpy()[0, 0], expected, rtol=1e-5)
    # the projected pixels map back to the same rays
    rays = camera.pixels_to_rays(camera.project_distorted(pts, k, five), k, five).numpy()
    np.testing.assert_allclose(rays, pts[..., :2] / pts[..., 2:], atol=1e-5)


def test_virtual_camera_with_distortion_looks_at_the_true_ray():
    """With distortion the box centre (in distorted pixels) is undistorted before aiming the crop."""
    k = _k()[None]
    dist = DISTORTION[None]
    box = np.array([[1000.0, 500.0, 120.0, 200.0]], np.float32)
    up = np.array([[0.0, -1.0, 0.0]], np.float32)
    rot, crop_k = crops.virtual_camera(box, k, up, 256, distortion=dist)
    centre, valid = crops.crop_to_image_points(np.array([[[127.5, 127.5]]], np.float32), k, rot, crop_k, dist)
    assert bool(valid.numpy().all())
    np.testing.assert_allclose(centre.numpy()[0, 0], [1060.0, 600.0], atol=1e-2)
    # the crop's optical axis is the undistorted ray of the box centre
    ray = camera.pixels_to_rays(np.array([[[1060.0, 600.0]]], np.float32), k, dist).numpy()[0, 0]
    axis = rot.numpy()[0][2]
    np.testing.assert_allclose(axis[:2] / axis[2], ray, atol=1e-5)


def test_world_frame_general_extrinsics_round_trip():
    """A random rigid extrinsic maps camera-frame output to world coordinates exactly."""
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.linalg.det(q))
    ext = np.eye(4, dtype=np.float32)
    ext[:3, :3], ext[:3, 3] = q, rng.uniform(-3000, 3000, 3)
    world = rng.uniform(-1000, 1000, (1, 5, 3)).astype(np.float32)
    cam = (world[0] @ q.T + ext[:3, 3])[None].astype(np.float32)
    np.testing.assert_allclose(camera.camera_to_world(cam, ext[None]).numpy(), world, atol=1e-2)
