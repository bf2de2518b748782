"""One vocabulary of joint names, so motion capture and the model's skeletons are compared joint by
joint only where both mean the same point.

Why: benchmarks and skeletons reuse the same word for different points. Human3.6M's joint 9
("Neck/Nose", MeTRAbs ``head``) is not MPI-INF-3DHP's ``head`` (the head's centre), and both
differ from BlazePose's ``nose``; MeTRAbs' ``neck`` is Human3.6M's thorax. Comparing by raw name
would score the model against the wrong point. Every name is therefore translated into the
canonical vocabulary below first, and a joint is evaluated only when both sides have it.

Canonical names: the limb joints in BlazePose's long form (``left_shoulder``, ``left_elbow``,
``left_wrist``, ``left_hip``, ``left_knee``, ``left_ankle`` and the ``right_`` ones), ``pelvis``,
``spine`` (Human3.6M / 3DHP spine joint), ``thorax`` (between the shoulders: Human3.6M "Thorax",
3DHP and MeTRAbs ``neck``), ``neck_nose`` (Human3.6M joint 9), ``head`` (3DHP: the head's
centre), ``head_top``, ``nose``, and every other BlazePose landmark name as it is (``left_heel``,
``left_eye``, ...). Names outside the vocabulary are kept as they are (and only match themselves).
"""

from __future__ import annotations

from annotator.eval.metrics import SHORT

LIMB_JOINTS = tuple(SHORT)  # the 12 joints every benchmark and skeleton has with one meaning

# Benchmarks' joint orders, for files that give an order name instead of joint names.
ORDERS: dict[str, tuple[str, ...]] = {
    # Human3.6M 17 joints (the order of most H36M releases and of MeTRAbs ``h36m_17``)
    "h36m_17": ("pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
                "spine", "thorax", "neck_nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
                "right_shoulder", "right_elbow", "right_wrist"),
    # MPI-INF-3DHP test set, 17 joints (``univ_annot3`` of the test sequences)
    "3dhp_17": ("head_top", "thorax", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
                "left_ankle", "pelvis", "spine", "head"),
    # SMPL's 24 joints (3DPW ``jointPositions``): the body model's joints, not anatomical landmarks;
    # the limb joints are compared under their names, the others only match themselves
    "smpl_24": ("smpl_pelvis", "left_hip", "right_hip", "smpl_spine1", "left_knee", "right_knee", "smpl_spine2",
                "left_ankle", "right_ankle", "smpl_spine3", "smpl_left_foot", "smpl_right_foot", "smpl_neck",
                "smpl_left_collar", "smpl_right_collar", "smpl_head", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "smpl_left_hand", "smpl_right_hand"),
}

# MeTRAbs-style short names with one meaning (``head`` is not here: it depends on the skeleton)
_ALIASES = {**{short: long for long, short in SHORT.items()},
            "pelv": "pelvis", "spin": "spine", "neck": "thorax", "htop": "head_top",
            "leye": "left_eye", "reye": "right_eye", "lear": "left_ear", "rear": "right_ear"}
# skeletons (the model's or a benchmark's, by name) whose ``head`` is Human3.6M's neck/nose joint
_HEAD_IS_NECK_NOSE = ("h36m_17", "h36m_25")


def canonical(names: list[str] | tuple[str, ...], skeleton: str = "") -> list[str]:
    """The canonical name of each joint (module docstring); ``skeleton`` is the joint set's name,
    which decides what an ambiguous ``head`` means."""
    out = []
    for name in names:
        n = str(name).strip().lower()
        if n == "head" and skeleton in _HEAD_IS_NECK_NOSE:
            out.append("neck_nose")
        else:
            out.append(_ALIASES.get(n, n))
    if len(set(out)) != len(out):
        twice = sorted({n for n in out if out.count(n) > 1})
        raise ValueError(f"joint names {', '.join(twice)} appear twice (after translating "
                         f"{', '.join(map(str, names))} into the canonical names)")
    return out


def order(name: str) -> tuple[str, ...]:
    """A benchmark's joint order (``ORDERS``) by name."""
    if name not in ORDERS:
        raise ValueError(f"unknown joint order {name!r}; known: {', '.join(sorted(ORDERS))} (or give joint names)")
    return ORDERS[name]


def shared(reference: list[str], predicted: list[str], only: tuple[str, ...] | None = None) -> list[str]:
    """The canonical names both joint sets have, in the reference's order (``only``: restricted
    to those, e.g. ``LIMB_JOINTS``)."""
    have = set(predicted)
    return [n for n in reference if n in have and (only is None or n in only)]
