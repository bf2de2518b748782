"""Combining augmentations (``estimator.aggregate``) on synthetic poses with known answers: label
swaps are found and repaired, and the consensus reconstruction puts the person where the 2D says."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from annotator.estimator import aggregate, skeletons

SK = skeletons.BLAZEPOSE_33
MIRROR = skeletons.mirror_indices(SK)


def _person(depth=3500.0, seed=0) -> np.ndarray:
    """A standing, slightly turned person [33,3] (camera frame, mm): left joints on one side."""
    rng = np.random.default_rng(seed)
    pose = np.zeros((33, 3), np.float64)
    for i, name in enumerate(SK.joint_names):
        side = 1.0 if name.startswith("left") or name.endswith("left") else -1.0 if "right" in name else 0.0
        if "shoulder" in name or "elbow" in name or "wrist" in name or "pinky" in name or "index" in name \
                or "thumb" in name:
            y = {"shoulder": -450, "elbow": -180, "wrist": 60}.get(name.split("_")[-1], 120)
            x = side * {"shoulder": 180, "elbow": 220}.get(name.split("_")[-1], 260)
        elif "hip" in name or "knee" in name or "ankle" in name or "heel" in name or "foot" in name:
            y = {"hip": 0, "knee": 420, "ankle": 820, "heel": 860}.get(name.split("_")[-1], 880)
            x = side * 100
        else:  # face
            y, x = -650 + 30 * ("mouth" in name), side * 40
        pose[i] = [x, y, 80.0 * side]
    pose += rng.normal(0, 5, pose.shape)
    return pose + [150.0, -100.0, depth]


def _observe(poses: np.ndarray):
    """Normalised 2D rays of absolute poses [..., J, 3]."""
    return poses[..., :2] / poses[..., 2:3]


def test_swapped_augmentations_are_found_and_repaired():
    truth = _person()
    a = 5
    per_aug = np.repeat(truth[None], a, 0) + np.random.default_rng(1).normal(0, 10, (a, 33, 3))
    swapped = [1, 3]  # two augmentations label left as right
    for i in swapped:
        per_aug[i] = per_aug[i][MIRROR]
    swaps = aggregate.label_swaps(tf.constant(per_aug[None], tf.float32), MIRROR).numpy()[0]
    assert swaps.tolist() == [i in swapped for i in range(a)]
    repaired = aggregate.apply_swaps(tf.constant(per_aug[None], tf.float32), swaps[None], MIRROR).numpy()[0]
    assert np.abs(repaired - truth).max() < 60


def test_a_majority_of_one_labelling_wins_whichever_it_is():
    truth = _person(seed=3)
    per_aug = np.stack([truth, truth[MIRROR], truth[MIRROR], truth[MIRROR]])
    swaps = aggregate.label_swaps(tf.constant(per_aug[None], tf.float32), MIRROR).numpy()[0]
    assert swaps.tolist() == [True, False, False, False]


def test_consensus_recovers_the_pose_where_the_mean_shrinks_it():
    truth = _person()
    a = 5
    per_aug = np.repeat(truth[None], a, 0)
    rays = _observe(per_aug)
    for i in (1, 3):
        per_aug[i] = per_aug[i][MIRROR]
        rays[i] = rays[i][MIRROR]
    conf = np.ones((a, 33))
    inside = np.ones((a, 33))
    pose, per_aug_out, swaps = aggregate.consensus(
        tf.constant(per_aug[None], tf.float32), tf.constant(rays[None], tf.float32),
        tf.constant(conf[None], tf.float32), tf.constant(inside[None], tf.float32), MIRROR, "translate")
    np.testing.assert_allclose(pose.numpy()[0], truth, atol=1.0)
    np.testing.assert_allclose(per_aug_out.numpy()[0].mean(0), pose.numpy()[0], atol=1e-3)
    assert swaps.numpy()[0].tolist() == [False, True, False, True, False]
    # the plain mean of the same augmentations puts left and right limbs on the midline
    mean = per_aug.mean(0)
    shoulder = (SK.joint_names.index("left_shoulder"), SK.joint_names.index("right_shoulder"))
    assert np.linalg.norm(mean[shoulder[0]] - mean[shoulder[1]]) < 0.5 * np.linalg.norm(
        truth[shoulder[0]] - truth[shoulder[1]])


def test_consensus_solves_one_translation_from_the_mean_2d():
    """Augmentations that agree on the shape but not on the depth: the depth follows the 2D."""
    truth = _person(depth=4000.0)
    a = 3
    rays = np.repeat(_observe(truth)[None], a, 0)
    per_aug = np.stack([truth + [0, 0, dz] for dz in (-300.0, 0.0, 300.0)])
    per_aug[0] += [40, 0, 0]
    pose, _, _ = aggregate.consensus(
        tf.constant(per_aug[None], tf.float32), tf.constant(rays[None], tf.float32),
        tf.ones([1, a, 33]), tf.ones([1, a, 33]), MIRROR, "translate")
    np.testing.assert_allclose(pose.numpy()[0], truth, atol=2.0)
    # and the result projects onto the observed 2D
    np.testing.assert_allclose(_observe(pose.numpy()[0]), _observe(truth), atol=1e-4)


def test_mean_of_disagreeing_augmentations_keeps_their_size():
    """Augmentations that each have the true bone lengths but turn the body by +-20 degrees: their
    plain mean is smaller (every bone shortened by cos 20 deg); the size-preserving mean is not, and
    the consensus pose's bones keep the true lengths."""
    truth = _person() - _person().mean(0)
    angles = np.radians([-20.0, -10.0, 0.0, 10.0, 20.0])
    rot = np.stack([[[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]] for t in angles])
    per_aug = np.einsum("aij,nj->ani", rot, truth)  # [A,J,3], each the same size as the truth
    size = lambda p: float(np.sqrt((p ** 2).sum(-1).mean()))  # noqa: E731
    plain = per_aug.mean(0)
    kept = aggregate.keep_size(tf.constant(per_aug.mean(0)[None], tf.float32),
                               tf.constant(per_aug[None], tf.float32)).numpy()[0]
    assert size(plain) < 0.997 * size(truth)  # only the horizontal extent shrinks
    assert abs(size(kept) - size(truth)) < 1e-3 * size(truth)
    np.testing.assert_allclose(kept / size(kept), plain / size(plain), atol=1e-5)  # same directions
    # a zoomed augmentation changes the size: the mean size is kept, not the largest
    scaled = per_aug * np.array([0.9, 1.0, 1.0, 1.0, 1.1])[:, None, None]
    kept = aggregate.keep_size(tf.constant(scaled.mean(0)[None], tf.float32),
                               tf.constant(scaled[None], tf.float32)).numpy()[0]
    assert abs(size(kept) - size(truth)) < 1e-3 * size(truth)


