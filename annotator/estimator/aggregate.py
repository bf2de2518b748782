"""Combining one person's test-time augmentations into one pose, without the mean's failure modes.

MeTRAbs averages the augmentations' absolute poses. With a crop model that was not trained with
those augmentations, two things go wrong (measured by the ablation in ``docs/models.md``):

- **left/right disagreement**: when some augmentations label a limb "left" and others "right",
  the mean puts both limbs on the body's midline, which shortens limbs and pulls the pose
  towards the camera;
- **inconsistent depth**: each augmentation solves its own translation from its own crop, and the
  mean of absolute poses mixes shape and position errors.

``consensus`` fixes the labels first (each augmentation is compared with the one most others agree
with, with its joints as given and with left and right exchanged, and takes the closer labelling),
then averages the root-relative shape and the 2D evidence (each keeping the augmentations' mean
size: a plain mean of poses that disagree shrinks them), and solves ONE translation from them in
the source camera (``reconstruct``). All functions are batched over people K and augmentations A.
"""

from __future__ import annotations

import tensorflow as tf

from annotator.estimator import reconstruct


def centred(poses) -> tf.Tensor:
    """Poses [..., J, D] minus their joint centroid: shape without position."""
    return poses - tf.reduce_mean(poses, axis=-2, keepdims=True)


def mean_size(points, edges=None) -> tf.Tensor:
    """Size of poses [..., J, D] (D = 2 or 3): the mean length of the bones ``edges`` [E,2], or without
    edges the RMS distance of the joints from their centroid."""
    if edges is not None and edges.shape[0]:
        return tf.reduce_mean(tf.norm(tf.gather(points, edges[:, 0], axis=-2) - tf.gather(points, edges[:, 1], axis=-2),
                                      axis=-1), axis=-1)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(centred(points)), -1), -1))


def keep_size(mean, members, edges=None) -> tf.Tensor:
    """``mean`` [K,J,D] scaled about its centroid to its ``members``' [K,A,J,D] mean size.

    Averaging poses whose limbs point slightly different ways shortens every bone (two unit
    vectors 20 degrees apart average to length 0.98): measured, num_aug 5 made bodies 2.5 % smaller
    than num_aug 1, and a smaller body is reconstructed nearer the camera. The direction of each
    joint comes from the mean; the size is the members' mean size (``mean_size``: their mean bone
    length over ``edges``, or without edges their RMS distance from the centroid)."""
    ratio = tf.reduce_mean(mean_size(members, edges), axis=1) / tf.maximum(mean_size(mean, edges), 1e-9)
    centroid = tf.reduce_mean(mean, axis=-2, keepdims=True)
    return centroid + (mean - centroid) * ratio[:, tf.newaxis, tf.newaxis]


def keep_bones(mean, members, chain=(), edges=None) -> tf.Tensor:
    """``mean`` [K,J,D] of ``members`` [K,A,J,D] with the members' lengths: scaled about its centroid
    to their mean size over ``edges`` (``keep_size``), then every (joint, parent) bone of ``chain``
    (``skeletons.limb_chain``: outwards from the trunk) set to the members' mean length of that
    bone, along the mean's direction. Why bone by bone: augmentations disagree on the limbs, not
    on the trunk, so one scale for the whole body leaves the limbs short and the trunk long."""
    out = keep_size(mean, members, edges)
    if not chain:
        return out
    joints = tf.unstack(out, axis=-2)
    for j, p in chain:
        direction = mean[:, j] - mean[:, p]
        length = tf.reduce_mean(tf.norm(members[:, :, j] - members[:, :, p], axis=-1), axis=1)
        unit = direction / tf.maximum(tf.norm(direction, axis=-1, keepdims=True), 1e-9)
        joints[j] = joints[p] + unit * length[:, tf.newaxis]
    return tf.stack(joints, axis=-2)


def label_swaps(poses, mirror) -> tf.Tensor:
    """[K,A] True for augmentations whose left/right labels disagree with the consensus.

    poses: [K,A,J,3] (any frame); mirror: [J] each joint's left/right counterpart. The pivot is the
    augmentation that agrees as-is with the most others; an augmentation is swapped when its
    joints with left and right exchanged lie closer to the pivot's than as given.
    """
    rel = centred(poses)
    a = rel[:, :, tf.newaxis]  # [K,A,1,J,3]
    b = rel[:, tf.newaxis]  # [K,1,A,J,3]
    same = tf.reduce_mean(tf.norm(a - b, axis=-1), axis=-1)  # [K,A,A]
    swapped = tf.reduce_mean(tf.norm(a - tf.gather(b, mirror, axis=-2), axis=-1), axis=-1)
    agrees = tf.reduce_sum(tf.cast(same <= swapped, tf.int32), axis=-1)  # [K,A], includes itself
    pivot = tf.argmax(agrees, axis=-1, output_type=tf.int32)  # [K]
    to_pivot_same = tf.gather(same, pivot, axis=2, batch_dims=1)  # [K,A]
    to_pivot_swapped = tf.gather(swapped, pivot, axis=2, batch_dims=1)
    return to_pivot_swapped < to_pivot_same


