"""Joint sets: names, edges, left/right mirroring and derived skeletons.

The native skeleton of the default crop model is BlazePose GHUM's 33 landmarks (MediaPipe order
and names). ``''`` means "all joints the model predicts", as in the official MeTRAbs API.

Other skeletons are *derived*: each of their joints is an affine combination of native joints
(weights sum to 1, so the mapping commutes with translation and rotation), written as a
``[J, J_native]`` matrix. A joint that is a plain copy of a native one is "native"; the others are
marked ``derived`` (``per_skeleton_derived_joints`` in the SavedModel) because they are our
approximation of the dataset's definition, not a prediction trained on it. The formulas (also in
``docs/models.md``), with BlazePose names:

coco_19 (MeTRAbs / CMU-Panoptic order)
  neck = (left_shoulder + right_shoulder) / 2                         [derived]
  pelv = (left_hip + right_hip) / 2                                   [derived]
  nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles: the BlazePose joint of that name.
h36m_17 (Human3.6M order)
  pelv = (left_hip + right_hip) / 2                                   [derived]
  neck = (left_shoulder + right_shoulder) / 2  (H3.6M "thorax")       [derived]
  spin = (pelv + neck) / 2                                            [derived]
  head = nose  (H3.6M "neck/nose" joint)                              [derived]
  htop = ear_mid + 0.55 (ear_mid - neck), ear_mid = (left_ear + right_ear) / 2   [derived]
  hips, knees, ankles, shoulders, elbows, wrists: the BlazePose joint of that name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    # For derived skeletons: joint name -> {native joint name: weight}; absent = not derived.
    formulas: dict[str, dict[str, float]] = field(default_factory=dict, compare=False)
    # Typical adult lengths (mm) of some bones, for the plausibility check: ((a, b), mm).
    bone_lengths: tuple[tuple[tuple[int, int], float], ...] = ()
    # Copies of a native joint that still only approximate the dataset's joint (e.g. h36m "head").
    approximate: frozenset[str] = frozenset()

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def derived(self) -> tuple[bool, ...]:
        """Per joint: True when it is computed from several native joints (not predicted as such)."""
        return tuple(n in self.approximate or (n in self.formulas and not _is_copy(self.formulas[n]))
                     for n in self.joint_names)

    def mirror_indices(self) -> list[int]:
        return mirror_indices(self)


def _is_copy(formula: dict[str, float]) -> bool:
    return len(formula) == 1 and abs(next(iter(formula.values())) - 1.0) < 1e-9


_SWAPS = (("left_", "right_"), ("right_", "left_"), ("left", "right"), ("right", "left"),
          ("l", "r"), ("r", "l"))
_SUFFIX_SWAPS = (("_left", "_right"), ("_right", "_left"), ("_l", "_r"), ("_r", "_l"))


def counterpart(name: str, names: set[str]) -> str:
    """The left/right counterpart of a joint name (itself for centre joints).

    Understands MediaPipe (``left_wrist``, ``mouth_left``) and MeTRAbs (``lwri``, ``rhip``) styles;
    a swap is only taken when the counterpart exists, so ``rear`` (right ear) maps to ``lear`` but
    a hypothetical ``root`` stays itself.
    """
    for a, b in _SWAPS:
        if name.startswith(a) and b + name[len(a):] in names:
            return b + name[len(a):]
    for a, b in _SUFFIX_SWAPS:
        if name.endswith(a) and name[: -len(a)] + b in names:
            return name[: -len(a)] + b
    return name


def mirror_indices(skeleton: Skeleton) -> list[int]:
    """Index of each joint's left/right counterpart (itself for centre joints)."""
    names = set(skeleton.joint_names)
    index = {n: i for i, n in enumerate(skeleton.joint_names)}
    return [index[counterpart(n, names)] for n in skeleton.joint_names]


TRUNK = ("left_shoulder", "right_shoulder", "left_hip", "right_hip")


def limb_chain(skeleton: Skeleton, trunk: tuple[str, ...] = TRUNK) -> list[tuple[int, int]]:
    """(joint, parent) for every joint that hangs from the trunk through the skeleton's edges, in
    breadth-first order from the trunk outwards (elbow before wrist before fingers); the trunk and
    joints not connected to it (the face) are not listed. Empty when the trunk joints are not all
    named. Used to average limbs bone by bone (``aggregate.keep_bones``)."""
    index = {n: i for i, n in enumerate(skeleton.joint_names)}
    if not all(n in index for n in trunk):
        return []
    neighbours: dict[int, list[int]] = {}
    for a, b in skeleton.edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    reached = {index[n] for n in trunk}
    frontier = [index[n] for n in trunk]
    chain = []
    while frontier:
        nxt = []
        for p in frontier:
            for j in sorted(neighbours.get(p, [])):
                if j not in reached:
                    reached.add(j)
                    chain.append((j, p))
                    nxt.append(j)
        frontier = nxt
    return chain


def trunk_edges(skeleton: Skeleton, trunk: tuple[str, ...] = TRUNK) -> list[tuple[int, int]]:
    """The reference bones (``bone_lengths``) with both ends on the trunk: shoulder and hip width,
    the torso's sides."""
    ids = {i for i, n in enumerate(skeleton.joint_names) if n in trunk}
    return [e for e, _ in skeleton.bone_lengths if e[0] in ids and e[1] in ids]


