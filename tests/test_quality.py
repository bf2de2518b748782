"""The quality score on synthetic people whose answer is known: a clean, consistent pose that fills
its box outranks noisy, implausible or misplaced ones; each term moves the score the right way."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotator.labels import quality

NAMES = ["head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
         "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
# A standing adult (mm, camera frame: x right, y down), bones at the reference lengths.
BODY = np.array([
    [0, -1600, 0], [-180, -1450, 0], [180, -1450, 0], [-180, -1160, 0], [180, -1160, 0], [-180, -910, 0],
    [180, -910, 0], [-100, -950, 0], [100, -950, 0], [-100, -530, 0], [100, -530, 0], [-100, -130, 0],
    [100, -130, 0]], np.float64)
K = np.array([[1000.0, 0, 640], [0, 1000.0, 480], [0, 0, 1]])
WIDTH, HEIGHT = 1280, 960


def person(depth: float = 4000.0) -> np.ndarray:
    return BODY + np.array([0.0, 850.0, depth])


def project(p: np.ndarray) -> np.ndarray:
    uvw = p @ K.T
    return uvw[..., :2] / uvw[..., 2:]


def box_around(p2d: np.ndarray, pad: float = 0.1) -> np.ndarray:
    lo, hi = p2d.min(0), p2d.max(0)
    size = hi - lo
    return np.concatenate([lo - pad * size, size * (1 + 2 * pad)])


def augs(p: np.ndarray, noise_mm: float, a: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return p[None] + rng.normal(0, noise_mm, (a, *p.shape))


def inputs(poses_aug: np.ndarray, det: float = 0.9, conf: float = 0.9, box=None):
    """One person's arguments to ``quality.score``: [1,A,J,3], box [1,5], conf [1,J], 2D [1,J,2]."""
    p2d = project(poses_aug.mean(0))
    b = box_around(p2d) if box is None else np.asarray(box, np.float64)
    return dict(poses_per_aug=poses_aug[None], boxes=np.append(b, det)[None],
                joint_confidences=np.full((1, len(NAMES)), conf), poses2d=p2d[None],
                joint_names=NAMES, image_size=(WIDTH, HEIGHT))


def q(**kw) -> float:
    return float(quality.score(**kw)[0])


def test_reference_bones_are_found_by_name_in_our_and_official_metrabs_skeletons():
    assert len(quality.bones_from_names(NAMES)) == 12
    smpl24 = "pelv,lhip,rhip,spi1,lkne,rkne,spi2,lank,rank,spi3,ltoe,rtoe,neck,lcla,rcla,head,lsho,rsho,lelb,relb," \
             "lwri,rwri,lhan,rhan".split(",")
    bones = quality.bones_from_names(smpl24)
    assert len(bones) == 12
    assert (smpl24.index("lsho"), smpl24.index("lelb"), 290.0) in bones
    assert (smpl24.index("rkne"), smpl24.index("rank"), 400.0) in bones  # 'rank' = right ankle
    assert quality.canonical_joint_name("LShoulder") == "l_shoulder"
    assert quality.canonical_joint_name("rear") is None and quality.canonical_joint_name("pelv") is None


def test_clean_person_scores_high_and_every_term_near_one():
    t = quality.terms(**inputs(augs(person(), 2.0), det=1.0, conf=1.0))
    for name in quality.TERMS:
        if name in ("presence", "keypoints", "agreement"):
            assert math.isnan(getattr(t, name)[0])  # not given: left out
        else:
            assert getattr(t, name)[0] > 0.95, name
    assert t.quality[0] > 0.95


def test_noisy_augmentations_score_lower_and_monotonically():
    base = person()
    values = [q(**inputs(augs(base, noise))) for noise in (0.0, 20.0, 60.0, 150.0, 400.0)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] > 0.85 and values[-1] < 0.5