def apply_swaps(values, swaps, mirror) -> tf.Tensor:
    """Exchange left/right joints of values [K,A,J,...] where swaps [K,A] is True."""
    exchanged = tf.gather(values, mirror, axis=2)
    cond = tf.reshape(swaps, tf.concat([tf.shape(swaps), tf.ones([len(values.shape) - 2], tf.int32)], 0))
    return tf.where(cond, exchanged, values)


def consensus(poses, rays, conf, inside, mirror, method: str = "blend", edges=None, chain=(),
              keep_lengths: str = "bones", extra=None):
    """One pose per person from A augmentations, plus the augmentations made consistent with it.

    poses: [K,A,J,3] absolute, source camera frame (each augmentation's own translation, its
    shape straight from the crop model); rays: [K,A,J,2] the crop model's 2D as undistorted
    normalised coordinates of the source camera; conf: [K,A,J]; inside: [K,A,J] 1 where the joint
    was inside its crop; method: ``reconstruct.reconstruct_absolute``'s; edges: [E,2] the bones
    whose mean length sets the averaged shape's (and 2D's) overall size, chain: the (joint, parent)
    bones then set one by one to their mean length (``keep_bones``). keep_lengths: ``bones`` (the
    3D shape and the 2D, the trunk by ``edges``' size, the limbs bone by bone), ``body`` (the 3D
    shape only, one scale from ``edges``), ``none`` (plain means). extra: optional (rays [K,J,2],
    weights [K,J]) of another 2D opinion, averaged into the 2D evidence (weight 0: not seen).

    Returns (pose [K,J,3], per-augmentation poses [K,A,J,3] with consistent labels, shifted so
    that their mean is ``pose`` (their spread, the quality score's evidence, is kept), swaps [K,A]).
    """
    swaps = label_swaps(poses, mirror)
    poses = apply_swaps(poses, swaps, mirror)
    rays = apply_swaps(rays, swaps, mirror)
    conf = apply_swaps(conf, swaps, mirror)
    inside = apply_swaps(inside, swaps, mirror)
    shapes = centred(poses)
    shape = tf.reduce_mean(shapes, axis=1)  # [K,J,3]
    if keep_lengths != "none":
        shape = keep_bones(shape, shapes, chain if keep_lengths == "bones" else (), edges)
    mean_conf = tf.reduce_mean(conf, axis=1)
    # 2D: confidence-weighted mean over augmentations (plain mean where no augmentation is sure)
    total = tf.reduce_sum(conf, axis=1)[..., tf.newaxis]
    weighted = tf.reduce_sum(rays * conf[..., tf.newaxis], axis=1) / tf.maximum(total, 1e-9)
    mean_rays = tf.where(total > 1e-9, weighted, tf.reduce_mean(rays, axis=1))
    # the 2D evidence shrinks under averaging as the 3D does (measured: num_aug 5's output limbs
    # 0.9 % shorter than its augmentations' 3D): keep the augmentations' mean 2D bone length too
    if keep_lengths == "bones":
        mean_rays = keep_bones(mean_rays, rays, chain, edges)
    if extra is not None:  # another network's 2D of the same joints: a confidence-weighted average
        extra_rays, extra_weight = extra
        weight = (mean_conf + extra_weight)[..., tf.newaxis]
        mixed = (mean_rays * mean_conf[..., tf.newaxis] + extra_rays * extra_weight[..., tf.newaxis]) / tf.maximum(
            weight, 1e-9)
        mean_rays = tf.where(weight > 1e-9, mixed, mean_rays)  # nobody sure of a joint: as it was
    k = tf.shape(shape)[0]
    identity = tf.eye(3, batch_shape=[k])
    majority_inside = tf.reduce_mean(inside, axis=1) > 0.5
    pose = reconstruct.reconstruct_absolute(mean_rays, shape, identity, mean_conf, method=method,
                                            inside=majority_inside)
    per_aug = poses - tf.reduce_mean(poses, axis=1, keepdims=True) + pose[:, tf.newaxis]
    return pose, per_aug, swaps
