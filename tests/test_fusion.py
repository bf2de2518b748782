"""Rig fusion (annotator.labels.fusion, labels.multiview_geometry, temporal.world) with known
answers: synthetic people projected into synthetic calibrated cameras, with outlier views,
left/right swaps, occlusions and a second person; then the split-view evaluation on one real
frame of Pose2Sim's demo."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotator.estimator import skeletons
from annotator.labels import fusion
from annotator.labels import multiview_geometry as geo
from annotator.temporal import world

from .test_eval_multiview import SINGLE, _cameras

NAMES = list(skeletons.COCO_19.joint_names)
EDGES = list(skeletons.COCO_19.edges)
SKEL = fusion.RigSkeleton.of(NAMES, EDGES)
# a standing person facing +y, world z up, left side at -x (a real body, not its mirror image)
_BODY = {"neck": (0, 0, 1450), "nose": (0, 90, 1600), "pelv": (0, 0, 950),
         "lsho": (-180, 0, 1450), "lelb": (-230, 20, 1170), "lwri": (-250, 90, 930),
         "lhip": (-100, 0, 950), "lkne": (-110, 40, 520), "lank": (-115, 0, 90),
         "rsho": (180, 0, 1450), "relb": (240, -30, 1180), "rwri": (260, 60, 940),
         "rhip": (100, 0, 950), "rkne": (120, 10, 520), "rank": (120, -20, 90),
         "leye": (-35, 75, 1640), "lear": (-75, 0, 1620), "reye": (35, 75, 1640), "rear": (75, 0, 1620)}


def body(offset=(0.0, 0.0, 0.0), yaw_deg=0.0) -> np.ndarray:
    a = np.radians(yaw_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return np.array([_BODY[n] for n in NAMES], np.float64) @ rot.T + np.asarray(offset)


def observe(people3d: list[np.ndarray], cams, mono_error=None) -> list[fusion.ViewPeople]:
    """Each camera's labels of every person: exact rays, confidence 0.9, monocular 3D = the truth
    plus ``mono_error`` [J,3] (default: a 300 mm depth-like shift, which leaves bones exact)."""
    out = []
    for cam in cams:
        rays = np.stack([geo.project(p, cam) for p in people3d])
        shift = np.asarray(cam.rotation, np.float64).T @ [0, 0, 300.0]  # along the camera's axis
        mono = np.stack([p + (shift if mono_error is None else mono_error) for p in people3d])
        out.append(fusion.ViewPeople(rays, np.full(rays.shape[:2], 0.9), mono))
    return out


# ------------------------------------------------------------------------------ geometry
def test_merge_pairs_keeps_one_detection_per_view_and_relative_flips():
    # views 0-1 agree, 1-2 with 2 flipped, 0-2 flipped (consistent), a worse 0-2 pair with another detection
    pairs = [(1.0, 0, 0, 1, 0, False), (2.0, 1, 0, 2, 0, True), (3.0, 0, 0, 2, 1, False), (4.0, 0, 0, 2, 0, True)]
    assert geo.merge_pairs(pairs) == [{0: (0, False), 1: (0, False), 2: (0, True)}]
    # two clusters joined through a flipped pair: the second cluster's members flip with it
    pairs = [(1.0, 0, 0, 1, 0, False), (2.0, 2, 0, 3, 0, False), (3.0, 1, 0, 2, 0, True)]
    assert geo.merge_pairs(pairs) == [{0: (0, False), 1: (0, False), 2: (0, True), 3: (0, True)}]


def test_pair_cost_finds_a_swapped_view():
    cams = _cameras(2)
    p = body()
    a, b = (geo.project(p, c) for c in cams)
    conf = np.full(len(NAMES), 0.9)
    cost, flipped = geo.pair_cost(a, conf, b, conf, cams[0], cams[1], 0.5, list(SKEL.mirror))
    assert cost < 1e-3 and not flipped
    m = list(SKEL.mirror)
    cost, flipped = geo.pair_cost(a, conf, b[m], conf, cams[0], cams[1], 0.5, m)
    assert cost < 1e-3 and flipped


# ------------------------------------------------------------------------------ fusion
def test_outlier_view_dropped_per_joint_fused_equals_truth():
    cams = _cameras(4)
    truth = body((100, -200, 0), 30)
    people = observe([truth], cams)
    bad = [NAMES.index(n) for n in ("lwri", "rkne", "nose")]
    people[3].rays[0, bad] += 0.1  # ~140 px off in one view
    (p,) = fusion.fuse(people, cams, SKEL)
    np.testing.assert_allclose(p.joints, truth, atol=1.0)
    assert not p.view_mask[3, bad].any() and p.view_mask[:3, bad].all()
    assert (p.views_used[[j for j in range(len(NAMES)) if j not in bad]] == 4).all()
    assert np.nanmax(p.reprojection_px) < 0.5
    assert p.members == {0: 0, 1: 0, 2: 0, 3: 0} and not any(p.flipped.values())


def test_monocular_prior_for_joints_fewer_than_two_views_see():
    cams = _cameras(3)
    truth = body((0, 300, 0), -60)
    people = observe([truth], cams)
    lwri, rank = NAMES.index("lwri"), NAMES.index("rank")
    people[1].conf[0, lwri] = people[2].conf[0, lwri] = 0.1  # one view sees the wrist
    people[0].conf[0, rank] = people[1].conf[0, rank] = people[2].conf[0, rank] = 0.0  # none sees the ankle
    (p,) = fusion.fuse(people, cams, SKEL)
    np.testing.assert_allclose(p.joints, truth, atol=1.0)  # the monocular bones are exact here
    assert p.views_used[lwri] == 1 and p.views_used[rank] == 0
    assert p.sigma_mm[rank] > p.sigma_mm[lwri] > p.sigma_mm[NAMES.index("neck")]


def test_swapped_view_and_mirror_image_are_repaired():
    cams = _cameras(3)
    truth = body((0, 0, 0), 120)
    m = list(SKEL.mirror)
    people = observe([truth], cams)
    people[2] = fusion.ViewPeople(people[2].rays[:, m], people[2].conf[:, m], people[2].poses3d[:, m])
    (p,) = fusion.fuse(people, cams, SKEL)
    np.testing.assert_allclose(p.joints, truth, atol=1.0)
    assert p.flipped[2] != p.flipped[0] and not p.flipped[0]
    # every view exchanged left and right: geometry alone cannot tell, the chirality of the body can
    people = [fusion.ViewPeople(v.rays[:, m], v.conf[:, m], v.poses3d[:, m]) for v in observe([truth], cams)]
    (p,) = fusion.fuse(people, cams, SKEL)
    np.testing.assert_allclose(p.joints, truth, atol=1.0)
    assert all(p.flipped.values())
    assert fusion.chirality(truth, NAMES) > 0 > fusion.chirality(truth[m], NAMES)


def test_two_people_associated_and_a_far_monocular_centroid_refused():
    cams = _cameras(4)
    a, b = body((-600, 0, 0), 0), body((700, 200, 0), 200)
    people = observe([a, b], cams)
    for v in people[::2]:  # detection order differs between views
        v.rays, v.conf, v.poses3d = v.rays[::-1].copy(), v.conf[::-1].copy(), v.poses3d[::-1].copy()
    fused = fusion.fuse(people, cams, SKEL)
    assert len(fused) == 2
    got = sorted(fused, key=lambda p: p.joints[:, 0].mean())
    np.testing.assert_allclose(got[0].joints, a, atol=1.0)
    np.testing.assert_allclose(got[1].joints, b, atol=1.0)
    # a view whose monocular 3D puts the person 3 m away is not that person, whatever the epipolar fit
    people = observe([a], cams[:2])
    people[1].poses3d[0] += [3000.0, 0, 0]
    assert fusion.fuse(people, cams[:2], SKEL) == []


def test_sigma_and_quality_follow_the_views_agreement():
    cams = _cameras(4)
    truth = body()
    clean = fusion.fuse(observe([truth], cams), cams, SKEL)[0]
    rng = np.random.default_rng(0)
    people = observe([truth], cams)
    for v in people:
        v.rays += rng.normal(0, 0.012, v.rays.shape)  # ~17 px of 2D noise
    noisy = fusion.fuse(people, cams, SKEL)[0]
    assert np.median(noisy.sigma_mm) > np.median(clean.sigma_mm)
    assert noisy.quality < clean.quality
    err = np.linalg.norm(noisy.joints - truth, axis=1)
    assert np.median(err) < 2 * np.median(noisy.sigma_mm) * np.sqrt(3)


# ------------------------------------------------------------------------------ world-space temporal step
def test_world_tracks_link_people_and_smoothing_keeps_one_body_size():
    t = np.arange(30)
    a = [body((-800 + 20 * i, 0, 0)) for i in t]
    b = [body((900 - 15 * i, 500, 0), 180) for i in t]
    centroids = [np.stack([b[i].mean(0), a[i].mean(0)]) if i % 2 else np.stack([a[i].mean(0), b[i].mean(0)])
                 for i in t]
    ids = world.link(t, centroids, world.WorldTrackConfig(fps=30))
    track_a = [int(ids[i][1] if i % 2 else ids[i][0]) for i in t]
    assert len(set(track_a)) == 1 and all(len(set(x.tolist())) == 2 for x in ids)
    rng = np.random.default_rng(1)
    noisy = np.stack(a) + rng.normal(0, 20, (len(t), len(NAMES), 3))
    out = world.smooth_track(t, noisy, np.full(noisy.shape[:2], 25.0), NAMES, EDGES, world.WorldTrackConfig(fps=30))
    err_in = np.linalg.norm(noisy - np.stack(a), axis=-1).mean()
    err_out = np.linalg.norm(out - np.stack(a), axis=-1).mean()
    assert err_out < 0.7 * err_in
    lengths = np.linalg.norm(out[:, [e[1] for e in EDGES]] - out[:, [e[0] for e in EDGES]], axis=-1)
    assert lengths.std(axis=0).max() < 2.0  # one body size for the whole track


# ------------------------------------------------------------------------------ split-view evaluation, real frame
@pytest.mark.slow
def test_split_view_evaluation_on_one_real_frame(estimator, tmp_path):
    from annotator.eval import multiview, rig

    settings = multiview.Settings(frames=1, skeleton="coco_19", ground_plane=True)
    report = rig.run(SINGLE, tmp_path, settings, model=estimator)
    s = report["summary"]
    assert report["splits"] == 3 and report["views"] == 4
    assert s["fused"]["n"] == s["two-view triangulation"]["n"] == 6  # 3 splits x 2 directions, one person
    assert s["monocular"]["n"] == 12
    # fused from two views is far closer to the other pair than either view's monocular label, and
    # about as close as the plain triangulation of the same views (paired, same joints)
    assert s["fused"]["root_relative_mpjpe_mm"] < 0.8 * s["monocular"]["root_relative_mpjpe_mm"]
    assert abs(s["fused"]["vs two-view triangulation"]["root_relative_mpjpe_mm"]["median"]) < 15
    assert all(0 < r["quality"] <= 1 for r in report["rows"] if r["method"] == "fused")
    saved = json.loads((tmp_path / "split_views.json").read_text())
    assert saved["summary"] == s and (tmp_path / "split_views.md").read_text().startswith("| label")