def test_mean_keeps_the_mean_bone_length_over_given_edges():
    """With bones given, the averaged shape's mean bone length is the augmentations' mean (the limbs
    are where augmentations disagree most; their RMS size would let the limbs shrink)."""
    truth = _person() - _person().mean(0)
    angles = np.radians([-25.0, -10.0, 0.0, 10.0, 25.0])
    # only the forearms turn (as a limb the augmentations disagree on)
    per_aug = np.repeat(truth[None], 5, 0)
    for name, elbow in (("left_wrist", "left_elbow"), ("right_wrist", "right_elbow")):
        w, e = SK.joint_names.index(name), SK.joint_names.index(elbow)
        for a, t in enumerate(angles):
            rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])  # swing sideways
            per_aug[a, w] = per_aug[a, e] + rot @ (truth[w] - truth[e])
    edges = np.array([(SK.joint_names.index(a), SK.joint_names.index(b)) for a, b in
                      (("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_hip", "left_knee"),
                       ("right_hip", "right_knee"))], np.int32)

    def bones(p):
        return float(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in edges]))

    kept = aggregate.keep_size(tf.constant(per_aug.mean(0)[None], tf.float32), tf.constant(per_aug[None], tf.float32),
                               tf.constant(edges)).numpy()[0]
    assert bones(per_aug.mean(0)) < 0.99 * bones(truth)
    assert abs(bones(kept) - bones(truth)) < 1e-3 * bones(truth)


def test_keep_size_in_2d_keeps_the_mean_bone_length_and_centroid():
    """The consensus's 2D evidence: augmentations that disagree on where a wrist is average to a
    shorter forearm; ``keep_size`` gives the mean back the augmentations' mean 2D bone length,
    about the mean's own centroid, without changing its directions."""
    truth = _person()[:, :2] / 1000.0  # normalised-coordinate-like 2D
    edges = np.array([(SK.joint_names.index(a), SK.joint_names.index(b)) for a, b in
                      (("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"))], np.int32)
    per_aug = np.repeat(truth[None], 4, 0)
    for a, t in enumerate(np.radians([-30.0, -10.0, 10.0, 30.0])):
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        for e, w in edges:
            per_aug[a, w] = per_aug[a, e] + rot @ (truth[w] - truth[e])
    mean = per_aug.mean(0)
    kept = aggregate.keep_size(tf.constant(mean[None], tf.float32), tf.constant(per_aug[None], tf.float32),
                               tf.constant(edges)).numpy()[0]

    def bones(p):
        return float(np.mean([np.linalg.norm(p[a] - p[b]) for a, b in edges]))

    assert bones(mean) < 0.98 * bones(truth)
    assert abs(bones(kept) - bones(truth)) < 1e-4
    np.testing.assert_allclose(kept.mean(0), mean.mean(0), atol=1e-6)
    scale = np.linalg.norm(kept - kept.mean(0)) / np.linalg.norm(mean - mean.mean(0))
    np.testing.assert_allclose(kept - kept.mean(0), scale * (mean - mean.mean(0)), atol=1e-6)