def test_spread_ignores_a_per_augmentation_scale_and_depth_error():
    """MeTRAbs aligns scale across augmentations: a pose that is only bigger and farther (the
    monocular ambiguity) in one augmentation is not inconsistent."""
    p = person()
    scaled = np.stack([p * s for s in (0.8, 0.9, 1.0, 1.1, 1.25)])
    t = quality.terms(**inputs(scaled))
    assert t.spread_mm[0] < 1e-6 and t.spread[0] == pytest.approx(1.0)
    shifted = np.stack([p + [0, 0, dz] for dz in (-600, -300, 0, 300, 600)])  # depth, not scale
    assert quality.terms(**inputs(shifted)).spread_mm[0] > 20


def test_implausible_bones_score_lower_and_monotonically():
    values = []
    for stretch in (1.0, 1.3, 2.0, 3.0):
        p = person()
        p[5] = p[3] + (p[5] - p[3]) * stretch  # left forearm
        values.append(quality.terms(**inputs(augs(p, 5.0))).bones[0])
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] > 0.9 and values[-1] < 0.3
    # scale-free proportions: a child-sized (0.6x) body keeps most of its bones score
    child = BODY * 0.6 + np.array([0.0, 500.0, 3000.0])
    assert quality.terms(**inputs(augs(child, 5.0))).bones[0] > 0.7


def test_box_that_disagrees_with_the_2d_pose_scores_lower():
    p = augs(person(), 5.0)
    p2d = project(p.mean(0))
    good = box_around(p2d)
    values = []
    for shift in (0.0, 0.3, 0.6, 0.9):
        b = good + np.array([shift * good[2], 0, 0, 0])
        values.append(quality.terms(**inputs(p, box=b)).box[0])
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert values[0] > 0.9 and values[-1] < 0.1
    # a pose much larger than its box (box on a limb only) also fails
    limb = np.concatenate([p2d[5] - 20, [40, 40]])
    assert quality.terms(**inputs(p, box=limb)).box[0] < 0.1


def test_monotonic_in_detector_score_and_joint_confidence():
    p = augs(person(), 20.0)
    dets = [q(**inputs(p, det=s)) for s in (0.1, 0.3, 0.6, 0.9)]
    confs = [q(**inputs(p, conf=c)) for c in (0.1, 0.3, 0.6, 0.9)]
    assert all(a < b for a, b in zip(dets, dets[1:], strict=False)), dets
    assert all(a < b for a, b in zip(confs, confs[1:], strict=False)), confs


def test_known_value_of_the_weighted_geometric_mean():
    """With only detector score and confidences available (A = 1, no boxes' 2D, no names), the
    score is their geometric mean; with presence too, the cube root of the product."""
    p = person()[None, None]
    got = quality.score(p, scores=np.array([0.64]), joint_confidences=np.full((1, 13), 0.25))
    assert got[0] == pytest.approx(math.sqrt(0.64 * 0.25), rel=1e-5)
    got = quality.score(p, scores=np.array([0.64]), joint_confidences=np.full((1, 13), 0.25),
                        pose_scores=np.array([0.5]))
    assert got[0] == pytest.approx((0.64 * 0.25 * 0.5) ** (1 / 3), rel=1e-5)
    cfg = quality.QualityConfig(weights={"detector": 3.0, "confidence": 1.0})
    got = quality.score(p, scores=np.array([0.64]), joint_confidences=np.full((1, 13), 0.25), config=cfg)
    assert got[0] == pytest.approx((0.64 ** 3 * 0.25) ** 0.25, rel=1e-5)


