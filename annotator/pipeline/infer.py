"""Inference stage: a batch of decoded images -> per-image predictions, through any SavedModel with
the official MeTRAbs API (ours or an official one). Loads the model once, in ``__init__``.

Images of one batch are grouped by size and each group goes through one ``detect_poses_batched``
call with per-image cameras, so nothing is padded or resized here and the model sees exactly the
pixels that were decoded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from annotator.labels import body_size, ground_plane, quality, uncertainty
from annotator.pipeline.encode import Prediction

log = logging.getLogger(__name__)

# Settings that shape the output but are not arguments of the model.
_NOT_MODEL_ARGS = ("average_aug", "min_quality", "ground_plane", "ground_height_mm", "body_prior")


@dataclass(frozen=True)
class InferenceSettings:
    """Arguments of ``detect_poses_batched`` that a job may set (official names and defaults,
    except ``num_aug``: 1 is the throughput-friendly default for pseudo-labelling at scale), plus
    ``min_quality``: people whose ``quality`` is below it are not written (0 keeps everyone).
    ``ground_plane``: for images with extrinsics, put each standing person's grounded foot on the
    floor (the plane ``X . world_up_vector = ground_height_mm`` in the world frame), which fixes
    their depth and metric scale (``annotator.labels.ground_plane``); people it cannot judge keep the
    monocular answer. Without extrinsics it does nothing. ``body_prior``: each person's metric size
    is fused from the network's, a population prior of adult bone lengths and the floor
    (``annotator.labels.body_size``); off, the network's size stands unless the floor decides.

    ``average_aug`` must stay True: the dataset stores the mean over augmentations. The stage always
    asks the model for the per-augmentation poses and averages them itself, because their spread
    is what ``people[].quality`` is made of."""

    skeleton: str = ""
    num_aug: int = 1
    average_aug: bool = True
    detector_threshold: float = 0.3
    detector_nms_iou_threshold: float = 0.7
    max_detections: int = -1
    detector_flip_aug: bool = False
    suppress_implausible_poses: bool = True
    antialias_factor: int = 1
    internal_batch_size: int = 64
    default_fov_degrees: float = 55.0
    world_up_vector: tuple[float, float, float] = (0.0, -1.0, 0.0)
    min_quality: float = 0.0
    ground_plane: bool = True
    ground_height_mm: float = 0.0
    body_prior: bool = True

    def plane(self) -> ground_plane.GroundPlane:
        return ground_plane.GroundPlane(up=self.world_up_vector, height_mm=self.ground_height_mm)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def model_kwargs(self) -> dict:
        import tensorflow as tf

        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_MODEL_ARGS}
        d["world_up_vector"] = tf.constant(self.world_up_vector, tf.float32)
        d["average_aug"] = False
        return d


def enable_gpu_memory_growth() -> list[str]:
    """Stop TensorFlow from grabbing all GPU memory (ray #13680); returns the visible GPUs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised
            pass
    return [g.name for g in gpus]


@dataclass
class ImageInput:
    image: np.ndarray  # HxWx3 uint8
    intrinsics: np.ndarray  # 3x3
    distortion: np.ndarray  # [D]
    extrinsics: np.ndarray | None  # 4x4 or None


class PoseInference:
    """Callable stage: ``infer(list[ImageInput]) -> list[Prediction]``.

    ``model`` is a SavedModel path (loaded here, once) or an already loaded model object (the
    evaluation's in-memory estimators). The pipeline and ``annotator eval`` both label through this
    class, so what is measured is what is written.
    """

    def __init__(self, model, settings: InferenceSettings):
        import tensorflow as tf

        self.gpus = enable_gpu_memory_growth()
        started = time.perf_counter()
        if isinstance(model, (str, os.PathLike)):
            self.model = tf.saved_model.load(str(model))
        else:
            self.model = model
        self.load_seconds = time.perf_counter() - started
        self.settings = settings
        self.skeleton = skeleton_of(self.model, settings.skeleton)
        self.num_joints = len(self.skeleton["joint_names"])
        # derived skeletons of annotator's own models: ask for the native joints and map afterwards
        # (the model's own mapping), so the ground plane sees toes and heels
        self._joint_map = native_joint_map(self.model, settings.skeleton)
        self._native_names = (skeleton_of(self.model, "")["joint_names"] if self._joint_map is not None
                              else self.skeleton["joint_names"])
        self._keypoints = detector_keypoint_joints(self.model, self._native_names)
        self._kwargs = settings.model_kwargs()
        if self._joint_map is not None:
            self._kwargs["skeleton"] = ""
        self.calls = 0
        self.infer_seconds = 0.0
        self.warmup_seconds: float | None = None

    def warm_up(self) -> float:
        """One call on a small black image, so the graph's one-off instantiation and optimisation
        (about 10 s on a CPU, most of a first call) happens while the job's first images are still
        being read and decoded, not on them. Returns the seconds it took."""
        import tensorflow as tf

        started = time.perf_counter()
        k = np.array([[[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]]], np.float32)
        self.model.detect_poses_batched(
            tf.zeros([1, 64, 64, 3], tf.uint8), intrinsic_matrix=tf.constant(k),
            distortion_coeffs=tf.zeros([1, 5]), extrinsic_matrix=tf.eye(4, batch_shape=[1]), **self._kwargs)
        self.warmup_seconds = time.perf_counter() - started
        return self.warmup_seconds

    def __call__(self, inputs: list[ImageInput]) -> list[Prediction]:
        import tensorflow as tf

        out: list[Prediction | None] = [None] * len(inputs)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, item in enumerate(inputs):
            groups[item.image.shape[:2]].append(i)
        for idx in groups.values():
            images = np.stack([inputs[i].image for i in idx])
            k = np.stack([inputs[i].intrinsics for i in idx]).astype(np.float32)
            ndist = max(5, max(len(inputs[i].distortion) for i in idx))
            dist = np.zeros((len(idx), ndist), np.float32)
            for j, i in enumerate(idx):
                dist[j, :len(inputs[i].distortion)] = inputs[i].distortion
            ext = np.stack([np.eye(4, dtype=np.float32) if inputs[i].extrinsics is None
                            else inputs[i].extrinsics for i in idx]).astype(np.float32)
            started = time.perf_counter()
            res = self.model.detect_poses_batched(
                tf.constant(images), intrinsic_matrix=tf.constant(k), distortion_coeffs=tf.constant(dist),
                extrinsic_matrix=tf.constant(ext), **self._kwargs)
            res = _per_image(res)
            self.infer_seconds += time.perf_counter() - started
            self.calls += 1
            for j, i in enumerate(idx):
                out[i] = self._prediction(res, j, inputs[i])
        return out  # type: ignore[return-value]

    def _prediction(self, res: dict, j: int, item: ImageInput) -> Prediction:
        """Image j's people: depth (ground plane where it applies) and its uncertainty, the
        requested skeleton, TTA means, quality from the per-augmentation spread, ``min_quality``."""
        boxes = res["boxes"][j]
        poses3d = res["poses3d"][j]
        poses2d = res["poses2d"][j]
        raw2d = res["poses2d_raw"][j] if "poses2d_raw" in res else None
        if poses3d.ndim == 3:  # a model that ignores average_aug=False: one "augmentation"
            poses3d, poses2d = poses3d[:, None], poses2d[:, None]
            raw2d = None if raw2d is None else raw2d[:, None]
        conf = res["joint_confidences"][j] if "joint_confidences" in res else None
        pose_scores = res["pose_scores"][j] if "pose_scores" in res else None
        keypoints = keypoint_poses2d = None
        if self._keypoints is not None and "detector_keypoints" in res:
            detector_idx, joint_idx = self._keypoints
            keypoints = res["detector_keypoints"][j][:, detector_idx]
            keypoint_poses2d = (poses2d if raw2d is None else raw2d)[..., joint_idx, :]
        height, width = item.image.shape[:2]
        size = self._body_size(poses3d, poses2d, conf, item, (width, height))
        poses3d = ground_plane.rescale(poses3d, item.extrinsics, size.scale[:, None])
        if self._joint_map is not None:
            poses3d, poses2d = map_joints(poses3d, self._joint_map), map_joints(poses2d, self._joint_map)
            raw2d = None if raw2d is None else map_joints(raw2d, self._joint_map)
            conf = None if conf is None else map_confidences(conf, self._joint_map)
        names = self.skeleton["joint_names"]
        q = quality.score(poses3d, boxes, conf, poses2d, pose_scores=pose_scores,
                          joint_names=names, extrinsics=item.extrinsics, image_size=(width, height),
                          detector_keypoints=keypoints, keypoint_poses2d=keypoint_poses2d)
        keep = ~(q < self.settings.min_quality)  # NaN (no evidence at all) is kept
        sigmas = uncertainty.for_people(poses3d, names, q, size.log_sigma, size.grounded, item.extrinsics).take(keep)
        sources = ["ground_plane" if g else "monocular" for g in size.grounded]
        return Prediction(boxes=boxes[keep], poses2d=poses2d.mean(axis=1)[keep],
                          poses3d=poses3d.mean(axis=1).astype(np.float32)[keep],
                          joint_confidences=None if conf is None else conf[keep],
                          pose_scores=None if pose_scores is None else pose_scores[keep], quality=q[keep],
                          depth_sigma_mm=sigmas.depth, joint_sigma_mm=sigmas.joint.astype(np.float32),
                          depth_source=[s for s, k in zip(sources, keep, strict=True) if k],
                          poses2d_raw=None if raw2d is None else raw2d.mean(axis=1)[keep],
                          sigma_terms=sigmas.terms)

    def _body_size(self, poses3d: np.ndarray, poses2d: np.ndarray, conf: np.ndarray | None, item: ImageInput,
                   image_size: tuple[int, int]) -> body_size.SizeEstimate:
        """Each person's size (``body_size``): the network's, the population's (``body_prior``) and
        the floor's where the image has extrinsics and ``ground_plane`` is on; native joints."""
        mean3d = poses3d.mean(axis=1)
        floor = floor_sigma = None
        if self.settings.ground_plane and item.extrinsics is not None:
            floor, floor_sigma = ground_plane.floor_scale(mean3d, self._native_names, item.extrinsics,
                                                          self.settings.plane(), confidences=conf,
                                                          poses2d=poses2d.mean(axis=1), image_size=image_size)
        return body_size.estimate(mean3d, self._native_names, conf, floor, floor_sigma,
                                  population=self.settings.body_prior)


class _Rows:
    """A batched output (ragged over images, or dense [N, ...]) as numpy, indexable per image.

    Why: indexing a ``tf.RaggedTensor`` per image is ~6 eager ops each; with five outputs that was
    ~5 ms of Python per image, which capped a cheap model's actor at ~200 images/s. One
    ``.numpy()`` of the values and row splits per call, then numpy slices, costs microseconds."""

    def __init__(self, value):
        self.nested = None  # ragged in more than one dimension: indexed per image as before
        self.splits = None
        if getattr(value, "ragged_rank", 0) > 1:
            self.nested = value
        elif hasattr(value, "row_splits"):
            self.values, self.splits = value.values.numpy(), value.row_splits.numpy()
        else:
            self.values = np.asarray(value)

    def __getitem__(self, j: int) -> np.ndarray:
        if self.nested is not None:
            return self.nested[j].numpy()
        if self.splits is None:
            return self.values[j]
        return self.values[self.splits[j]:self.splits[j + 1]]


def _per_image(res: dict) -> dict:
    return {key: _Rows(value) for key, value in res.items()}


def detector_keypoint_joints(model, joint_names: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(detector keypoint indices, joint indices) of the detector keypoints that share a name with a
    joint, for models that output ``detector_keypoints`` (annotator's); None for others."""
    if not hasattr(model, "detector_keypoint_names"):
        return None
    index = {n: i for i, n in enumerate(joint_names)}
    pairs = [(k, index[n.decode()]) for k, n in enumerate(model.detector_keypoint_names.numpy())
             if n.decode() in index]
    if len(pairs) < 3:
        return None
    return np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])


def native_joint_map(model, skeleton: str) -> np.ndarray | None:
    """[J, J_native] when ``skeleton`` is a derived skeleton of an annotator model (its joints are
    fixed affine combinations of the native ones, ``estimator.skeletons``); None otherwise (the
    native skeleton itself, or a model built elsewhere, e.g. an official MeTRAbs)."""
    if not skeleton or not hasattr(model, "annotator_info"):
        return None
    from annotator.estimator import skeletons

    native = tuple(n.decode() for n in model.joint_names.numpy())
    if native != skeletons.NATIVE.joint_names or skeleton not in skeletons.SKELETONS:
        return None
    if skeleton == skeletons.NATIVE.name:
        return None
    return skeletons.joint_matrix(skeletons.SKELETONS[skeleton], skeletons.NATIVE)


def map_joints(values: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """[..., J_native, C] -> [..., J, C] with a joint matrix [J, J_native] (as the model maps)."""
    return np.einsum("oj,...jc->...oc", matrix, values).astype(values.dtype)


def map_confidences(conf: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """[..., J_native] -> [..., J]: a derived joint is as sure as its least sure source."""
    used = matrix != 0
    return np.stack([conf[..., u].min(axis=-1) for u in used], axis=-1)


def skeleton_of(model, name: str) -> dict:
    """Joint names and edges of ``name`` ('' = all joints) as the loaded model reports them."""
    if name:
        if name not in model.per_skeleton_joint_names:
            valid = sorted(model.per_skeleton_joint_names.keys())
            raise ValueError(f"unknown skeleton {name!r}; this model has: {', '.join(valid)}")
        names = model.per_skeleton_joint_names[name].numpy()
        edges = model.per_skeleton_joint_edges[name].numpy()
    else:
        names = model.joint_names.numpy()
        edges = model.joint_edges.numpy()
    return {"name": name or "all",
            "joint_names": [n.decode() for n in names],
            "edges": np.asarray(edges, np.int64).reshape(-1, 2).tolist()}


def known_skeleton(model_path: str, skeleton: str) -> dict | None:
    """Joint names/edges of the requested skeleton from the model's build info, without loading
    it; None for a model without one (an official SavedModel: ask the model itself)."""
    from annotator.models import registry

    info = registry.info(model_path)
    skels = info.get("skeletons")
    if skels is None:
        return None
    key = skeleton or info["native_skeleton"]
    if key not in skels:
        raise ValueError(f"unknown skeleton {skeleton!r}; this model has: {', '.join(sorted(skels))}")
    return {"name": skeleton or "all", **skels[key]}


def load_skeleton(model_path: str, skeleton: str, reference: str | None = None,
                  storage_options: dict | None = None) -> dict:
    """The skeleton as the loaded model describes it (imports TensorFlow)."""
    import tensorflow as tf

    from annotator.models import loader

    path = loader.resolve(reference, build_missing=False, storage_options=storage_options).path \
        if reference else model_path
    return skeleton_of(tf.saved_model.load(path), skeleton)
