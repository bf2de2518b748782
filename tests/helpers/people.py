"""Synthetic people for the tracking and temporal tests: a standing BlazePose-33 body (mm, camera
frame: x right, y down, z forward) that walks, swings its limbs, and is seen by a pinhole camera."""

from __future__ import annotations

import numpy as np

from annotator.estimator.skeletons import NATIVE

NAMES = list(NATIVE.joint_names)
EDGES = [list(e) for e in NATIVE.edges]
SKELETON = {"joint_names": NAMES, "edges": EDGES}
K = np.array([[1000.0, 0, 960], [0, 1000.0, 540], [0, 0, 1]])

# joint -> (x, y, z) relative to the hips' midpoint, standing, facing the camera (its left = image right)
_BODY = {
    "nose": (0, -620, -80), "left_eye_inner": (15, -650, -70), "left_eye": (30, -650, -65),
    "left_eye_outer": (45, -650, -60), "right_eye_inner": (-15, -650, -70), "right_eye": (-30, -650, -65),
    "right_eye_outer": (-45, -650, -60), "left_ear": (70, -640, 0), "right_ear": (-70, -640, 0),
    "mouth_left": (25, -590, -70), "mouth_right": (-25, -590, -70),
    "left_shoulder": (180, -480, 0), "right_shoulder": (-180, -480, 0), "left_elbow": (220, -200, 0),
    "right_elbow": (-220, -200, 0), "left_wrist": (240, 40, -20), "right_wrist": (-240, 40, -20),
    "left_pinky": (250, 110, -20), "right_pinky": (-250, 110, -20), "left_index": (240, 120, -40),
    "right_index": (-240, 120, -40), "left_thumb": (225, 90, -50), "right_thumb": (-225, 90, -50),
    "left_hip": (100, 0, 0), "right_hip": (-100, 0, 0), "left_knee": (110, 420, -10), "right_knee": (-110, 420, -10),
    "left_ankle": (115, 830, 10), "right_ankle": (-115, 830, 10), "left_heel": (115, 870, 50),
    "right_heel": (-115, 870, 50), "left_foot_index": (120, 880, -110), "right_foot_index": (-120, 880, -110),
}
TEMPLATE = np.array([_BODY[n] for n in NAMES], np.float64)
MIRROR = np.array([NAMES.index(n.replace("left", "#").replace("right", "left").replace("#", "right"))
                   for n in NAMES])


def pose_at(centre: np.ndarray, phase: float, scale: float = 1.0) -> np.ndarray:
    """The body at ``centre`` (hips, camera frame) with its legs and arms swung by ``phase`` (rad)."""
    x = TEMPLATE.copy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        swing = 0.35 * sign * np.sin(phase)
        for part, pivot in (("knee", "hip"), ("ankle", "hip"), ("heel", "hip"), ("foot_index", "hip"),
                            ("elbow", "shoulder"), ("wrist", "shoulder"), ("pinky", "shoulder"),
                            ("index", "shoulder"), ("thumb", "shoulder")):
            j, p = NAMES.index(f"{side}_{part}"), NAMES.index(f"{side}_{pivot}")
            a = -swing if pivot == "hip" else swing
            d = x[j] - x[p]
            x[j] = x[p] + [d[0], d[1] * np.cos(a) - d[2] * np.sin(a), d[1] * np.sin(a) + d[2] * np.cos(a)]
    return x * scale + centre


def project(x: np.ndarray) -> np.ndarray:
    return x[..., :2] / x[..., 2:3] * K[0, 0] + K[:2, 2]


def box_of(j2d: np.ndarray, score: float = 0.9) -> np.ndarray:
    lo, hi = j2d.min(0), j2d.max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1], score])