def test_keep_bones_restores_every_limb_bone_and_leaves_the_trunk():
    """Augmentations that disagree on the forearms only: one scale for the whole body (keep_size)
    would shorten the forearms and stretch the trunk; bone by bone, every limb bone has the
    augmentations' mean length and the trunk is the mean trunk."""
    from annotator.estimator import skeletons

    truth = _person() - _person().mean(0)
    per_aug = np.repeat(truth[None], 5, 0)
    for name, elbow in (("left_wrist", "left_elbow"), ("right_wrist", "right_elbow")):
        w, e = SK.joint_names.index(name), SK.joint_names.index(elbow)
        for a, t in enumerate(np.radians([-25.0, -10.0, 0.0, 10.0, 25.0])):
            rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
            per_aug[a, w] = per_aug[a, e] + rot @ (truth[w] - truth[e])
    chain = skeletons.limb_chain(SK)
    trunk = np.array(skeletons.trunk_edges(SK), np.int32)
    assert len(trunk) == 4 and chain
    kept = aggregate.keep_bones(tf.constant(per_aug.mean(0)[None], tf.float32), tf.constant(per_aug[None], tf.float32),
                                chain, tf.constant(trunk)).numpy()[0]
    for j, p in chain:  # (the hands did not follow the wrists: their bones vary, their mean is kept)
        expected = np.linalg.norm(per_aug[:, j] - per_aug[:, p], axis=-1).mean()
        np.testing.assert_allclose(np.linalg.norm(kept[j] - kept[p]), expected, rtol=1e-4)
    for name, elbow in (("left_wrist", "left_elbow"), ("right_wrist", "right_elbow")):
        w, e = SK.joint_names.index(name), SK.joint_names.index(elbow)
        assert np.linalg.norm(per_aug.mean(0)[w] - per_aug.mean(0)[e]) < 0.99 * np.linalg.norm(truth[w] - truth[e])
        np.testing.assert_allclose(np.linalg.norm(kept[w] - kept[e]), np.linalg.norm(truth[w] - truth[e]), rtol=1e-4)
    ids = sorted({i for e in trunk for i in e})
    np.testing.assert_allclose(kept[ids], per_aug.mean(0)[ids], atol=1e-3)
    # the wrists point where the augmentations' mean points
    w, e = SK.joint_names.index("left_wrist"), SK.joint_names.index("left_elbow")
    mean_dir = per_aug.mean(0)[w] - per_aug.mean(0)[e]
    np.testing.assert_allclose((kept[w] - kept[e]) / np.linalg.norm(kept[w] - kept[e]),
                               mean_dir / np.linalg.norm(mean_dir), atol=1e-5)


def test_another_networks_2d_is_weighted_into_the_evidence():
    """``extra`` (another network's 2D of some joints, with weights): weight 0 changes nothing; where
    it is weighted like the crop model's own confidence, the 2D evidence is their mean, which the
    blended pose's projection follows."""
    truth = _person(depth=4000.0)
    a = 3
    rays = np.repeat(_observe(truth)[None], a, 0)
    per_aug = np.repeat(truth[None], a, 0)
    args = (tf.constant(per_aug[None], tf.float32), tf.constant(rays[None], tf.float32),
            tf.ones([1, a, 33]), tf.ones([1, a, 33]), MIRROR, "blend")
    plain, _, _ = aggregate.consensus(*args)
    wrist = SK.joint_names.index("left_wrist")
    other = _observe(truth).copy()
    other[wrist] += [0.01, 0.0]  # the other network sees the left wrist 40 mm further right
    weight = np.zeros((1, 33), np.float32)
    unseen, _, _ = aggregate.consensus(*args, extra=(tf.constant(other[None], tf.float32), tf.constant(weight)))
    np.testing.assert_allclose(unseen.numpy(), plain.numpy(), atol=1e-3)
    weight[0, wrist] = 1.0
    seen, _, _ = aggregate.consensus(*args, extra=(tf.constant(other[None], tf.float32), tf.constant(weight)))
    moved = _observe(seen.numpy()[0]) - _observe(plain.numpy()[0])
    assert moved[wrist, 0] > 0.001  # towards the other opinion (blend: half the 2D's shift)
    others = [j for j in range(33) if j != wrist]
    assert np.abs(moved[others]).max() < 0.2 * moved[wrist, 0]