def test_single_augmentation_and_official_metrabs_outputs_drop_terms():
    p = augs(person(), 30.0)
    full = quality.terms(**inputs(p))
    one = quality.terms(**inputs(p[:1]))
    assert math.isnan(one.spread[0]) and math.isnan(one.spread_mm[0]) and 0 <= one.quality[0] <= 1
    # A = 1: the score is the geometric mean of the remaining terms
    rest = [one.bones[0], one.box[0], one.detector[0], one.confidence[0]]
    assert one.quality[0] == pytest.approx(float(np.prod(rest)) ** (1 / 4), rel=1e-5)
    assert not math.isnan(full.spread[0])
    # official MeTRAbs: no confidences (and no presence score): those drop out, not count as 1 or 0
    kw = inputs(p)
    kw["joint_confidences"] = None
    off = quality.terms(**kw)
    assert math.isnan(off.confidence[0])
    num = sum(math.log(getattr(off, n)[0]) for n in ("spread", "bones", "box", "detector"))
    assert off.quality[0] == pytest.approx(math.exp(num / 4), rel=1e-5)
    # nothing known: NaN, never a guess
    assert math.isnan(quality.score(person()[None])[0])


def test_world_frame_poses_with_extrinsics_score_like_camera_frame():
    p = augs(person(), 40.0)
    angle = math.radians(30)
    rot = np.array([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]])
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, [100.0, -200.0, 1500.0]
    world = (p - ext[:3, 3]) @ rot  # inverse of x_cam = R x_world + t
    kw = inputs(p)
    cam_q = quality.terms(**kw)
    kw["poses_per_aug"] = world[None]
    world_q = quality.terms(**kw, extrinsics=ext)
    assert world_q.spread_mm[0] == pytest.approx(cam_q.spread_mm[0], rel=1e-6)
    assert world_q.quality[0] == pytest.approx(cam_q.quality[0], rel=1e-6)
    kw.pop("joint_names")  # without the extrinsics the scale alignment is about the wrong centre
    assert quality.terms(**kw).spread_mm[0] != pytest.approx(cam_q.spread_mm[0], rel=1e-3)


def test_bounds_on_random_inputs_and_empty_images():
    rng = np.random.default_rng(7)
    for _ in range(20):
        k, a, j = rng.integers(1, 4), rng.integers(1, 6), 13
        poses = rng.normal(0, 800, (k, a, j, 3)) + [0, 0, 3000]
        boxes = np.concatenate([rng.uniform(0, 500, (k, 2)), rng.uniform(1, 500, (k, 2)), rng.uniform(0, 1, (k, 1))], 1)
        got = quality.score(poses, boxes, rng.uniform(0, 1, (k, j)), rng.uniform(-100, 900, (k, j, 2)),
                            pose_scores=rng.uniform(0, 1, k), joint_names=NAMES)
        assert got.shape == (k,) and got.dtype == np.float32
        assert np.all((got >= 0) & (got <= 1)), got
    empty = quality.score(np.zeros((0, 5, 13, 3)), np.zeros((0, 5)), np.zeros((0, 13)), np.zeros((0, 13, 2)),
                          joint_names=NAMES)
    assert empty.shape == (0,)


def test_stored_person_is_scored_without_spread_and_stored_quality_is_read_when_present():
    p = person()
    p2d = project(p)
    row = {"joints3d_cam": p.tolist(), "joints2d": p2d.tolist(), "box": box_around(p2d).tolist(), "score": 0.8,
           "pose_score": None, "joint_confidences": [0.9] * 13}
    got = quality.score_stored_person(row, NAMES, (WIDTH, HEIGHT))
    t = quality.terms(p[None], np.append(box_around(p2d), 0.8)[None], np.full((1, 13), 0.9), p2d[None],
                      joint_names=NAMES, image_size=(WIDTH, HEIGHT))
    assert got == pytest.approx(float(t.quality[0]), rel=1e-6)
    assert quality.person_quality(row) is None
    assert quality.person_quality({**row, "quality": 0.25}) == 0.25


def keypoints_of(p2d: np.ndarray, offset_px: float = 0.0, score: float = 0.8, seed: int = 0) -> np.ndarray:
    """The detector's own keypoints [1,P,3] for the 2D joints [P,2], each moved ``offset_px`` in a
    random direction (a second network that places the joints elsewhere)."""
    angle = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(p2d))
    moved = p2d + offset_px * np.stack([np.cos(angle), np.sin(angle)], -1)
    return np.concatenate([moved, np.full((len(p2d), 1), score)], -1)[None]


