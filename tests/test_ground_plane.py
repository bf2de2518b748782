"""Ground-plane depth and scale on a synthetic calibrated camera and pose (known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.labels import ground_plane as gp

NAMES = ["nose", "left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee",
         "left_ankle", "right_ankle"]
PLANE = gp.GroundPlane(up=(0.0, 0.0, 1.0), height_mm=0.0)  # z up, floor at z = 0 (a mocap lab)


def _camera(height=1900.0, distance=4000.0):
    """World->camera 4x4 of a camera at (0, -distance, height) looking at (0, 0, 900), z up."""
    pos = np.array([0.0, -distance, height])
    z = np.array([0.0, 0.0, 900.0]) - pos
    z /= np.linalg.norm(z)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, -rot @ pos
    return ext


def _standing(x=200.0, y=300.0, lift_left_mm=0.0) -> np.ndarray:
    """A person standing at (x, y) on the floor, world mm; ankles at ANKLE_HEIGHT_MM."""
    a = gp.ANKLE_HEIGHT_MM
    pose = np.array([[0, 0, 1650], [-180, 0, 1420], [180, 0, 1420], [-100, 0, 950], [100, 0, 950],
                     [-100, 0, 500], [100, 0, 500], [-100, 0, a + lift_left_mm], [100, 0, a]], np.float64)
    return pose + [x, y, 0]


def _scaled_about_camera(pose, ext, s):
    c = gp.camera_centre(ext)
    return c + s * (pose - c)


@pytest.mark.parametrize("wrong_scale", [0.9, 0.97, 1.12])
def test_a_monocular_scale_error_is_undone(wrong_scale):
    ext = _camera()
    truth = _standing()
    mono = _scaled_about_camera(truth, ext, wrong_scale)[None]
    res = gp.apply(mono, NAMES, ext, PLANE)
    assert res.applied.tolist() == [True]
    np.testing.assert_allclose(res.poses[0], truth, atol=1e-6)
    assert res.scale[0] == pytest.approx(1 / wrong_scale)
    # the projection is unchanged: scaling about the camera centre only moves along rays
    def project(p):
        c = p @ ext[:3, :3].T + ext[:3, 3]
        return c[:, :2] / c[:, 2:]
    np.testing.assert_allclose(project(res.poses[0]), project(mono[0]), atol=1e-9)
    # and the floor's size is sure: 30 mm of foot height along a steep ray, far below a population's 5.6 %
    assert 0 < res.log_sigma[0] < 0.03


def test_the_grounded_foot_decides_not_the_lifted_one():
    ext = _camera()
    truth = _standing(lift_left_mm=250.0)  # walking: the left foot is in the air
    res = gp.apply(_scaled_about_camera(truth, ext, 0.93)[None], NAMES, ext, PLANE)
    np.testing.assert_allclose(res.poses[0], truth, atol=1e-6)


def test_unsure_or_unusable_people_keep_the_monocular_answer():
    ext = _camera()
    truth = _standing()
    mono = _scaled_about_camera(truth, ext, 0.9)
    lying = np.stack([mono[:, 0], mono[:, 2], mono[:, 1]], -1) * [1, 1, 0] + [0, 0, 200]
    conf = np.ones((3, len(NAMES)))
    conf[2, 7:] = 0.1  # ankles not seen
    res = gp.apply(np.stack([mono, lying, mono]), NAMES, ext, PLANE, confidences=conf)
    assert res.applied.tolist() == [True, False, False]
    np.testing.assert_allclose(res.poses[1:], np.stack([lying, mono]))
    # ankles outside the image are not trusted either
    outside = gp.apply(mono[None], NAMES, ext, PLANE, poses2d=np.full((1, len(NAMES), 2), -5.0),
                       image_size=(1920, 1080))
    assert not outside.applied[0]
    # a camera at floor level sees the feet at the horizon: ill conditioned, left alone
    low = _camera(height=100.0)
    res = gp.apply(_scaled_about_camera(truth, low, 0.9)[None], NAMES, low, PLANE)
    assert not res.applied[0]
    # a factor outside the plausible range means the plane or the up vector is wrong: left alone
    res = gp.apply(_scaled_about_camera(truth, ext, 0.5)[None], NAMES, ext, PLANE)
    assert not res.applied[0]


def test_a_wrong_up_vector_finds_nobody_upright():
    ext = _camera()
    mono = _scaled_about_camera(_standing(), ext, 0.9)[None]
    res = gp.apply(mono, NAMES, ext, gp.GroundPlane(up=(0.0, -1.0, 0.0)))
    assert not res.applied[0]


def test_a_z_up_world_given_the_default_up_is_told_which_up_fits():
    """A mocap lab's camera (Z up, looking slightly down): the default -Y is ~90 degrees from its
    image's up, and +Z fits; the right up raises nothing, nor does a camera rolled 20 degrees."""
    ext = _camera()
    pitch = np.degrees(np.arctan2(1000, 4000))  # 1 m down over 4 m
    assert gp.up_angle_degrees(ext, (0.0, 0.0, 1.0)) == pytest.approx(pitch, abs=0.01)
    # the camera looks along +Y, 14 degrees down: -Y points back at it, 104 degrees from its image's up
    assert gp.up_angle_degrees(ext, (0.0, -1.0, 0.0)) == pytest.approx(90 + pitch, abs=0.01)
    assert gp.likelier_up(ext, (0.0, -1.0, 0.0)) == (0.0, 0.0, 1.0)
    assert gp.likelier_up(ext, (0.0, 0.0, 1.0)) is None
    roll = np.eye(4)
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    roll[:2, :2] = [[c, -s], [s, c]]
    assert gp.likelier_up(roll @ ext, (0.0, 0.0, 1.0)) is None
    # an upside-down world up (+Y in an OpenCV-style world) is 180 degrees off: -Y fits
    assert gp.up_angle_degrees(np.eye(4), (0.0, 1.0, 0.0)) == pytest.approx(180.0)
    assert gp.likelier_up(np.eye(4), (0.0, 1.0, 0.0)) == (0.0, -1.0, 0.0)


def test_metrabs_joint_names_work_too():
    ext = _camera()
    truth = _standing()
    names = ["nose", "lsho", "rsho", "lhip", "rhip", "lkne", "rkne", "lank", "rank"]
    res = gp.apply(_scaled_about_camera(truth, ext, 1.1)[None], names, ext, PLANE)
    np.testing.assert_allclose(res.poses[0], truth, atol=1e-6)


def test_the_lowest_foot_landmark_decides_when_ankles_sit_higher_than_their_bound():
    """BlazePose's ankle landmark sits well above the malleolus bound; its toe tips do not."""
    ext = _camera()
    names = NAMES + ["left_heel", "right_heel", "left_foot_index", "right_foot_index"]
    pose = _standing()
    pose[7:9, 2] = 150.0  # ankles higher than their lower bound
    feet = np.array([[-100, -40, 60], [100, -40, 60], [-100, 150, gp.FOOT_HEIGHTS_MM["toe"]],
                     [100, 150, gp.FOOT_HEIGHTS_MM["toe"]]], np.float64) + [200.0, 300.0, 0]
    truth = np.concatenate([pose, feet])
    res = gp.apply(_scaled_about_camera(truth, ext, 0.92)[None], names, ext, PLANE)
    np.testing.assert_allclose(res.poses[0], truth, atol=1e-6)
    assert [h for _, h in gp.foot_points(names)] == [65.0, 65.0, 30.0, 30.0, 15.0, 15.0]
