"""Test-time augmentation schedule (MeTRAbs ``multiperson_model._estimate_poses_batched``).

Deterministic, indexed by augmentation i of A: gamma = lin(0.6, 1), rotation = lin(-25, 25) deg,
scale = lin(0.8, 1, A//2, no endpoint) then lin(1, 1.1, A - A//2), flip when (i - A//2) is odd
(the rotation and zoom extents are parameters; these are MeTRAbs' values).
``lin`` returns the midpoint for a single sample, so A = 1 gives (0.8, 0, 1.05, no flip).

``centred``: every augmentation perturbs the single crop instead of its own fixed range: gamma =
single gamma x lin(0.75, 1.25) (MeTRAbs' 0.6-1 is exactly 0.8 x that), zoom = single zoom x the
scale schedule, so the middle augmentation of an odd A IS the single crop. Why: the crop model's
metric size follows the zoom (BlazePose, measured per augmentation on Demo_SinglePerson: limb scale
0.947 at zoom 0.9 rising steadily to 0.978 at 1.1), so a schedule centred elsewhere than the single
crop moves the averaged body's size away from num_aug 1's instead of only averaging out noise.
"""

from __future__ import annotations

import math

import tensorflow as tf


def linspace(start, stop, num, endpoint=True) -> tf.Tensor:
    """MeTRAbs' ``tfu.linspace``: like numpy's, but one sample is the interval's midpoint."""
    start = tf.cast(start, tf.float32)
    stop = tf.cast(stop, tf.float32)
    num = tf.cast(num, tf.int32)
    nf = tf.cast(num, tf.float32)
    if endpoint:
        step = tf.math.divide_no_nan(stop - start, nf - 1.0)
        values = start + step * tf.range(nf)
        return tf.where(num == 1, tf.fill([num], (start + stop) / 2.0), values)
    step = tf.math.divide_no_nan(stop - start, nf)
    return start + step * tf.range(nf)


def schedule(num_aug, rotation_range_degrees: float = 25.0, kinds=("gamma", "rotation", "scale", "flip"),
             single_crop: tuple[float, float] = (0.8, 1.05), scale_range: tuple[float, float] = (0.8, 1.1),
             centred: bool = False):
    """Per-augmentation (gamma [A], roll radians [A], scale [A], flip bool [A]).

    Kinds not in ``kinds`` stay at their identity value (gamma 1, roll 0, scale 1, no flip; when
    ``centred``, the single crop's gamma and zoom), so each kind can be measured alone. num_aug = 1
    is one upright, unmirrored crop with ``single_crop`` = (gamma, zoom): MeTRAbs' midpoint
    (0.8, 1.05) by default. ``centred``: the augmentations are the single crop perturbed (module doc).
    """
    num_aug = tf.cast(num_aug, tf.int32)
    gammas = linspace(0.6, 1.0, num_aug)
    if centred:
        gammas = float(single_crop[0]) * linspace(0.75, 1.25, num_aug)
    angle = rotation_range_degrees * math.pi / 180.0
    rolls = linspace(-angle, angle, num_aug)
    half = num_aug // 2
    low, high = scale_range
    scales = tf.concat([linspace(low, 1.0, half, endpoint=False), linspace(1.0, high, num_aug - half)], 0)
    if centred:
        scales = float(single_crop[1]) * scales
    flips = tf.math.floormod(tf.range(num_aug) - half, 2) != 0
    ones, zeros = tf.ones_like(gammas), tf.zeros_like(gammas)
    # a kind left out stays at its identity: the single crop's value when centred
    gammas = (float(single_crop[0]) if centred else 1.0) * ones if "gamma" not in kinds else gammas
    rolls = zeros if "rotation" not in kinds else rolls
    scales = (float(single_crop[1]) if centred else 1.0) * ones if "scale" not in kinds else scales
    flips = tf.logical_and(flips, "flip" in kinds)
    single = num_aug == 1
    gammas = tf.where(single, tf.fill([num_aug], float(single_crop[0])), gammas)
    scales = tf.where(single, tf.fill([num_aug], float(single_crop[1])), scales)
    rolls = tf.where(single, zeros, rolls)
    flips = tf.logical_and(flips, tf.logical_not(single))
    return gammas, rolls, scales, flips


def unmirror_joints(values, flips, mirror_indices) -> tf.Tensor:
    """Swap left/right joints [A,K,J,...] for the augmentations whose crop was mirrored."""
    swapped = tf.gather(values, mirror_indices, axis=2)
    cond = tf.reshape(flips, [-1] + [1] * (len(values.shape) - 1))
    return tf.where(cond, swapped, values)