_BP_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)
_BP = {n: i for i, n in enumerate(_BP_NAMES)}


def _bones(spec: dict[tuple[str, str], float]) -> tuple[tuple[tuple[int, int], float], ...]:
    return tuple(((_BP[a], _BP[b]), mm) for (a, b), mm in spec.items())


BLAZEPOSE_33 = Skeleton(
    "blazepose_33",
    _BP_NAMES,
    (
        (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12),
        (11, 13), (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18),
        (16, 20), (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27),
        (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32),
    ),
    bone_lengths=_bones({
        ("left_shoulder", "right_shoulder"): 360.0, ("left_hip", "right_hip"): 200.0,
        ("left_shoulder", "left_elbow"): 290.0, ("right_shoulder", "right_elbow"): 290.0,
        ("left_elbow", "left_wrist"): 250.0, ("right_elbow", "right_wrist"): 250.0,
        ("left_shoulder", "left_hip"): 500.0, ("right_shoulder", "right_hip"): 500.0,
        ("left_hip", "left_knee"): 420.0, ("right_hip", "right_knee"): 420.0,
        ("left_knee", "left_ankle"): 400.0, ("right_knee", "right_ankle"): 400.0,
    }),
)


def _mid(a: str, b: str) -> dict[str, float]:
    return {a: 0.5, b: 0.5}


def _derived(name: str, joints: list[tuple[str, dict[str, float] | str]],
             edges: list[tuple[str, str]], approximate: tuple[str, ...] = ()) -> Skeleton:
    names = tuple(j for j, _ in joints)
    formulas = {j: ({f: 1.0} if isinstance(f, str) else f) for j, f in joints}
    index = {n: i for i, n in enumerate(names)}
    return Skeleton(name, names, tuple((index[a], index[b]) for a, b in edges), formulas,
                    approximate=frozenset(approximate))


_NECK = _mid("left_shoulder", "right_shoulder")
_PELV = _mid("left_hip", "right_hip")

COCO_19 = _derived("coco_19", [
    ("neck", _NECK), ("nose", "nose"), ("pelv", _PELV),
    ("lsho", "left_shoulder"), ("lelb", "left_elbow"), ("lwri", "left_wrist"),
    ("lhip", "left_hip"), ("lkne", "left_knee"), ("lank", "left_ankle"),
    ("rsho", "right_shoulder"), ("relb", "right_elbow"), ("rwri", "right_wrist"),
    ("rhip", "right_hip"), ("rkne", "right_knee"), ("rank", "right_ankle"),
    ("leye", "left_eye"), ("lear", "left_ear"), ("reye", "right_eye"), ("rear", "right_ear"),
], [("neck", "nose"), ("nose", "leye"), ("leye", "lear"), ("nose", "reye"), ("reye", "rear"),
    ("neck", "lsho"), ("lsho", "lelb"), ("lelb", "lwri"), ("neck", "rsho"), ("rsho", "relb"),
    ("relb", "rwri"), ("neck", "pelv"), ("pelv", "lhip"), ("lhip", "lkne"), ("lkne", "lank"),
    ("pelv", "rhip"), ("rhip", "rkne"), ("rkne", "rank")])

_HTOP = {"left_ear": 0.775, "right_ear": 0.775, "left_shoulder": -0.275, "right_shoulder": -0.275}
H36M_17 = _derived("h36m_17", [
    ("pelv", _PELV), ("rhip", "right_hip"), ("rkne", "right_knee"), ("rank", "right_ankle"),
    ("lhip", "left_hip"), ("lkne", "left_knee"), ("lank", "left_ankle"),
    ("spin", {"left_hip": 0.25, "right_hip": 0.25, "left_shoulder": 0.25, "right_shoulder": 0.25}),
    ("neck", _NECK), ("head", "nose"),
    ("htop", _HTOP),
    ("lsho", "left_shoulder"), ("lelb", "left_elbow"), ("lwri", "left_wrist"),
    ("rsho", "right_shoulder"), ("relb", "right_elbow"), ("rwri", "right_wrist"),
], [("pelv", "rhip"), ("rhip", "rkne"), ("rkne", "rank"), ("pelv", "lhip"), ("lhip", "lkne"),
    ("lkne", "lank"), ("pelv", "spin"), ("spin", "neck"), ("neck", "head"), ("head", "htop"),
    ("neck", "lsho"), ("lsho", "lelb"), ("lelb", "lwri"), ("neck", "rsho"), ("rsho", "relb"),
    ("relb", "rwri")], approximate=("head",))

NATIVE = BLAZEPOSE_33
SKELETONS: dict[str, Skeleton] = {s.name: s for s in (BLAZEPOSE_33, COCO_19, H36M_17)}


def joint_matrix(skeleton: Skeleton, native: Skeleton = NATIVE) -> np.ndarray:
    """[J, J_native] weights that make the skeleton's joints from the native ones (rows sum to 1)."""
    if skeleton.name == native.name:
        return np.eye(native.num_joints, dtype=np.float32)
    index = {n: i for i, n in enumerate(native.joint_names)}
    m = np.zeros((skeleton.num_joints, native.num_joints), np.float64)
    for j, name in enumerate(skeleton.joint_names):
        for src, w in skeleton.formulas[name].items():
            m[j, index[src]] += w
    return m.astype(np.float32)


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
