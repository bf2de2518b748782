"""Joint sets: names, edges and left/right mirroring, per skeleton.

The native skeleton of the default crop model is BlazePose GHUM's 33 landmarks (MediaPipe order
and names). ``''`` means "all joints the model predicts", as in the official MeTRAbs API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def mirror_indices(self) -> list[int]:
        """Index of each joint's left/right counterpart (itself for centre joints)."""
        index = {n: i for i, n in enumerate(self.joint_names)}
        out = []
        for n in self.joint_names:
            for a, b in (("left", "right"), ("right", "left")):
                if n.startswith(a):
                    out.append(index[b + n[len(a):]])
                    break
            else:
                out.append(index[n])
        return out


BLAZEPOSE_33 = Skeleton(
    "blazepose_33",
    (
        "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
        "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
        "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
        "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
        "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
        "right_heel", "left_foot_index", "right_foot_index",
    ),
    (
        (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12),
        (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18),
        (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27),
        (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
    ),
)

# "mouth_left"/"mouth_right" do not follow the left_/right_ prefix rule: fix them up.
_MOUTH = {"mouth_left": "mouth_right", "mouth_right": "mouth_left"}


def mirror_indices(skeleton: Skeleton) -> list[int]:
    index = {n: i for i, n in enumerate(skeleton.joint_names)}
    base = skeleton.mirror_indices()
    return [index[_MOUTH[n]] if n in _MOUTH else base[i] for i, n in enumerate(skeleton.joint_names)]


SKELETONS: dict[str, Skeleton] = {BLAZEPOSE_33.name: BLAZEPOSE_33}
NATIVE = BLAZEPOSE_33


def joint_matrix(skeleton: Skeleton) -> np.ndarray:
    """[J, J_native] weights that make the skeleton's joints from the native ones (rows sum to 1)."""
    if skeleton.name == NATIVE.name:
        return np.eye(NATIVE.num_joints, dtype=np.float32)
    raise NotImplementedError(skeleton.name)


class UnknownSkeletonError(ValueError):
    pass


def get(name: str) -> Skeleton:
    """Look a skeleton up by name; ``''`` is the native one. Unknown names are an error."""
    if name == "":
        return NATIVE
    try:
        return SKELETONS[name]
    except KeyError:
        raise UnknownSkeletonError(
            f"unknown skeleton {name!r}; valid: {', '.join(repr(s) for s in [''] + sorted(SKELETONS))}"
        ) from None
