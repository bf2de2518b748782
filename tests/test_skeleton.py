"""Skeleton definitions: derived joints follow their documented formulas, mirroring pairs left/right."""

from __future__ import annotations

import numpy as np
import pytest

from annotator.estimator import skeletons

BP = skeletons.BLAZEPOSE_33
# Joint orders of the official MeTRAbs 2023 models (reference metrabs.md section 1).
OFFICIAL = {
    "coco_19": "neck,nose,pelv,lsho,lelb,lwri,lhip,lkne,lank,rsho,relb,rwri,rhip,rkne,rank,leye,lear,reye,rear",
    "h36m_17": "pelv,rhip,rkne,rank,lhip,lkne,lank,spin,neck,head,htop,lsho,lelb,lwri,rsho,relb,rwri",
}


def _native_pose(seed=0):
    return np.random.default_rng(seed).normal(0, 500, (BP.num_joints, 3)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_joint_order(name):
    assert ",".join(skeletons.SKELETONS[name].joint_names) == OFFICIAL[name]


def test_derived_joints_follow_documented_formulas():
    p = _native_pose()
    j = {n: p[i] for i, n in enumerate(BP.joint_names)}
    coco = skeletons.joint_matrix(skeletons.COCO_19) @ p
    c = dict(zip(skeletons.COCO_19.joint_names, coco, strict=True))
    np.testing.assert_allclose(c["neck"], (j["left_shoulder"] + j["right_shoulder"]) / 2, atol=1e-3)
    np.testing.assert_allclose(c["pelv"], (j["left_hip"] + j["right_hip"]) / 2, atol=1e-3)
    np.testing.assert_allclose(c["rear"], j["right_ear"], atol=1e-4)
    h36m = skeletons.joint_matrix(skeletons.H36M_17) @ p
    h = dict(zip(skeletons.H36M_17.joint_names, h36m, strict=True))
    neck = (j["left_shoulder"] + j["right_shoulder"]) / 2
    pelv = (j["left_hip"] + j["right_hip"]) / 2
    ear_mid = (j["left_ear"] + j["right_ear"]) / 2
    np.testing.assert_allclose(h["spin"], (neck + pelv) / 2, atol=1e-3)
    np.testing.assert_allclose(h["htop"], ear_mid + 0.55 * (ear_mid - neck), atol=1e-3)
    np.testing.assert_allclose(h["head"], j["nose"], atol=1e-4)
    np.testing.assert_allclose(h["lwri"], j["left_wrist"], atol=1e-4)


@pytest.mark.parametrize("name", sorted(skeletons.SKELETONS))
def test_derivation_is_rigid_equivariant(name):
    """Rows sum to 1: moving or rotating the person moves the derived joints the same way."""
    m = skeletons.joint_matrix(skeletons.SKELETONS[name])
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-6)
    p = _native_pose(1)
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    t = np.array([100.0, -2000.0, 5000.0], np.float32)
    np.testing.assert_allclose(m @ (p @ q.T + t), (m @ p) @ q.T + t, atol=1e-2)


def test_derived_joints_are_marked():
    coco = dict(zip(skeletons.COCO_19.joint_names, skeletons.COCO_19.derived, strict=True))
    assert [n for n, d in coco.items() if d] == ["neck", "pelv"]
    h36m = dict(zip(skeletons.H36M_17.joint_names, skeletons.H36M_17.derived, strict=True))
    assert sorted(n for n, d in h36m.items() if d) == ["head", "htop", "neck", "pelv", "spin"]
    assert not any(BP.derived)


@pytest.mark.parametrize("name", sorted(skeletons.SKELETONS))
def test_mirroring_pairs_left_and_right(name):
    sk = skeletons.SKELETONS[name]
    mirror = skeletons.mirror_indices(sk)
    assert sorted(mirror) == list(range(sk.num_joints)), "a permutation"
    assert [mirror[i] for i in mirror] == list(range(sk.num_joints)), "an involution"
    for i, n in enumerate(sk.joint_names):
        other = sk.joint_names[mirror[i]]
        if "left" in n or n[0] == "l" and n[1:] in {x[1:] for x in sk.joint_names if x[0] == "r"}:
            assert other != n, n


def test_blazepose_mirror_handles_suffix_names():
    mirror = skeletons.mirror_indices(BP)
    assert BP.joint_names[mirror[BP.joint_names.index("mouth_left")]] == "mouth_right"
    assert BP.joint_names[mirror[BP.joint_names.index("left_eye_inner")]] == "right_eye_inner"
    assert BP.joint_names[mirror[BP.joint_names.index("nose")]] == "nose"


@pytest.mark.parametrize("name", sorted(skeletons.SKELETONS))
def test_edges_connect_valid_joints_once(name):
    sk = skeletons.SKELETONS[name]
    edges = {tuple(sorted(e)) for e in sk.edges}
    assert len(edges) == len(sk.edges)
    assert all(0 <= a < sk.num_joints and 0 <= b < sk.num_joints and a != b for a, b in sk.edges)
    connected = {j for e in sk.edges for j in e}
    assert connected == set(range(sk.num_joints)), "every joint is drawn"


def test_unknown_skeleton_lists_valid_names():
    with pytest.raises(skeletons.UnknownSkeletonError, match="valid: '', 'blazepose_33', 'coco_19', 'h36m_17'"):
        skeletons.get("smpl_2")
    assert skeletons.get("") is BP
