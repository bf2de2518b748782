"""Body size as an estimate (``annotator.labels.body_size``): known answers on synthetic people."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.labels import body_size, ground_plane

NAMES = ["left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
         "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle"]


def person(size: float, depth: float = 4000.0) -> np.ndarray:
    """A standing person whose limb bones are ``size`` x the population's, ``depth`` mm away."""
    pop = body_size.population_bones_mm()
    p = np.zeros((12, 3))
    for base, x in ((0, -180.0), (3, 180.0)):  # shoulder, elbow, wrist hanging down
        p[base] = [x, -500 * size, 0]
        p[base + 1] = p[base] + [0, pop["upper_arm"] * size, 0]
        p[base + 2] = p[base + 1] + [0, pop["forearm"] * size, 0]
    for base, x in ((6, -100.0), (9, 100.0)):  # hip, knee, ankle
        p[base] = [x, 0, 0]
        p[base + 1] = p[base] + [0, pop["thigh"] * size, 0]
        p[base + 2] = p[base + 1] + [0, pop["leg"] * size, 0]
    return p + [0, 0, depth]


def project(p: np.ndarray) -> np.ndarray:
    return p[..., :2] / p[..., 2:]


def test_network_size_is_the_median_limb_ratio():
    poses = np.stack([person(0.86), person(1.0), person(1.1)])
    np.testing.assert_allclose(body_size.network_log_size(poses, NAMES), np.log([0.86, 1.0, 1.1]), atol=1e-9)
    # MeTRAbs-style short names are understood too
    short = ["lsho", "lelb", "lwri", "rsho", "relb", "rwri", "lhip", "lkne", "lank", "rhip", "rkne", "rank"]
    np.testing.assert_allclose(body_size.network_log_size(poses, short), np.log([0.86, 1.0, 1.1]), atol=1e-9)
    # too few confident bones: no evidence
    conf = np.zeros((3, 12))
    assert np.isfinite(body_size.network_log_size(poses, NAMES, conf)).all()  # falls back to all bones
    assert np.isnan(body_size.network_log_size(poses[:, :3], NAMES[:3])).all()


def test_fuse_is_inverse_variance_weighting():
    mean, sigma = body_size.fuse([np.array([0.0]), np.array([1.0])], [np.array([1.0]), np.array([1.0])])
    assert mean[0] == pytest.approx(0.5) and sigma[0] == pytest.approx(1 / np.sqrt(2))
    mean, sigma = body_size.fuse([np.array([0.0]), np.array([np.nan])], [np.array([2.0]), np.array([1.0])])
    assert mean[0] == 0.0 and sigma[0] == 2.0  # a missing estimate is left out


def test_prior_pulls_a_short_network_size_towards_the_population_by_the_sigmas_weights():
    poses = np.stack([person(0.86), person(1.0)])
    est = body_size.estimate(poses, NAMES)
    w = body_size.STATURE_LOG_SIGMA ** 2 / (body_size.STATURE_LOG_SIGMA ** 2 + body_size.NETWORK_LOG_SIGMA ** 2)
    assert est.log_size[0] == pytest.approx(w * np.log(0.86))
    assert est.scale[0] == pytest.approx(np.exp((w - 1) * np.log(0.86)))  # > 1: the body grows
    assert est.scale[1] == pytest.approx(1.0)
    assert est.log_sigma[0] == pytest.approx(1 / np.hypot(1 / body_size.STATURE_LOG_SIGMA,
                                                          1 / body_size.NETWORK_LOG_SIGMA))
    # without the prior the network's size stands
    off = body_size.estimate(poses, NAMES, population=False)
    np.testing.assert_allclose(off.scale, 1.0)
    np.testing.assert_allclose(off.log_sigma, body_size.NETWORK_LOG_SIGMA)


def test_rescaling_about_the_camera_keeps_the_projection_and_moves_the_root_along_its_ray():
    poses = np.stack([person(0.86) + [300, -200, 0]])
    est = body_size.estimate(poses, NAMES)
    out = ground_plane.rescale(poses, None, est.scale)
    np.testing.assert_allclose(project(out), project(poses), atol=1e-9)
    assert out[0, :, 2].mean() == pytest.approx(poses[0, :, 2].mean() * est.scale[0])
    np.testing.assert_allclose(body_size.network_log_size(out, NAMES), est.log_size, atol=1e-9)
    # the same in a world frame: the camera centre is where the extrinsics put it
    ext = np.eye(4)
    ext[:3, 3] = [100.0, -50.0, 2000.0]
    world = poses - ext[:3, 3]
    out_w = ground_plane.rescale(world, ext, est.scale)
    np.testing.assert_allclose(project(out_w + ext[:3, 3]), project(poses), atol=1e-9)


def test_the_floor_decides_where_it_applies():
    poses = np.stack([person(0.86), person(0.86)])
    est = body_size.estimate(poses, NAMES, floor_scale=np.array([1.2, np.nan]),
                             floor_log_sigma=np.array([0.02, np.nan]))
    assert est.grounded.tolist() == [True, False]
    assert est.scale[0] == pytest.approx(1.2) and est.log_sigma[0] == pytest.approx(0.02)
    assert est.log_size[0] == pytest.approx(np.log(0.86 * 1.2))
    assert est.scale[1] == pytest.approx(body_size.estimate(poses[1:], NAMES).scale[0])  # the prior's answer
    # a person without measurable limbs: the floor's factor, or 1 with both sigmas' doubt
    blind = body_size.estimate(poses[:, :2], NAMES[:2], floor_scale=np.array([1.2, np.nan]),
                               floor_log_sigma=np.array([0.01, np.nan]))
    assert blind.scale.tolist() == pytest.approx([1.2, 1.0])
    assert blind.log_sigma[1] == pytest.approx(np.hypot(body_size.NETWORK_LOG_SIGMA, body_size.STATURE_LOG_SIGMA))