def test_detector_keypoints_that_disagree_with_the_crop_model_score_lower_and_monotonically():
    kw = inputs(augs(person(), 20.0))
    p2d = kw["poses2d"][0]
    diagonal = float(np.linalg.norm(kw["boxes"][0, 2:4]))
    agree = [quality.terms(**kw, detector_keypoints=keypoints_of(p2d, f * diagonal), keypoint_poses2d=p2d[None])
             for f in (0.0, 0.02, 0.05, 0.1, 0.2)]
    values = [t.agreement[0] for t in agree]
    assert values[0] == pytest.approx(1.0)
    assert values[2] == pytest.approx(math.exp(-1.0), rel=1e-6)  # d = agreement_scale: exp(-1)
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values
    assert all(a.quality[0] > b.quality[0] for a, b in zip(agree, agree[1:], strict=False))
    assert all(t.keypoints[0] == pytest.approx(0.8) for t in agree)
    # lower keypoint scores: a lower score; only confident keypoints are compared
    low = quality.terms(**kw, detector_keypoints=keypoints_of(p2d, 0.0, score=0.4), keypoint_poses2d=p2d[None])
    assert low.keypoints[0] == pytest.approx(0.4) and low.quality[0] < agree[0].quality[0]
    unsure = keypoints_of(p2d, 0.5 * diagonal)
    unsure[0, 3:, 2] = 0.1  # the far-off keypoints are unsure, three sure ones agree exactly
    unsure[0, :3, :2] = p2d[:3]
    assert quality.terms(**kw, detector_keypoints=unsure, keypoint_poses2d=p2d[None]).agreement[0] == pytest.approx(1.0)


def test_boxes_from_the_caller_have_no_keypoint_terms():
    kw = inputs(augs(person(), 20.0))
    p2d = kw["poses2d"][0]
    given = keypoints_of(p2d, score=0.0)  # estimate_poses: the model reports score 0
    t = quality.terms(**kw, detector_keypoints=given, keypoint_poses2d=p2d[None])
    assert math.isnan(t.keypoints[0]) and math.isnan(t.agreement[0])
    assert t.quality[0] == pytest.approx(quality.terms(**kw).quality[0])
    two = keypoints_of(p2d)
    two[0, 2:, 2] = 0.05  # fewer than 3 confident keypoints: no agreement term
    assert math.isnan(quality.terms(**kw, detector_keypoints=two, keypoint_poses2d=p2d[None]).agreement[0])


def test_spread_counts_only_where_the_detector_keypoints_give_no_second_opinion():
    """With the agreement term, the augmentations' spread leaves the score (it is still reported):
    the same person scores the same at any spread; without keypoints a larger spread scores lower."""
    calm, shaky = inputs(augs(person(), 10.0)), inputs(augs(person(), 120.0))
    p2d = calm["poses2d"][0]
    kp = keypoints_of(p2d, 0.02 * float(np.linalg.norm(calm["boxes"][0, 2:4])))
    with_kp = [quality.terms(**kw, detector_keypoints=kp, keypoint_poses2d=p2d[None]) for kw in (calm, shaky)]
    assert with_kp[0].spread[0] > with_kp[1].spread[0]  # reported either way
    others = [n for n in quality.TERMS if n != "spread" and np.isfinite(getattr(with_kp[0], n)[0])]
    expected = math.exp(np.mean([math.log(getattr(with_kp[0], n)[0]) for n in others]))
    assert with_kp[0].quality[0] == pytest.approx(expected, rel=1e-5)
    without = [quality.terms(**kw) for kw in (calm, shaky)]
    assert without[0].quality[0] > without[1].quality[0]
    both = quality.QualityConfig(spread_only_without_agreement=False)
    counted = quality.terms(**shaky, detector_keypoints=kp, keypoint_poses2d=p2d[None], config=both)
    assert counted.quality[0] < with_kp[1].quality[0]
