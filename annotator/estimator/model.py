"""The estimator as one ``tf.Module`` with the official MeTRAbs API, exportable as a SavedModel.

``detect_poses(_batched)`` and ``estimate_poses(_batched)`` take the official argument names,
order and defaults (``../shared/reference/metrabs.md``), so code written for a MeTRAbs SavedModel
runs on ours and the pipeline treats both the same. Per box: a virtual-camera crop, an alignment
pass (BlazePose's ROI from its own landmarks), ``num_aug`` augmented crops, the crop model,
absolute reconstruction, back to the camera and world frames, then the skeleton's joints.

Extra outputs beyond the official ones (the pipeline uses them where present):
``joint_confidences`` [K,J], ``pose_scores`` [K] and ``poses2d_raw`` [K,J,2] (the crop model's own
2D detections mapped back to image pixels, as opposed to ``poses2d``, the projection of the 3D;
multi-view evaluation triangulates from these so its reference is independent of the 3D), and
``detector_keypoints`` [K,17,3] (the detector's own keypoints, x, y, score, named by
``detector_keypoint_names``; score 0 for boxes given to ``estimate_poses``).
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from annotator.estimator import aggregate, augment, camera, crops, detectors, filters, reconstruct, skeletons
from annotator.estimator.options import EstimatorOptions

UNKNOWN_INTRINSIC_MATRIX = ((-1.0, -1.0, -1.0), (-1.0, -1.0, -1.0), (-1.0, -1.0, -1.0))
DEFAULT_EXTRINSIC_MATRIX = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0),
                            (0.0, 0.0, 0.0, 1.0))
DEFAULT_DISTORTION = (0.0, 0.0, 0.0, 0.0, 0.0)
DEFAULT_WORLD_UP = (0.0, -1.0, 0.0)

_CAMERA_SPECS = [
    tf.TensorSpec((None, 3, 3), tf.float32, name="intrinsic_matrix"),
    tf.TensorSpec((None, None), tf.float32, name="distortion_coeffs"),
    tf.TensorSpec((None, 4, 4), tf.float32, name="extrinsic_matrix"),
    tf.TensorSpec((3,), tf.float32, name="world_up_vector"),
    tf.TensorSpec((), tf.float32, name="default_fov_degrees"),
    tf.TensorSpec((), tf.int32, name="internal_batch_size"),
    tf.TensorSpec((), tf.int32, name="antialias_factor"),
    tf.TensorSpec((), tf.int32, name="num_aug"),
    tf.TensorSpec((), tf.bool, name="average_aug"),
    tf.TensorSpec((), tf.string, name="skeleton"),
]
_SINGLE_CAMERA_SPECS = [
    tf.TensorSpec((3, 3), tf.float32, name="intrinsic_matrix"),
    tf.TensorSpec((None,), tf.float32, name="distortion_coeffs"),
    tf.TensorSpec((4, 4), tf.float32, name="extrinsic_matrix"),
] + _CAMERA_SPECS[3:]
_DETECTOR_SPECS = [
    tf.TensorSpec((), tf.float32, name="detector_threshold"),
    tf.TensorSpec((), tf.float32, name="detector_nms_iou_threshold"),
    tf.TensorSpec((), tf.int32, name="max_detections"),
    tf.TensorSpec((), tf.bool, name="detector_flip_aug"),
    tf.TensorSpec((), tf.bool, name="suppress_implausible_poses"),
]


class PoseEstimator(tf.Module):
    """Detector + crop model + MeTRAbs geometry. Knows nothing about files, Ray or Beam.

    ``options`` are the export-time switches (like MeTRAbs' frozen flags), one per step of the
    estimator; see ``options.EstimatorOptions``. They are recorded in ``annotator_info``.
    """

    def __init__(self, detector, crop_model, info: dict, options: EstimatorOptions | None = None, name=None):
        super().__init__(name=name)
        options = options or EstimatorOptions()
        self.options = options
        self.detector = detector
        self.crop_model = crop_model
        self.refine_crops = options.alignment and hasattr(crop_model, "alignment")
        self.pose_nms = options.pose_nms
        info = {**info, "estimator_options": options.to_dict()}
        native = crop_model.skeleton
        self._native = native
        self._native_mirror = skeletons.mirror_indices(native)
        if native.name == skeletons.NATIVE.name:
            skels = dict(skeletons.SKELETONS)
        else:
            skels = {native.name: native}
        names = sorted(skels)
        self._skeleton_names = names
        self.per_skeleton_joint_names = {
            s: tf.Variable(list(skels[s].joint_names), dtype=tf.string, trainable=False) for s in names}
        self.per_skeleton_joint_edges = {
            s: tf.Variable(np.array(skels[s].edges, np.int32).reshape(-1, 2), trainable=False) for s in names}
        # Which joints are computed from several native joints (an approximation), per skeleton.
        self.per_skeleton_derived_joints = {
            s: tf.Variable(list(skels[s].derived), dtype=tf.bool, trainable=False) for s in names}
        self.joint_names = tf.Variable(list(native.joint_names), dtype=tf.string, trainable=False)
        # names of ``detector_keypoints`` (the detector's own 2D, COCO-17 as BlazePose names them)
        self.detector_keypoint_names = tf.Variable(list(detectors.KEYPOINT_NAMES), dtype=tf.string,
                                                   trainable=False)
        self.joint_edges = tf.Variable(np.array(native.edges, np.int32).reshape(-1, 2), trainable=False)
        self._skeleton_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant([""] + names), tf.constant([-1] + list(range(len(names))), tf.int64)),
            default_value=-2)
        self._skeleton_matrices = [
            tf.constant(skeletons.joint_matrix(skels[s], native), tf.float32) for s in names]
        self._valid_skeletons = "'' (all), " + ", ".join(repr(s) for s in names)
        bones = native.bone_lengths
        self._bone_edges = tf.constant([list(e) for e, _ in bones] or np.zeros((0, 2)), tf.int32)
        self._bone_lengths = tf.constant([mm for _, mm in bones], tf.float32)
        # the consensus: trunk size from the trunk's bones, limbs averaged bone by bone
        self._trunk_edges = tf.constant(skeletons.trunk_edges(native) or np.zeros((0, 2)), tf.int32)
        self._limb_chain = tuple(skeletons.limb_chain(native))
        index = {n: i for i, n in enumerate(native.joint_names)}
        pairs = [(p, index[n]) for p, n in enumerate(detectors.KEYPOINT_NAMES) if n in index]
        self._keypoint_matrix = None
        if len(pairs) >= 3:
            m = np.zeros((detectors.NUM_KEYPOINTS, native.num_joints), np.float32)
            for p, j in pairs:
                m[p, j] = 1.0
            self._keypoint_matrix = tf.constant(m)
        self.annotator_info = tf.Variable(json.dumps(info, sort_keys=True), dtype=tf.string,
                                          trainable=False)

    # ----------------------------------------------------------------------------------- API
    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, name="images")]
                 + _CAMERA_SPECS + _DETECTOR_SPECS)
    def detect_poses_batched(
            self, images, intrinsic_matrix=(UNKNOWN_INTRINSIC_MATRIX,),
            distortion_coeffs=(DEFAULT_DISTORTION,), extrinsic_matrix=(DEFAULT_EXTRINSIC_MATRIX,),
            world_up_vector=DEFAULT_WORLD_UP, default_fov_degrees=55.0, internal_batch_size=64,
            antialias_factor=1, num_aug=5, average_aug=True, skeleton="", detector_threshold=0.3,
            detector_nms_iou_threshold=0.7, max_detections=-1, detector_flip_aug=False,
            suppress_implausible_poses=True):
        boxes = self.detector.detect(images, detector_threshold, detector_nms_iou_threshold,
                                     max_detections, detector_flip_aug)
        return self._estimate(images, boxes, intrinsic_matrix, distortion_coeffs, extrinsic_matrix,
                              world_up_vector, default_fov_degrees, internal_batch_size,
                              antialias_factor, num_aug, average_aug, skeleton,
                              suppress_implausible_poses)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8, name="image")]
                 + _SINGLE_CAMERA_SPECS + _DETECTOR_SPECS)
    def detect_poses(
            self, image, intrinsic_matrix=UNKNOWN_INTRINSIC_MATRIX,
            distortion_coeffs=DEFAULT_DISTORTION, extrinsic_matrix=DEFAULT_EXTRINSIC_MATRIX,
            world_up_vector=DEFAULT_WORLD_UP, default_fov_degrees=55.0, internal_batch_size=64,
            antialias_factor=1, num_aug=5, average_aug=True, skeleton="", detector_threshold=0.3,
            detector_nms_iou_threshold=0.7, max_detections=-1, detector_flip_aug=False,
            suppress_implausible_poses=True):
        images = image[tf.newaxis]
        boxes = self.detector.detect(images, detector_threshold, detector_nms_iou_threshold,
                                     max_detections, detector_flip_aug)
        result = self._estimate(images, boxes, intrinsic_matrix[tf.newaxis],
                                distortion_coeffs[tf.newaxis], extrinsic_matrix[tf.newaxis],
                                world_up_vector, default_fov_degrees, internal_batch_size,
                                antialias_factor, num_aug, average_aug, skeleton,
                                suppress_implausible_poses)
        return {k: v[0] for k, v in result.items()}

    @tf.function(input_signature=[
        tf.TensorSpec((None, None, None, 3), tf.uint8, name="images"),
        tf.RaggedTensorSpec((None, None, 4), tf.float32, ragged_rank=1)] + _CAMERA_SPECS)
    def estimate_poses_batched(
            self, images, boxes, intrinsic_matrix=(UNKNOWN_INTRINSIC_MATRIX,),
            distortion_coeffs=(DEFAULT_DISTORTION,), extrinsic_matrix=(DEFAULT_EXTRINSIC_MATRIX,),
            world_up_vector=DEFAULT_WORLD_UP, default_fov_degrees=55.0, internal_batch_size=64,
            antialias_factor=1, num_aug=5, average_aug=True, skeleton=""):
        boxes = _given_boxes(boxes)
        result = self._estimate(images, boxes, intrinsic_matrix, distortion_coeffs, extrinsic_matrix,
                                world_up_vector, default_fov_degrees, internal_batch_size,
                                antialias_factor, num_aug, average_aug, skeleton, False)
        del result["boxes"], result["detector_keypoints"]
        return result

    @tf.function(input_signature=[
        tf.TensorSpec((None, None, 3), tf.uint8, name="image"),
        tf.TensorSpec((None, 4), tf.float32, name="boxes")] + _SINGLE_CAMERA_SPECS)
    def estimate_poses(
            self, image, boxes, intrinsic_matrix=UNKNOWN_INTRINSIC_MATRIX,
            distortion_coeffs=DEFAULT_DISTORTION, extrinsic_matrix=DEFAULT_EXTRINSIC_MATRIX,
            world_up_vector=DEFAULT_WORLD_UP, default_fov_degrees=55.0, internal_batch_size=64,
            antialias_factor=1, num_aug=5, average_aug=True, skeleton=""):
        ragged = _given_boxes(tf.RaggedTensor.from_tensor(boxes[tf.newaxis]))
        result = self._estimate(image[tf.newaxis], ragged, intrinsic_matrix[tf.newaxis],
                                distortion_coeffs[tf.newaxis], extrinsic_matrix[tf.newaxis],
                                world_up_vector, default_fov_degrees, internal_batch_size,
                                antialias_factor, num_aug, average_aug, skeleton, False)
        del result["boxes"], result["detector_keypoints"]
        return {k: v[0] for k, v in result.items()}

    # ------------------------------------------------------------------------------ internals
    def _skeleton_index(self, skeleton):
        index = self._skeleton_table.lookup(skeleton)
        tf.debugging.Assert(index > -2, ["unknown skeleton", skeleton, "valid:", self._valid_skeletons])
        return index

    # One concrete function that all four API functions call: its body (crops, crop model,
    # geometry, filters: nearly the whole graph) is then stored once in the SavedModel, not once
    # per API function (with the detector shared the same way, load time went from ~19 s to ~3 s).
    @tf.function(input_signature=[
        tf.TensorSpec((None, None, None, 3), tf.uint8, name="images"),
        tf.RaggedTensorSpec((None, None, detectors.DETECTION_WIDTH), tf.float32, ragged_rank=1)]
        + _CAMERA_SPECS + [tf.TensorSpec((), tf.bool, name="suppress_implausible_poses")])
    def _estimate(self, images, boxes, intrinsic_matrix, distortion_coeffs, extrinsic_matrix,
                  world_up_vector, default_fov_degrees, internal_batch_size, antialias_factor,
                  num_aug, average_aug, skeleton, suppress_implausible_poses):
        skeleton_index = self._skeleton_index(skeleton)
        n_images = tf.shape(images)[0]
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        intrinsics = tf.broadcast_to(intrinsic_matrix, [n_images, 3, 3])
        intrinsics = camera.resolve_intrinsics(intrinsics, height, width, default_fov_degrees)
        distortion = camera.pad_distortion(distortion_coeffs)
        distortion = tf.broadcast_to(distortion, [n_images, camera.NUM_DISTORTION])
        extrinsics = tf.broadcast_to(extrinsic_matrix, [n_images, 4, 4])
        up_cam = tf.linalg.matvec(extrinsics[:, :3, :3], world_up_vector)

        box_image = tf.cast(boxes.value_rowids(), tf.int32)
        flat_boxes = boxes.flat_values[:, :5]
        box_k = tf.gather(intrinsics, box_image)
        box_dist = tf.gather(distortion, box_image)
        box_up = tf.gather(up_cam, box_image)
        num_aug = tf.maximum(num_aug, 1)
        antialias_factor = tf.maximum(antialias_factor, 1)
        poses3d, raw2d, conf, inside, scores = self._predict_in_chunks(
            images, flat_boxes, box_image, box_k, box_dist, box_up, internal_batch_size, num_aug,
            antialias_factor)
        # poses3d: [K, A, J, 3] camera frame (mm); raw2d: [K, A, J, 2] image px; conf, inside: [K, A, J]
        if self.options.aggregation == "consensus":
            rays = camera.pixels_to_rays(raw2d, box_k[:, tf.newaxis], box_dist[:, tf.newaxis])
            extra = None
            if self.options.keypoint_evidence > 0 and self._keypoint_matrix is not None:
                extra = self._keypoint_evidence(boxes.flat_values, raw2d, box_k, box_dist)
            _, poses3d, swaps = aggregate.consensus(poses3d, rays, conf, inside, self._native_mirror,
                                                    self.options.reconstruction, *self._length_args(),
                                                    extra=extra)
            raw2d = aggregate.apply_swaps(raw2d, swaps, self._native_mirror)
            conf = aggregate.apply_swaps(conf, swaps, self._native_mirror)
        poses2d = camera.project_distorted(poses3d, box_k[:, tf.newaxis], box_dist[:, tf.newaxis])

        keep = self._keep_mask(poses3d, poses2d, flat_boxes, box_image, suppress_implausible_poses)
        boxes = tf.ragged.boolean_mask(boxes, tf.RaggedTensor.from_row_lengths(keep, boxes.row_lengths()))
        poses3d, poses2d, raw2d, conf, scores, box_image = (
            tf.boolean_mask(x, keep) for x in (poses3d, poses2d, raw2d, conf, scores, box_image))

        box_ext = tf.gather(extrinsics, box_image)
        poses3d = camera.camera_to_world(poses3d, box_ext[:, tf.newaxis])
        poses3d = self._select_joints(poses3d, skeleton_index)
        poses2d = self._select_joints(poses2d, skeleton_index)
        raw2d = self._select_joints(raw2d, skeleton_index)
        conf = self._select_confidences(tf.reduce_mean(conf, axis=1), skeleton_index)
        if average_aug:
            poses3d = tf.reduce_mean(poses3d, axis=1)
            poses2d = tf.reduce_mean(poses2d, axis=1)
            raw2d = tf.reduce_mean(raw2d, axis=1)
        lengths = boxes.row_lengths()
        keypoints = tf.reshape(boxes.flat_values[:, 5:], [-1, detectors.NUM_KEYPOINTS, 3])
        return {
            "boxes": tf.RaggedTensor.from_row_lengths(boxes.flat_values[:, :5], lengths),
            "detector_keypoints": tf.RaggedTensor.from_row_lengths(keypoints, lengths),
            "poses3d": tf.RaggedTensor.from_row_lengths(poses3d, lengths),
            "poses2d": tf.RaggedTensor.from_row_lengths(poses2d, lengths),
            "poses2d_raw": tf.RaggedTensor.from_row_lengths(raw2d, lengths),
            "joint_confidences": tf.RaggedTensor.from_row_lengths(conf, lengths),
            "pose_scores": tf.RaggedTensor.from_row_lengths(scores, lengths),
        }

    def _keypoint_evidence(self, rows, raw2d, box_k, box_dist):
        """The detector's keypoints as (rays [K,J,2], weights [K,J]) on the native joints: weight
        ``keypoint_evidence`` x score where the keypoint is confident and near the crop model's own
        mean 2D of that joint (5 % of the box diagonal), else 0."""
        kp = tf.reshape(rows[:, 5:], [-1, detectors.NUM_KEYPOINTS, 3])
        m = self._keypoint_matrix  # [P,J] one-hot
        kp_px = tf.einsum("pj,kpc->kjc", m, kp[..., :2])
        score = tf.einsum("pj,kp->kj", m, kp[..., 2])
        own = tf.reduce_mean(raw2d, axis=1)  # [K,J,2] crop model's mean 2D (px)
        diagonal = tf.norm(rows[:, 2:4], axis=-1)[:, tf.newaxis]
        near = tf.norm(kp_px - own, axis=-1) < 0.05 * diagonal
        weight = tf.where((score >= 0.3) & near, self.options.keypoint_evidence * score, 0.0)
        return camera.pixels_to_rays(kp_px, box_k, box_dist), weight

    def _length_args(self) -> tuple:
        """(edges, chain, keep_lengths) for ``aggregate.consensus`` under ``options.keep_lengths``."""
        if self.options.keep_lengths == "bones":
            return self._trunk_edges, self._limb_chain, "bones"
        return self._bone_edges, (), self.options.keep_lengths

    def _keep_mask(self, poses3d, poses2d, boxes, box_image, suppress):
        """[K] bool: all True unless ``suppress``; then plausibility checks (+ 3D pose NMS)."""
        mean3d = tf.reduce_mean(poses3d, axis=1)
        plausible = tf.logical_and(
            filters.augmentations_consistent(poses3d),
            filters.pose_agrees_with_box(tf.reduce_mean(poses2d, axis=1), boxes))
        if self._bone_lengths.shape[0]:
            plausible = tf.logical_and(plausible, filters.bones_plausible(
                mean3d, self._bone_edges, self._bone_lengths))
        keep = plausible
        if self.pose_nms:
            keep = filters.pose_nms(mean3d, boxes[:, 4], box_image, plausible)
        return tf.logical_or(keep, tf.logical_not(suppress))

    def _select_joints(self, values, skeleton_index):
        """Map native joints [K, A, Jn, C] to the requested skeleton's [K, A, J, C]."""
        branches = [
            (lambda m=m: tf.einsum("kajc,oj->kaoc", values, m)) for m in self._skeleton_matrices]
        return tf.cond(
            skeleton_index < 0, lambda: values,
            lambda: tf.switch_case(tf.cast(tf.maximum(skeleton_index, 0), tf.int32), branches))

    def _select_confidences(self, conf, skeleton_index):
        """Native confidences [K, Jn] -> [K, J]: a derived joint is as sure as its least sure source."""
        def pick(m):
            used = tf.not_equal(m, 0.0)[tf.newaxis]  # [1, J, Jn]
            return tf.reduce_min(tf.where(used, conf[:, tf.newaxis], 1.0), axis=-1)

        branches = [(lambda m=m: pick(m)) for m in self._skeleton_matrices]
        return tf.cond(
            skeleton_index < 0, lambda: conf,
            lambda: tf.switch_case(tf.cast(tf.maximum(skeleton_index, 0), tf.int32), branches))

    def _predict_in_chunks(self, images, boxes, box_image, box_k, box_dist, box_up, internal_batch_size,
                           num_aug, antialias_factor):
        n_joints = self._native.num_joints
        n_boxes = tf.shape(boxes)[0]
        per_chunk = internal_batch_size // num_aug
        per_chunk = tf.where(per_chunk <= 0, tf.maximum(n_boxes, 1), per_chunk)
        n_chunks = (n_boxes + per_chunk - 1) // per_chunk
        # linear light: resampling and pyramid averaging are only physically right there. Without it
        # the pixels stay in 0..255 and the crops are divided by 255 after the warp (``_render``):
        # one pass over the crops instead of one over every full-size image
        opt = self.options
        linear = crops.to_linear(images, self._encoding_gamma) if opt.linear_light else tf.cast(images, tf.float32)
        pixels = crops.pixel_table(crops.build_pyramid(linear, levels=3 if opt.antialias else 1))

        def ta(shape):
            return tf.TensorArray(tf.float32, size=n_chunks, infer_shape=False, element_shape=tf.TensorShape(shape))

        poses_ta, raw_ta = ta([None, None, n_joints, 3]), ta([None, None, n_joints, 2])
        conf_ta, inside_ta, score_ta = ta([None, None, n_joints]), ta([None, None, n_joints]), ta([None])
        for i in tf.range(n_chunks):
            sl = slice(i * per_chunk, (i + 1) * per_chunk)
            p, r, c, ins, s = self._predict_chunk(pixels, boxes[sl], box_image[sl], box_k[sl], box_dist[sl],
                                                  box_up[sl], num_aug, antialias_factor)
            poses_ta, raw_ta = poses_ta.write(i, p), raw_ta.write(i, r)
            conf_ta, inside_ta, score_ta = conf_ta.write(i, c), inside_ta.write(i, ins), score_ta.write(i, s)
        empty = n_chunks == 0
        poses = tf.cond(empty, lambda: tf.zeros([0, num_aug, n_joints, 3]), poses_ta.concat)
        raw = tf.cond(empty, lambda: tf.zeros([0, num_aug, n_joints, 2]), raw_ta.concat)
        conf = tf.cond(empty, lambda: tf.zeros([0, num_aug, n_joints]), conf_ta.concat)
        inside = tf.cond(empty, lambda: tf.zeros([0, num_aug, n_joints]), inside_ta.concat)
        scores = tf.cond(empty, lambda: tf.zeros([0]), score_ta.concat)
        return poses, raw, conf, inside, scores

    @property
    def _encoding_gamma(self) -> float:
        return crops.DISPLAY_GAMMA if self.options.linear_light else 1.0

    def _render(self, pixels, box_image, box_k, box_dist, rot, crop_k, gamma, antialias_factor):
        lin = crops.warp(pixels.table, box_k, rot, crop_k, self.crop_model.input_resolution, box_image,
                         distortion=box_dist, antialias_factor=antialias_factor, pixels=pixels)
        if not self.options.linear_light:
            lin = lin / 255.0
        return crops.to_display(lin, gamma[:, tf.newaxis, tf.newaxis, tf.newaxis], self._encoding_gamma)

    def _predict_chunk(self, pixels, boxes, box_image, box_k, box_dist, box_up, num_aug, antialias_factor):
        """Boxes [k,5] of one chunk -> (poses3d [k,A,J,3] camera mm, raw 2D [k,A,J,2] image px,
        conf [k,A,J], inside-the-crop [k,A,J] (0/1), scores [k])."""
        cm = self.crop_model
        opt = self.options
        res = cm.input_resolution
        n_joints = self._native.num_joints
        k = tf.shape(boxes)[0]
        xywh = boxes[:, :4]
        roll0 = tf.zeros([k])
        if self.refine_crops:
            rot1, crop_k1 = crops.virtual_camera(xywh, box_k, box_up, res, box_scale=cm.box_scale,
                                                 distortion=box_dist, look_at=opt.virtual_camera)
            crop1 = self._render(pixels, box_image, box_k, box_dist, rot1, crop_k1, tf.ones([k]),
                                 antialias_factor)
            centre, side, roll, ok = cm.alignment(crop1)
            centre_img, _ = crops.crop_to_image_points(centre[:, tf.newaxis], box_k, rot1, crop_k1, box_dist)
            centre_img = centre_img[:, 0]
            side_img = side * box_k[:, 0, 0] / crop_k1[:, 0, 0]
            refined = tf.concat([centre_img - side_img[:, tf.newaxis] / 2,
                                 tf.stack([side_img, side_img], -1)], -1)
            xywh = tf.where(ok[:, tf.newaxis], refined, xywh)
            roll0 = tf.where(ok, roll, roll0)
            box_scale = tf.where(ok, 1.0, cm.box_scale)
        else:
            box_scale = tf.fill([k], float(cm.box_scale))

        gammas, rolls, scales, flips = augment.schedule(
            num_aug, opt.rotation_degrees, kinds=opt.aug_kinds, single_crop=opt.single_crop,
            scale_range=opt.scale_range, centred=opt.tta_centred)
        a = tf.shape(gammas)[0]

        def tile(x):  # [k, ...] -> [A*k, ...] (aug-major)
            return tf.reshape(tf.tile(x[tf.newaxis], tf.concat([[a], tf.ones_like(tf.shape(x))], 0)),
                              tf.concat([[a * k], tf.shape(x)[1:]], 0))

        def per_aug(x):  # [A] -> [A*k]
            return tf.repeat(x, k)

        rot, crop_k = crops.virtual_camera(
            tile(xywh), tile(box_k), tile(box_up), res, box_scale=tile(box_scale),
            roll=tile(roll0) + per_aug(rolls), aug_scale=per_aug(scales), flip=per_aug(flips),
            distortion=tile(box_dist), look_at=opt.virtual_camera)
        crop_images = self._render(pixels, tile(box_image), tile(box_k), tile(box_dist), rot, crop_k,
                                   per_aug(gammas), antialias_factor)
        # with the consensus, the per-augmentation poses keep the 3D head's shape; the chosen
        # reconstruction is applied once, to the combined evidence (``aggregate.consensus``)
        method = opt.reconstruction
        if opt.aggregation == "consensus":
            method = "translate_all" if method == "translate_all" else "translate"
        pred = cm.predict(crop_images, crop_k, reconstruction=method)
        inside = tf.cast(reconstruct.in_crop_mask(pred["coords2d"], res), tf.float32)
        # crop camera -> source camera: P = R^T P' (row vectors: P' R)
        poses = tf.linalg.matmul(pred["poses3d"], rot)
        raw2d, _ = crops.crop_to_image_points(pred["coords2d"], tile(box_k), rot, crop_k, tile(box_dist))
        poses = tf.reshape(poses, [a, k, n_joints, 3])
        raw2d = tf.reshape(raw2d, [a, k, n_joints, 2])
        conf = tf.reshape(pred["joint_confidences"], [a, k, n_joints])
        inside = tf.reshape(inside, [a, k, n_joints])
        scores = tf.reduce_mean(tf.reshape(pred["pose_scores"], [a, k]), axis=0)
        poses = augment.unmirror_joints(poses, flips, self._native_mirror)
        raw2d = augment.unmirror_joints(raw2d, flips, self._native_mirror)
        conf = augment.unmirror_joints(conf, flips, self._native_mirror)
        inside = augment.unmirror_joints(inside, flips, self._native_mirror)
        return (tf.transpose(poses, [1, 0, 2, 3]), tf.transpose(raw2d, [1, 0, 2, 3]),
                tf.transpose(conf, [1, 0, 2]), tf.transpose(inside, [1, 0, 2]), scores)


def _given_boxes(boxes):
    """Caller's boxes [N, None, 4] -> detection rows: score 1, no detector keypoints (score 0)."""
    return tf.concat([boxes, tf.ones_like(boxes[..., :1]),
                      tf.zeros_like(tf.tile(boxes[..., :1], [1, 1, 3 * detectors.NUM_KEYPOINTS]))], axis=-1)


def signatures(module: PoseEstimator) -> dict:
    """Serving signatures for tools that only speak signatures (TF Serving, saved_model_cli)."""
    return {"serving_default": module.detect_poses}
