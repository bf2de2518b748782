"""Pose-accuracy metrics shared by every evaluation (multi-view triangulation, motion capture).

Why one module: ``annotator eval multiview`` and ``annotator eval mocap`` must report the same
numbers for the same poses, so the definitions live once: root-relative MPJPE, root error, root
depth bias, PA-MPJPE (similarity Procrustes), limb scale, PCK and its AUC, left/right swaps, how a
prediction is matched to a reference person in 2D, and how well the quality score ranks errors.

Pure numpy, all poses [J,3] in millimetres, joints named (BlazePose long names or MeTRAbs short
names; ``joint_index`` understands both).
"""

from __future__ import annotations

import numpy as np

LIMBS = (("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"), ("left_elbow", "left_wrist"),
         ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("right_hip", "right_knee"),
         ("left_knee", "left_ankle"), ("right_knee", "right_ankle"))
# MeTRAbs-style short names for the same joints
SHORT = {"left_shoulder": "lsho", "right_shoulder": "rsho", "left_elbow": "lelb", "right_elbow": "relb",
         "left_wrist": "lwri", "right_wrist": "rwri", "left_hip": "lhip", "right_hip": "rhip",
         "left_knee": "lkne", "right_knee": "rkne", "left_ankle": "lank", "right_ankle": "rank"}
AUC_THRESHOLDS_MM = np.arange(0.0, 151.0, 5.0)  # MPI-INF-3DHP's AUC: PCK at 0, 5, ..., 150 mm


def joint_index(names: list[str]) -> dict[str, int]:
    """Name -> index, with the limb joints also reachable by their long names."""
    idx = {n: i for i, n in enumerate(names)}
    for long, short in SHORT.items():
        if short in idx and long not in idx:
            idx[long] = idx[short]
    return idx


def root_joints(names: list[str], pelvis_first: bool = True) -> list[int]:
    """The joints the root is the mean of: the pelvis when named (and ``pelvis_first``), else the
    two hips, else the pelvis after all; empty when there is neither."""
    idx = joint_index(names)
    pelvis = next((idx[n] for n in ("pelv", "pelvis") if n in idx), None)
    if pelvis is not None and pelvis_first:
        return [pelvis]
    if "left_hip" in idx and "right_hip" in idx:
        return [idx["left_hip"], idx["right_hip"]]
    return [] if pelvis is None else [pelvis]


def root_of(poses: np.ndarray, names: list[str], pelvis_first: bool = True) -> np.ndarray:
    """The root point of poses [..., J, 3] (see ``root_joints``)."""
    joints = root_joints(names, pelvis_first)
    if not joints:
        raise ValueError(f"no root: the joints name neither a pelvis nor both hips ({', '.join(names)})")
    return poses[..., joints, :].mean(axis=-2)


