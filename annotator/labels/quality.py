"""Per-person quality score in [0, 1]: how much to trust one pseudo-label, from the model's own outputs.

Why a score at all: pseudo-labels are only worth training on when bad ones can be dropped. The
estimator already computes (and throws away) the evidence: the spread of the pose across test-time
augmentations, MeTRAbs' three plausibility checks (which it applies as hard pass/fail) and the
detector / per-joint confidences. This module turns each into a smooth term in (0, 1] and combines
them, so users can rank and filter instead of living with one fixed threshold.

Pure numpy (no TF, Ray or pyarrow): the pipeline calls it on model outputs, and ``filter``/``report``
can call it on stored rows.

Terms (each is 1 for a perfect label and falls towards 0; every term is optional):

``spread``  (MeTRAbs check (b)) needs ``A >= 2`` augmentations. Each augmentation's pose is scaled
    about the camera centre so its RMS equals the mean RMS over augmentations (removing the
    depth/size ambiguity that a monocular estimate is allowed to have), then per joint the
    cross-augmentation standard deviation ``std_j`` (mm, 3D) is taken.
    ``spread = exp(-mean_j(std_j) / spread_scale_mm)``.
``bones``  (check (a)) needs joint names (or explicit bones). For the limb/torso bones found by
    name (shoulder-elbow, elbow-wrist, hip-knee, knee-ankle, shoulder-hip, shoulder and hip width)
    with typical adult lengths ``ref_e``: ``r_e = L_e / ref_e``, ``m = median_e(r_e)`` (overall
    size), ``d_e = ln(r_e / m)`` (proportions, scale-free so a child or a depth error is not a
    broken pose). ``bones = exp(-(mean_e d_e^2 + max_e d_e^2) / (4 sigma_p^2)) *
    exp(-(ln m)^2 / (2 sigma_s^2))`` with sigma_p = ln 1.5, sigma_s = ln 2. The max keeps one absurd
    bone from being averaged away.
``box``  (check (c)) needs 2D joints and the detection box. ``c`` = area(2D pose bbox ∩ box) /
    area(box) (MeTRAbs' criterion, which passes at c > 0.5), ``p`` = area(∩) / area(2D pose bbox,
    clipped to the image when its size is given). ``box = logistic((c - c0) / w) *
    logistic((p - c0) / w)`` with c0 = 0.4, w = 0.08.
``detector``  the detector score (1 for given boxes).
``presence``  the crop model's person-presence score (``pose_score``), when the model has one.
``confidence``  mean per-joint confidence, when the model has them (an official MeTRAbs has none).
``keypoints``  mean score of the detector's own keypoints for this person (MoveNet's 17), when the
    model outputs them (``detector_keypoints``; not for boxes given by the caller).
``agreement``  the detector's keypoints are a second, independent 2D opinion of the same person:
    ``d`` = median over keypoints scored >= ``keypoint_min_score`` of the distance to the crop
    model's own 2D joint of the same name, divided by the box diagonal;
    ``agreement = exp(-d / agreement_scale)``. Two networks that disagree on where a joint is
    flag exactly the crops a single network is confidently wrong about (a swapped or misplaced limb).

``spread`` counts only where ``agreement`` is unavailable (``spread_only_without_agreement``): both
measure how unstable the prediction is (Spearman with the root-relative error at num_aug 5, alone:
agreement -0.65, spread -0.21 on Demo_SinglePerson; -0.26 and -0.27 on Demo_MultiPerson), and with
both in, the spread only diluted the ranking on both clips (combined -0.60 -> -0.65 and -0.41 ->
-0.42 without it). Official MeTRAbs models and boxes from the caller have no
detector keypoints: for them the spread stays MeTRAbs' evidence. A side effect that users want:
the score then means the same at every num_aug.

Combination: the weighted geometric mean of the available terms,
``quality = exp(sum_k w_k ln t_k / sum_k w_k)`` (default weights: all 1). A
geometric mean keeps the score in [0, 1], is increasing in every term, and lets one failed check
pull the score down. A missing term is left out of both sums (not counted as 1), so the score
stays on the same [0, 1] scale with fewer terms.

How it degrades:

- ``A = 1`` (``num_aug=1``): no spread. With detector keypoints (annotator's models) nothing else
  changes; without them (official MeTRAbs, given boxes) the score cannot see crops whose
  prediction is unstable and is optimistic for exactly those: there, compare scores only between
  rows with the same ``num_aug`` (file settings).
- Official MeTRAbs models: no joint confidences and no presence score; their joint names
  (``lsho``, ``lelb``, ...) are recognised, so spread, bones, box and detector remain.
- A person with no term available (e.g. A = 1, no boxes, unknown names) gets NaN, never a guess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

TERMS = ("spread", "bones", "box", "detector", "presence", "confidence", "keypoints", "agreement")

# Typical adult lengths (mm) between joint centres, by canonical joint name (side + part).
# Rough anthropometric means (a 1.7 m adult); the bones term is tolerant (sigma = ln 1.5).
REFERENCE_BONES_MM: dict[tuple[str, str], float] = {
    ("l_shoulder", "r_shoulder"): 360.0,
    ("l_hip", "r_hip"): 200.0,
    ("l_shoulder", "l_elbow"): 290.0, ("r_shoulder", "r_elbow"): 290.0,
    ("l_elbow", "l_wrist"): 250.0, ("r_elbow", "r_wrist"): 250.0,
    ("l_shoulder", "l_hip"): 500.0, ("r_shoulder", "r_hip"): 500.0,
    ("l_hip", "l_knee"): 420.0, ("r_hip", "r_knee"): 420.0,
    ("l_knee", "l_ankle"): 400.0, ("r_knee", "r_ankle"): 400.0,
}
_PARTS = {"sho": "shoulder", "elb": "elbow", "wri": "wrist", "hip": "hip", "kne": "knee", "ank": "ankle"}


@dataclass(frozen=True)
class QualityConfig:
    """Scales and weights of the score. Defaults were chosen on the default model's sample photos
    (TTA spread of 50-240 mm at num_aug=5, box coverage 0.45-0.8); they are heuristics to rank by,
    not calibrated probabilities. Every term weighs the same: on the two calibrated Pose2Sim clips no
    weighting ranked clearly better, and spread at twice the weight ranked worse at num_aug 5 (the
    spread of well-behaved augmentations says little about the error; docs/models.md)."""

    spread_scale_mm: float = 150.0
    bone_proportion_sigma: float = math.log(1.5)
    bone_size_sigma: float = math.log(2.0)
    box_center: float = 0.4
    box_width: float = 0.08
    agreement_scale: float = 0.05
    keypoint_min_score: float = 0.3
    weights: dict[str, float] = field(default_factory=lambda: {
        "spread": 1.0, "bones": 1.0, "box": 1.0, "detector": 1.0, "presence": 1.0, "confidence": 1.0,
        "keypoints": 1.0, "agreement": 1.0})
    floor: float = 1e-6  # terms are clipped to [floor, 1] before the log
    spread_only_without_agreement: bool = True  # see the module doc


@dataclass
class QualityTerms:
    """Each term per person [K] (NaN where unavailable) and the combined ``quality`` [K]."""

    spread: np.ndarray
    bones: np.ndarray
    box: np.ndarray
    detector: np.ndarray
    presence: np.ndarray
    confidence: np.ndarray
    keypoints: np.ndarray
    agreement: np.ndarray
    quality: np.ndarray
    spread_mm: np.ndarray  # mean cross-augmentation std (mm) behind ``spread``; NaN when A = 1


def canonical_joint_name(name: str) -> str | None:
    """``left_shoulder``, ``lsho``, ``LShoulder``, ``l_shoulder`` -> ``l_shoulder``; None if not a
    limb/torso joint we know (official MeTRAbs skeletons abbreviate, ours spell out)."""
    s = re.sub(r"[^a-z]", "", name.lower())
    for prefix, side in (("left", "l"), ("right", "r"), ("l", "l"), ("r", "r")):
        if s.startswith(prefix):
            rest = s[len(prefix):]
            for short, part in _PARTS.items():
                if rest.startswith(short) and part.startswith(rest[:len(part)]):
                    return f"{side}_{part}"
    return None


def bones_from_names(joint_names: Sequence[str]) -> list[tuple[int, int, float]]:
    """``(joint a, joint b, typical mm)`` for every reference bone whose both ends are named."""
    index: dict[str, int] = {}
    for i, name in enumerate(joint_names):
        canon = canonical_joint_name(name)
        if canon is not None:
            index.setdefault(canon, i)
    return [(index[a], index[b], mm) for (a, b), mm in REFERENCE_BONES_MM.items() if a in index and b in index]


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def spread_mm(poses_per_aug: np.ndarray) -> np.ndarray:
    """[K] mean over joints of the cross-augmentation std (mm) after RMS scale alignment about the
    camera centre (MeTRAbs ``scale_align``); 0 for A = 1. ``poses_per_aug``: [K,A,J,3] camera frame."""
    p = np.asarray(poses_per_aug, np.float64)
    sq = np.mean(p ** 2, axis=(-2, -1), keepdims=True)  # [K,A,1,1]
    aligned = p * np.sqrt(np.mean(sq, axis=1, keepdims=True) / np.maximum(sq, 1e-12))
    std = np.sqrt(np.sum(np.var(aligned, axis=1), axis=-1))  # [K,J]
    return std.mean(axis=-1)


def bones_term(poses: np.ndarray, bones: Sequence[tuple[int, int, float]], config: QualityConfig) -> np.ndarray:
    """[K] bone-length plausibility of mean poses [K,J,3] (see module doc); NaN without bones."""
    if not bones:
        return np.full(len(poses), np.nan)
    a = np.array([b[0] for b in bones])
    b = np.array([b[1] for b in bones])
    ref = np.array([b[2] for b in bones], np.float64)
    lengths = np.linalg.norm(poses[:, a] - poses[:, b], axis=-1)  # [K,E]
    ratio = np.maximum(lengths, 1e-3) / ref
    size = np.median(ratio, axis=-1, keepdims=True)
    d2 = np.log(ratio / size) ** 2
    proportions = np.exp(-(d2.mean(-1) + d2.max(-1)) / (4 * config.bone_proportion_sigma ** 2))
    overall = np.exp(-np.log(size[:, 0]) ** 2 / (2 * config.bone_size_sigma ** 2))
    return proportions * overall


def box_term(poses2d: np.ndarray, boxes: np.ndarray, config: QualityConfig,
             image_size: tuple[int, int] | None = None) -> np.ndarray:
    """[K] agreement of the 2D pose [K,J,2] with its detection box [K,4+] (x, y, w, h)."""
    start, end = poses2d.min(axis=-2), poses2d.max(axis=-2)
    if image_size is not None:
        start = np.clip(start, 0, image_size)
        end = np.clip(end, 0, image_size)
    box_start, box_end = boxes[:, :2], boxes[:, :2] + boxes[:, 2:4]
    inter = np.prod(np.clip(np.minimum(end, box_end) - np.maximum(start, box_start), 0, None), axis=-1)
    coverage = inter / np.maximum(np.prod(boxes[:, 2:4], axis=-1), 1e-6)
    precision = inter / np.maximum(np.prod(end - start, axis=-1), 1e-6)
    w, c0 = config.box_width, config.box_center
    return _logistic((coverage - c0) / w) * _logistic((np.minimum(precision, 1.0) - c0) / w)


def agreement_term(detector_keypoints: np.ndarray, poses2d: np.ndarray, boxes: np.ndarray,
                   config: QualityConfig) -> np.ndarray:
    """[K] agreement of the detector's keypoints [K,P,3] (x, y, score) with the crop model's 2D at
    the same joints [K,P,2], relative to the box diagonal; NaN with fewer than 3 confident keypoints."""
    kp = np.asarray(detector_keypoints, np.float64)
    dist = np.linalg.norm(kp[..., :2] - np.asarray(poses2d, np.float64), axis=-1)  # [K,P]
    ok = (kp[..., 2] >= config.keypoint_min_score) & np.isfinite(dist)
    diagonal = np.maximum(np.linalg.norm(np.asarray(boxes, np.float64)[:, 2:4], axis=-1), 1e-6)
    out = np.full(len(kp), np.nan)
    for i in range(len(kp)):
        if ok[i].sum() >= 3:
            out[i] = np.exp(-np.median(dist[i, ok[i]]) / diagonal[i] / config.agreement_scale)
    return out


def _to_camera(poses: np.ndarray, extrinsics: np.ndarray | None) -> np.ndarray:
    """World-frame poses [K,A,J,3] -> camera frame with world->camera ``extrinsics`` [4,4] or [K,4,4]."""
    if extrinsics is None:
        return poses
    ext = np.asarray(extrinsics, np.float64)
    if ext.ndim == 2:
        ext = np.broadcast_to(ext, (len(poses), 4, 4))
    rot, t = ext[:, :3, :3], ext[:, :3, 3]
    return np.einsum("kij,kanj->kani", rot, poses) + t[:, None, None, :]


def terms(poses_per_aug: np.ndarray, boxes: np.ndarray | None = None, joint_confidences: np.ndarray | None = None,
          poses2d: np.ndarray | None = None, *, scores: np.ndarray | None = None,
          pose_scores: np.ndarray | None = None, joint_names: Sequence[str] | None = None,
          bones: Sequence[tuple[int, int, float]] | None = None, extrinsics: np.ndarray | None = None,
          image_size: tuple[int, int] | None = None, detector_keypoints: np.ndarray | None = None,
          keypoint_poses2d: np.ndarray | None = None, config: QualityConfig | None = None) -> QualityTerms:
    """All terms and the combined score for the K people of one image. Arguments as in :func:`score`."""
    config = config or QualityConfig()
    p = np.asarray(poses_per_aug, np.float64)
    if p.ndim == 3:  # [K,J,3]: already averaged, A = 1
        p = p[:, None]
    if p.ndim != 4 or p.shape[-1] != 3:
        raise ValueError(f"poses_per_aug must be [K,A,J,3] (or [K,J,3]), got {p.shape}")
    k, a = p.shape[:2]
    nan = np.full(k, np.nan)
    cam = _to_camera(p, extrinsics)
    spread_d = spread_mm(cam) if a >= 2 else nan.copy()
    values = {name: nan.copy() for name in TERMS}
    if a >= 2:
        values["spread"] = np.exp(-spread_d / config.spread_scale_mm)
    if bones is None and joint_names is not None:
        bones = bones_from_names(joint_names)
    if bones:
        values["bones"] = bones_term(cam.mean(axis=1), bones, config)
    if boxes is not None:
        boxes = np.asarray(boxes, np.float64)
        boxes = boxes.reshape(k, boxes.shape[-1] if boxes.ndim else 4)
        if scores is None and boxes.shape[1] >= 5:
            scores = boxes[:, 4]
        if poses2d is not None:
            p2 = np.asarray(poses2d, np.float64)
            if p2.ndim == 4:
                p2 = p2.mean(axis=1)
            values["box"] = box_term(p2.reshape(k, -1, 2), boxes, config, image_size) if k else nan.copy()
    if scores is not None:
        values["detector"] = np.asarray(scores, np.float64).reshape(k)
    if pose_scores is not None:
        values["presence"] = np.asarray(pose_scores, np.float64).reshape(k)
    if joint_confidences is not None:
        conf = np.asarray(joint_confidences, np.float64)
        if conf.ndim == 3:
            conf = conf.mean(axis=1)
        values["confidence"] = conf.reshape(k, -1).mean(axis=-1) if conf.size else nan.copy()
    if detector_keypoints is not None and k:
        kp = np.asarray(detector_keypoints, np.float64).reshape(k, -1, 3)
        given = ~(kp[..., 2] > 0).any(axis=-1)  # boxes from the caller carry no keypoints
        values["keypoints"] = np.where(given, np.nan, kp[..., 2].mean(axis=-1))
        if keypoint_poses2d is not None and boxes is not None:
            kp2 = np.asarray(keypoint_poses2d, np.float64)
            if kp2.ndim == 4:
                kp2 = kp2.mean(axis=1)
            values["agreement"] = agreement_term(kp, kp2.reshape(k, -1, 2), boxes, config)
    num = np.zeros(k)
    den = np.zeros(k)
    for name in TERMS:
        t = values[name]
        ok = np.isfinite(t)
        if name == "spread" and config.spread_only_without_agreement:
            ok &= ~np.isfinite(values["agreement"])
        w = config.weights.get(name, 0.0)
        num[ok] += w * np.log(np.clip(t[ok], config.floor, 1.0))
        den[ok] += w
    with np.errstate(invalid="ignore", divide="ignore"):
        quality = np.where(den > 0, np.exp(num / np.where(den > 0, den, 1.0)), np.nan)
    return QualityTerms(**{n: values[n].astype(np.float32) for n in TERMS},
                        quality=quality.astype(np.float32), spread_mm=spread_d.astype(np.float32))


def score(poses_per_aug: np.ndarray, boxes: np.ndarray | None = None, joint_confidences: np.ndarray | None = None,
          poses2d: np.ndarray | None = None, *, scores: np.ndarray | None = None,
          pose_scores: np.ndarray | None = None, joint_names: Sequence[str] | None = None,
          bones: Sequence[tuple[int, int, float]] | None = None, extrinsics: np.ndarray | None = None,
          image_size: tuple[int, int] | None = None, detector_keypoints: np.ndarray | None = None,
          keypoint_poses2d: np.ndarray | None = None, config: QualityConfig | None = None) -> np.ndarray:
    """Quality [K] float32 in [0, 1] (NaN only when no term is available) for the K people of one image.

    poses_per_aug: [K,A,J,3] mm, as ``detect_poses(..., average_aug=False)`` returns them ([K,J,3]
        is taken as A = 1). World frame when ``extrinsics`` (world->camera [4,4] or [K,4,4]) is
        given, else camera frame.
    boxes: [K,4] x,y,w,h or [K,5] with the detector score in column 4 (the model's ``boxes``).
    joint_confidences: [K,J] (or [K,A,J]) in [0,1]; None for models without them.
    poses2d: [K,J,2] or [K,A,J,2] image pixels.
    scores: [K] detector scores (default: ``boxes[:, 4]`` when present).
    pose_scores: [K] crop-model person-presence scores, if the model has them.
    joint_names: the skeleton's names, to find bones for the bones term; or ``bones`` explicitly as
        ``(joint a, joint b, typical length mm)``.
    image_size: (width, height), so that a person cut by the image border is not penalised for the
        part of the 2D pose outside the image.
    detector_keypoints: [K,P,3] the detector's own keypoints (x, y, score; score 0 for given boxes),
        and ``keypoint_poses2d`` [K,P,2] (or [K,A,P,2]) the crop model's 2D at the same P joints.
    """
    return terms(poses_per_aug, boxes, joint_confidences, poses2d, scores=scores, pose_scores=pose_scores,
                 joint_names=joint_names, bones=bones, extrinsics=extrinsics, image_size=image_size,
                 detector_keypoints=detector_keypoints, keypoint_poses2d=keypoint_poses2d, config=config).quality


def score_stored_person(person: dict, joint_names: Sequence[str] | None = None,
                        image_size: tuple[int, int] | None = None, config: QualityConfig | None = None) -> float:
    """Quality of one stored ``people[]`` entry (a dict as pyarrow's ``to_pylist`` gives it) when the
    dataset has no ``quality`` field: A = 1 (the stored pose is the TTA mean), so no spread term."""
    poses = np.asarray(person["joints3d_cam"], np.float64)[None, None]
    boxes = np.asarray(person["box"], np.float64)[None]
    conf = person.get("joint_confidences")
    q = score(poses, boxes, None if conf is None else np.asarray(conf)[None],
              np.asarray(person["joints2d"], np.float64)[None], scores=np.array([person["score"]]),
              pose_scores=None if person.get("pose_score") is None else np.array([person["pose_score"]]),
              joint_names=joint_names, image_size=image_size, config=config)
    return float(q[0])


def person_quality(person: dict) -> float | None:
    """The stored ``quality`` of a ``people[]`` entry, or None where the field is absent or null
    (datasets written before schema 1.1)."""
    q = person.get("quality")
    return None if q is None else float(q)
