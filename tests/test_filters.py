"""Plausibility checks and 3D pose NMS on synthetic poses whose answer is known."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from annotator.estimator import filters, skeletons

SK = skeletons.BLAZEPOSE_33
EDGES = np.array([e for e, _ in SK.bone_lengths], np.int32)
LENGTHS = np.array([mm for _, mm in SK.bone_lengths], np.float32)


def _person(offset=(0.0, 0.0, 4000.0), seed=0):
    """A rough standing BlazePose-33 skeleton (mm, camera frame, y down) with typical bone lengths."""
    rng = np.random.default_rng(seed)
    p = np.zeros((33, 3), np.float32)
    named = {
        "nose": (0, -1600, 0), "left_eye": (30, -1630, 0), "right_eye": (-30, -1630, 0),
        "left_ear": (70, -1610, 40), "right_ear": (-70, -1610, 40),
        "left_shoulder": (180, -1400, 0), "right_shoulder": (-180, -1400, 0),
        "left_elbow": (200, -1110, 0), "right_elbow": (-200, -1110, 0),
        "left_wrist": (210, -860, 0), "right_wrist": (-210, -860, 0),
        "left_hip": (100, -900, 0), "right_hip": (-100, -900, 0),
        "left_knee": (100, -480, 0), "right_knee": (-100, -480, 0),
        "left_ankle": (100, -80, 0), "right_ankle": (-100, -80, 0),
    }
    for name, xyz in named.items():
        p[SK.joint_names.index(name)] = xyz
    for i, n in enumerate(SK.joint_names):  # face/hand/foot details near their parents
        if n not in named:
            parent = {"mouth": "nose", "eye": "nose", "pinky": "wrist", "index": "wrist", "thumb": "wrist",
                      "heel": "ankle", "foot": "ankle"}
            for key, par in parent.items():
                if key in n:
                    side = "left_" if "left" in n else "right_" if "right" in n else ""
                    p[i] = p[SK.joint_names.index(side + par if side + par in SK.joint_names else par)]
                    p[i] += rng.normal(0, 20, 3)
    return p + np.asarray(offset, np.float32)


def test_typical_person_passes_and_5x_bone_fails():
    good = _person()
    bad = good.copy()
    knee, ankle = SK.joint_names.index("left_knee"), SK.joint_names.index("left_ankle")
    bad[ankle] = good[knee] + 5.0 * (good[ankle] - good[knee])  # a 2 m shin
    ok = filters.bones_plausible(np.stack([good, bad]), EDGES, LENGTHS).numpy()
    assert ok.tolist() == [True, False]


def test_short_bones_only_fail_with_a_large_absolute_error():
    p = _person()
    ls, rs = SK.joint_names.index("left_shoulder"), SK.joint_names.index("right_shoulder")
    tiny = p.copy()
    tiny[rs] = tiny[ls] + 1.0  # shoulder width 1 mm: ratio < 0.1 but only 359 mm off -> implausible
    ok = filters.bones_plausible(tiny[None], EDGES, LENGTHS).numpy()
    assert ok.tolist() == [False]
    # a bone 0.05x a 200 mm reference is off by only 190 mm: kept (MeTRAbs' absolute margin)
    ok = filters.bones_plausible(tiny[None], np.array([[ls, rs]]), np.array([200.0], np.float32)).numpy()
    assert ok.tolist() == [True]


def test_augmentation_consistency():
    rng = np.random.default_rng(1)
    person = _person()
    consistent = person[None] + rng.normal(0, 20, (5, 33, 3))
    # each augmentation put the joints somewhere else entirely: no person in the crop
    random = person[None] + rng.normal(0, 600, (5, 33, 3))
    # a pure depth/scale disagreement is aligned away
    scaled = np.stack([person * s for s in (0.8, 0.9, 1.0, 1.1, 1.2)])
    out = filters.augmentations_consistent(np.stack([consistent, random, scaled]).astype(np.float32)).numpy()
    assert out.tolist() == [True, False, True]
    assert filters.augmentations_consistent(random[:1][None].astype(np.float32)).numpy().tolist() == [True]


def test_pose_box_agreement():
    pose2d = np.array([[[100.0, 100.0], [200.0, 400.0]]], np.float32)
    inside = np.array([[100.0, 100.0, 100.0, 300.0]], np.float32)
    elsewhere = np.array([[400.0, 100.0, 100.0, 300.0]], np.float32)
    half = np.array([[150.0, 100.0, 200.0, 300.0]], np.float32)  # intersection 50 of 200 wide
    assert filters.pose_agrees_with_box(pose2d, inside).numpy().tolist() == [True]
    assert filters.pose_agrees_with_box(pose2d, elsewhere).numpy().tolist() == [False]
    assert filters.pose_agrees_with_box(pose2d, half).numpy().tolist() == [False]
    # a box much wider than the person (a held object) still agrees: the pose lies inside it
    wide = np.array([[50.0, 80.0, 400.0, 340.0]], np.float32)
    assert filters.pose_agrees_with_box(pose2d, wide).numpy().tolist() == [True]
    # a truncated person: the pose box sticks out of the detection box (and the image)
    truncated = np.array([[120.0, 100.0, 80.0, 200.0]], np.float32)
    assert filters.pose_agrees_with_box(pose2d, truncated).numpy().tolist() == [True]


def test_pose_nms_removes_duplicate_keeps_distinct_people():
    rng = np.random.default_rng(2)
    a = _person((0, 0, 4000))
    dup = a * 1.05 + rng.normal(0, 15, a.shape)  # same person, 5 % depth/scale off, noisy
    b = _person((900, 0, 4200), seed=3)  # someone standing next to them
    poses = np.stack([a, dup, b]).astype(np.float32)
    scores = np.array([0.6, 0.9, 0.5], np.float32)
    keep = filters.pose_nms(poses, scores, np.zeros(3, np.int32), np.ones(3, bool)).numpy()
    assert keep.tolist() == [False, True, True], "the higher-scored duplicate wins, the other person stays"
    sim = filters.pose_similarity(poses).numpy()
    assert sim[0, 1] > 0.4 > sim[0, 2]


def test_pose_nms_never_suppresses_across_images_or_implausible_ones():
    a = _person()
    poses = np.stack([a, a + 1.0, a + 2.0]).astype(np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    keep = filters.pose_nms(poses, scores, np.array([0, 1, 1]), np.ones(3, bool)).numpy()
    assert keep.tolist() == [True, True, False]
    keep = filters.pose_nms(poses, scores, np.zeros(3, np.int32), np.array([False, True, True])).numpy()
    assert keep.tolist() == [False, True, False]
    empty = filters.pose_nms(tf.zeros([0, 33, 3]), tf.zeros([0]), tf.zeros([0], tf.int32), tf.zeros([0], tf.bool))
    assert empty.shape == (0,)