def procrustes_aligned(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Similarity-align pred [J,3] to ref [J,3] (rotation, uniform scale, translation)."""
    mp, mr = pred.mean(0), ref.mean(0)
    p, r = pred - mp, ref - mr
    u, s, vt = np.linalg.svd(p.T @ r)
    d = np.sign(np.linalg.det(u @ vt))
    dmat = np.diag([1.0, 1.0, d])
    rot = u @ dmat @ vt
    scale = np.trace(np.diag(s) @ dmat) / max(np.sum(p ** 2), 1e-12)
    return scale * p @ rot + mr


def limb_ratios(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray, names: list[str]) -> list[float]:
    """Predicted / reference length of each ``LIMBS`` bone both poses have."""
    idx = joint_index(names)
    return [float(np.linalg.norm(pred[idx[a]] - pred[idx[b]]) / np.linalg.norm(ref[idx[a]] - ref[idx[b]]))
            for a, b in LIMBS if a in idx and b in idx and valid[idx[a]] and valid[idx[b]]]


def pck(errors: np.ndarray, threshold_mm: float) -> float:
    """Share of joint errors under ``threshold_mm``."""
    return float((np.asarray(errors) < threshold_mm).mean())


def auc(errors: np.ndarray, thresholds_mm: np.ndarray = AUC_THRESHOLDS_MM) -> float:
    """Area under the PCK curve, normalised to 0-1: the mean PCK over ``thresholds_mm``."""
    errors = np.asarray(errors)
    return float(np.mean([(errors <= t).mean() for t in thresholds_mm]))


def person_metrics(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray, names: list[str],
                   rotation: np.ndarray | None = None, translation: np.ndarray | None = None,
                   pck_mm: float = 150.0, mirror: list[int] | None = None, pelvis_first: bool = True,
                   min_joints: int = 6) -> dict | None:
    """Metrics of one predicted person against its reference (both [J,3] mm, one frame).

    ``rotation``/``translation`` take that frame to the camera's (identity when the poses already
    are in camera coordinates): the depth bias is the camera z of the predicted root minus the
    reference's (positive: too far). With ``mirror`` (each joint's left/right counterpart),
    ``swapped`` says whether the prediction with left and right exchanged is closer to the
    reference (root-relative) than as given. None when the root or ``min_joints`` joints are not
    valid. ``joint_errors`` [valid joints] are the root-relative errors behind MPJPE and PCK."""
    roots = root_joints(names, pelvis_first)
    if not roots or not all(valid[j] for j in roots) or valid.sum() < min_joints:
        return None
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
    translation = np.zeros(3) if translation is None else np.asarray(translation, np.float64)
    pr, rr = root_of(pred, names, pelvis_first), root_of(np.nan_to_num(ref), names, pelvis_first)
    rel_err = np.linalg.norm((pred[valid] - pr) - (ref[valid] - rr), axis=-1)
    aligned = procrustes_aligned(pred[valid], ref[valid])
    ratios = limb_ratios(pred, ref, valid, names)
    out = {
        "root_relative_mpjpe_mm": float(rel_err.mean()),
        "root_error_mm": float(np.linalg.norm(pr - rr)),
        "root_depth_bias_mm": float((rotation @ pr + translation)[2] - (rotation @ rr + translation)[2]),
        "pa_mpjpe_mm": float(np.linalg.norm(aligned - ref[valid], axis=-1).mean()),
        "limb_scale": float(np.median(ratios)) if ratios else float("nan"),
        "pck": pck(rel_err, pck_mm),
        "joints": int(valid.sum()),
        "joint_errors": rel_err,
    }
    if mirror is not None:
        mirrored = pred[mirror]
        rel_mirrored = np.linalg.norm((mirrored[valid] - pr) - (ref[valid] - rr), axis=-1)
        out["swapped"] = float(rel_mirrored.mean() < rel_err.mean())
    return out


def closest_detection(pixels, joints: np.ndarray, proj: np.ndarray, mirror: list[int] | None,
                      max_px: float) -> int | None:
    """Index of the 2D pose in ``pixels`` ([J,2] each) whose ``joints`` are nearest (median) to
    ``proj`` [len(joints),2], with left/right labels either way; None if none is under ``max_px``."""
    best, best_d = None, max_px
    for i, pix in enumerate(pixels):
        d = float(np.median(np.linalg.norm(pix[joints] - proj, axis=-1)))
        if mirror is not None:
            d = min(d, float(np.median(np.linalg.norm(pix[mirror][joints] - proj, axis=-1))))
        if d < best_d:
            best, best_d = i, d
    return best


GROSS_ERROR_MM = 200.0  # an error this large makes a label wrong, not just imprecise
SIGMA_LEVELS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # the reliability curve's k (intervals of k sigma)


def reliability(depth_errors: np.ndarray, depth_sigmas: np.ndarray, joint_errors: np.ndarray,
                joint_sigmas: np.ndarray) -> dict:
    """The reliability curve: the share of errors within k sigma against k (``SIGMA_LEVELS``),
    beside a Gaussian's share within k sigma (depth: the signed root depth error against
    ``depth_sigma_mm``; joints: each root-relative joint's 3D error distance against
    ``joint_sigma_mm``, whose meaning is the same: 68 % within 1 sigma, 95 % within 2)."""
    import math

    out = {"k": list(SIGMA_LEVELS), "gaussian_1d": [round(math.erf(k / math.sqrt(2)), 3) for k in SIGMA_LEVELS],
           "depth": [within_sigma(depth_errors, depth_sigmas, k) for k in SIGMA_LEVELS],
           "depth_n": int(np.isfinite(np.asarray(depth_errors, np.float64) * depth_sigmas).sum())}
    if len(joint_errors):
        out["joints"] = [within_sigma(joint_errors, joint_sigmas, k) for k in SIGMA_LEVELS]
        out["joints_n"] = int(np.isfinite(np.asarray(joint_errors, np.float64) * joint_sigmas).sum())
    return out


def within_sigma(errors: np.ndarray, sigmas: np.ndarray, k: float = 1.0) -> float | None:
    """Share of |errors| within ``k`` sigma where both are known (None if none is): a calibrated
    1-sigma interval holds about 0.68 of Gaussian errors, a 2-sigma one 0.95."""
    errors, sigmas = np.asarray(errors, np.float64), np.asarray(sigmas, np.float64)
    ok = np.isfinite(errors) & np.isfinite(sigmas)
    return round(float((np.abs(errors[ok]) <= k * sigmas[ok]).mean()), 3) if ok.any() else None


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def value(row, name: str) -> float:
    """A metric of a result row, an object or a dict (NaN when it has none)."""
    return row.get(name, float("nan")) if isinstance(row, dict) else getattr(row, name, float("nan"))


def quality_vs_error(rows: list, metrics: tuple[str, ...] = ("root_relative_mpjpe_mm", "pa_mpjpe_mm",
                                                              "root_error_mm")) -> dict:
    """Does the quality score rank labels by their error? Spearman correlation between each
    prediction's quality and its errors (negative = higher quality, lower error), the median
    error of the better and the worse half by quality, and which share of the largest errors (the
    worst quarter by error) the worst quarter by quality holds (0.25 would be chance), and the same
    for the gross errors (over ``GROSS_ERROR_MM``). ``rows``:
    objects or dicts with ``quality`` and the ``metrics``."""
    q = np.array([value(r, "quality") for r in rows], np.float64)
    out: dict = {"n": int(np.isfinite(q).sum())}
    if out["n"] < 4:
        return out
    for m in metrics:
        e = np.array([value(r, m) for r in rows], np.float64)
        ok = np.isfinite(q) & np.isfinite(e)
        if ok.sum() < 4:
            continue
        out[f"spearman_{m}"] = round(spearman(q[ok], e[ok]), 3)
        cut = np.median(q[ok])
        top, bottom = e[ok][q[ok] > cut], e[ok][q[ok] <= cut]
        out[f"{m}_median_top_half"] = round(float(np.median(top)), 1) if len(top) else None
        out[f"{m}_median_bottom_half"] = round(float(np.median(bottom)), 1) if len(bottom) else None
        large = e[ok] >= np.quantile(e[ok], 0.75)
        worst = q[ok] <= np.quantile(q[ok], 0.25)
        out[f"{m}_large_in_worst_quarter"] = round(float((large & worst).sum() / max(large.sum(), 1)), 3)
        # confidently wrong labels stay flagged: how many gross errors (> 200 mm) the worst quarter holds
        gross = e[ok] > GROSS_ERROR_MM
        out[f"{m}_over_200mm"] = int(gross.sum())
        out[f"{m}_over_200mm_in_worst_quarter"] = (round(float((gross & worst).sum() / gross.sum()), 3)
                                                   if gross.any() else None)
    return out
