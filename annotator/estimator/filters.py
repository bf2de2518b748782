"""Dropping garbage and duplicate poses (MeTRAbs ``plausibility_check.py``), as small pure functions.

Detectors fire on posters, reflections and half-visible limbs; the crop model then still returns a
"pose". Three cheap checks catch most of those, and a pose-space NMS removes the duplicates that
box NMS lets through (two boxes on one person give two nearly identical 3D poses):

- bone lengths: a bone is implausible when its length is < 0.1x or > 3x a typical adult's and
  differs from it by more than 300 mm (the absolute margin keeps short bones such as the face's
  from failing on millimetre noise);
- augmentation consistency: after RMS scale alignment across the test-time augmentations, more
  than J/4 joints must have a spread (std) under 200 mm; a crop with no person in it gives
  predictions that disagree between augmentations;
- box agreement: the 2D pose's bounding box and the detection box must overlap by more than half
  of the smaller of the two areas. MeTRAbs divides by the box area only (so truncated people, whose
  pose box sticks out of the image, pass); we also accept a pose that lies inside a box much wider
  than the person, because MoveNet's boxes often include held objects (the cameraman's tripod in
  ``samples/images/camera.png``: intersection / box area = 0.41, / pose area = 0.98). A pose
  collapsed to a point inside a box is caught by the bone check instead.

All functions take flat batches [K, ...]; ``pose_nms`` takes ``group`` ids so that poses of
different images never suppress each other (one NMS call for a whole batch).
"""

from __future__ import annotations

import tensorflow as tf


def bones_plausible(poses, edges, reference_lengths, rel_low=0.1, rel_high=3.0, abs_margin=300.0) -> tf.Tensor:
    """[K] True where no bone is both far off in ratio and in absolute length.

    poses: [K,J,3] mm; edges: [E,2] joint indices; reference_lengths: [E] mm (typical adult).
    """
    edges = tf.convert_to_tensor(edges, tf.int32)
    ref = tf.convert_to_tensor(reference_lengths, tf.float32)
    a = tf.gather(poses, edges[:, 0], axis=-2)
    b = tf.gather(poses, edges[:, 1], axis=-2)
    lengths = tf.norm(a - b, axis=-1)
    rel = lengths / ref
    bad = tf.logical_and(tf.logical_or(rel < rel_low, rel > rel_high), tf.abs(lengths - ref) > abs_margin)
    return tf.logical_not(tf.reduce_any(bad, axis=-1))


def scale_align(poses, axis=-3) -> tf.Tensor:
    """Scale each pose [..., J, 3] so its RMS coordinate equals the mean RMS over ``axis``."""
    sq = tf.reduce_mean(tf.square(poses), axis=(-2, -1), keepdims=True)
    mean_sq = tf.reduce_mean(sq, axis=axis, keepdims=True)
    return poses * tf.sqrt(mean_sq / tf.maximum(sq, 1e-12))


def augmentations_consistent(poses_per_aug, max_std=200.0) -> tf.Tensor:
    """[K] True where over J/4 joints have a cross-augmentation spread under ``max_std`` mm.

    poses_per_aug: [K,A,J,3]. With one augmentation the spread is zero and every pose passes.
    """
    aligned = scale_align(poses_per_aug, axis=1)
    var = tf.math.reduce_variance(aligned, axis=1)  # [K,J,3]
    std = tf.sqrt(tf.reduce_sum(var, axis=-1))  # [K,J]
    n_joints = tf.shape(poses_per_aug)[2]
    return tf.math.count_nonzero(std < max_std, axis=-1, dtype=tf.int32) > n_joints // 4


def pose_agrees_with_box(poses2d, boxes, min_fraction=0.5) -> tf.Tensor:
    """[K] True where pose box and box [K,4+] overlap by > ``min_fraction`` of the smaller area."""
    start = tf.reduce_min(poses2d, axis=-2)
    end = tf.reduce_max(poses2d, axis=-2)
    box_start = boxes[..., :2]
    box_end = boxes[..., :2] + boxes[..., 2:4]
    area = tf.minimum(tf.reduce_prod(boxes[..., 2:4], axis=-1), tf.reduce_prod(end - start, axis=-1))
    inter = tf.reduce_prod(tf.nn.relu(tf.minimum(end, box_end) - tf.maximum(start, box_start)), axis=-1)
    return inter > min_fraction * area


def pose_similarity(poses, distance_scale=300.0) -> tf.Tensor:
    """[K,K] similarity of 3D poses [K,J,3]: mean of relu(1 - d / 300 mm) over the J/4 largest joint
    distances d, after scaling each pair to a common RMS (so a depth error alone does not make two
    estimates of one person look different)."""
    sq = tf.reduce_mean(tf.square(poses), axis=(-2, -1), keepdims=True)  # [K,1,1]
    sq1, sq2 = sq[tf.newaxis], sq[:, tf.newaxis]
    mean_sq = (sq1 + sq2) / 2.0
    f1 = tf.sqrt(mean_sq / tf.maximum(sq1, 1e-12))
    f2 = tf.sqrt(mean_sq / tf.maximum(sq2, 1e-12))
    d = tf.norm(f1 * poses[tf.newaxis] - f2 * poses[:, tf.newaxis], axis=-1)  # [K,K,J]
    k = tf.maximum(tf.shape(poses)[-2] // 4, 1)
    largest = tf.math.top_k(d, k=k, sorted=False).values
    return tf.reduce_mean(tf.nn.relu(1.0 - largest / distance_scale), axis=-1)


def pose_nms(poses, scores, group, keep, threshold=0.4) -> tf.Tensor:
    """Boolean mask [K]: poses kept by greedy NMS on 3D pose similarity, highest score first.

    ``group`` [K] (e.g. image index): poses of different groups never suppress each other, so one
    call handles a whole batch. ``keep`` [K]: only these take part (implausible ones are dropped
    first, as in MeTRAbs). Returns True for the survivors.
    """
    k = tf.shape(poses)[0]
    candidates = tf.cast(tf.where(keep)[:, 0], tf.int32)
    p = tf.gather(poses, candidates)
    g = tf.gather(group, candidates)
    sim = pose_similarity(p)
    same = tf.cast(tf.equal(g[:, tf.newaxis], g[tf.newaxis]), sim.dtype)
    sim = sim * same
    kept = tf.image.non_max_suppression_overlaps(
        sim, tf.gather(scores, candidates), max_output_size=tf.maximum(tf.shape(candidates)[0], 1),
        overlap_threshold=threshold, score_threshold=float("-inf"))
    survivors = tf.gather(candidates, kept)
    return tf.scatter_nd(survivors[:, tf.newaxis], tf.ones_like(survivors, tf.bool), [k])
