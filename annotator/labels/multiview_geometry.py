"""Geometry of calibrated views in numpy: triangulation, projection, epipolar distance, and the
greedy association of one person's detections across views.

Shared by rig fusion (``annotator.labels.fusion``) and the multi-view evaluation
(``annotator.eval.multiview``). Cameras are any objects with ``rotation`` [3,3] (world -> camera),
``translation`` [3] (mm) and ``intrinsics`` [3,3] (``annotator.eval.calibration.Camera`` is one).
Points in an image are *normalised rays*: undistorted pixel coordinates divided by the focal
length (``x = X_c / Z_c``), so no lens model is needed here; errors are reported in pixels by
multiplying by the focal length.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class CameraLike(Protocol):
    rotation: np.ndarray
    translation: np.ndarray
    intrinsics: np.ndarray


def projection(cam: CameraLike) -> np.ndarray:
    """3x4 [R | t]: world mm -> normalised image coordinates (homogeneous)."""
    return np.concatenate([np.asarray(cam.rotation, np.float64), np.asarray(cam.translation, np.float64)[:, None]], 1)


def focal_px(cam: CameraLike) -> float:
    """One focal length (px) for turning normalised errors into pixels."""
    k = np.asarray(cam.intrinsics, np.float64)
    return float((k[0, 0] + k[1, 1]) / 2)


def to_camera(points: np.ndarray, cam: CameraLike) -> np.ndarray:
    """World points [..., 3] (mm) -> that camera's frame."""
    return points @ np.asarray(cam.rotation, np.float64).T + np.asarray(cam.translation, np.float64)


def project(points: np.ndarray, cam: CameraLike) -> np.ndarray:
    """World points [..., 3] -> normalised rays [..., 2] (pinhole; NaN behind the camera)."""
    pc = to_camera(points, cam)
    z = np.where(pc[..., 2:] > 1e-6, pc[..., 2:], np.nan)
    return pc[..., :2] / z


def triangulate(rays: np.ndarray, projections: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted DLT of one point from V views: rays [V,2] normalised, projections [V,3,4], weights [V]."""
    rows = []
    for (x, y), p, w in zip(rays, projections, weights, strict=True):
        rows.append(w * (x * p[2] - p[0]))
        rows.append(w * (y * p[2] - p[1]))
    _, _, vt = np.linalg.svd(np.asarray(rows))
    X = vt[-1]
    return X[:3] / X[3]


def epipolar_distance_px(rays_a: np.ndarray, rays_b: np.ndarray, cam_a: CameraLike,
                         cam_b: CameraLike) -> np.ndarray:
    """Symmetric distance [J] (pixels of the two cameras, averaged) of corresponding rays to each
    other's epipolar lines."""
    r = cam_b.rotation @ cam_a.rotation.T
    t = cam_b.translation - r @ cam_a.translation
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    e = tx @ r  # x_b^T E x_a = 0 in normalised coordinates
    xa = np.concatenate([rays_a, np.ones_like(rays_a[:, :1])], 1)
    xb = np.concatenate([rays_b, np.ones_like(rays_b[:, :1])], 1)
    lb = xa @ e.T  # lines in b
    la = xb @ e  # lines in a
    num = np.abs(np.sum(xb * lb, 1))
    db = num / np.maximum(np.linalg.norm(lb[:, :2], axis=1), 1e-12) * cam_b.intrinsics[0, 0]
    da = num / np.maximum(np.linalg.norm(la[:, :2], axis=1), 1e-12) * cam_a.intrinsics[0, 0]
    return (da + db) / 2


def epipolar_costs(rays_a: np.ndarray, conf_a: np.ndarray, rays_b: np.ndarray, conf_b: np.ndarray, cam_a: CameraLike,
                   cam_b: CameraLike, min_confidence: float, mirror: list[int] | None = None,
                   min_joints: int = 4) -> tuple[float, float]:
    """Median epipolar distance (px) between two detections' joints [J,2] seen confidently in both:
    with b's labels as given, and with b's left/right labels exchanged (``mirror``: each joint's
    counterpart; inf without it). Both inf when fewer than ``min_joints`` joints are confident in
    both (labels as given)."""
    out = [np.inf, np.inf]
    if ((conf_a > min_confidence) & (conf_b > min_confidence)).sum() < min_joints:
        return out[0], out[1]
    for k, order in enumerate((None, mirror)):
        if k and mirror is None:
            continue
        rb, cb = (rays_b, conf_b) if order is None else (rays_b[order], conf_b[order])
        ok = (conf_a > min_confidence) & (cb > min_confidence)
        if ok.sum() >= min_joints:
            out[k] = float(np.median(epipolar_distance_px(rays_a[ok], rb[ok], cam_a, cam_b)))
    return out[0], out[1]


def pair_cost(rays_a: np.ndarray, conf_a: np.ndarray, rays_b: np.ndarray, conf_b: np.ndarray, cam_a: CameraLike,
              cam_b: CameraLike, min_confidence: float, mirror: list[int] | None = None,
              min_joints: int = 4) -> tuple[float, bool]:
    """The better of ``epipolar_costs`` (monocular models swap the sides of people seen from
    behind, so a view that exchanged left and right still shows the same person) and whether it
    is the one with b's labels exchanged."""
    given, flipped = epipolar_costs(rays_a, conf_a, rays_b, conf_b, cam_a, cam_b, min_confidence, mirror, min_joints)
    return (flipped, True) if flipped < given else (given, False)


def merge_pairs(pairs: list[tuple]) -> list[dict[int, tuple[int, bool]]]:
    """Greedy clustering of cross-view matches, best first, never two detections of one view in a
    cluster. ``pairs``: (cost, view a, detection i, view b, detection j, b flipped relative to a).
    Returns clusters {view: (detection, flipped)} of two views or more; ``flipped`` is relative to
    the cluster (exchange that detection's left/right labels to agree with the others)."""
    cluster_of: dict[tuple[int, int], int] = {}
    clusters: list[dict[int, tuple[int, bool]]] = []
    for _, va, i, vb, j, flip in sorted(pairs, key=lambda p: p[:5]):
        ca, cb = cluster_of.get((va, i)), cluster_of.get((vb, j))
        if ca is None and cb is None:
            clusters.append({va: (i, False), vb: (j, bool(flip))})
            cluster_of[(va, i)] = cluster_of[(vb, j)] = len(clusters) - 1
        elif ca is not None and cb is None:
            if vb not in clusters[ca]:
                clusters[ca][vb] = (j, clusters[ca][va][1] ^ bool(flip))
                cluster_of[(vb, j)] = ca
        elif cb is not None and ca is None:
            if va not in clusters[cb]:
                clusters[cb][va] = (i, clusters[cb][vb][1] ^ bool(flip))
                cluster_of[(va, i)] = cb
        elif ca != cb and not set(clusters[ca]) & set(clusters[cb]):
            # b's cluster joins a's: its labels flip when b's flip there disagrees with the pair
            change = clusters[ca][va][1] ^ bool(flip) ^ clusters[cb][vb][1]
            for v, (det, f) in clusters[cb].items():
                clusters[ca][v] = (det, f ^ change)
                cluster_of[(v, det)] = ca
            clusters[cb] = {}
    return [c for c in clusters if len(c) >= 2]


def undistort_pixels(pixels: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray | None,
                     iterations: int = 20) -> np.ndarray:
    """Image pixels [..., 2] -> undistorted normalised rays [..., 2]: the inverse of OpenCV's lens
    model (12 coefficients k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4, fewer = zeros) by OpenCV's fixed-point
    iteration (``undistortPoints``); numpy twin of ``estimator.camera.pixels_to_rays``."""
    k = np.asarray(intrinsics, np.float64)
    p = np.asarray(pixels, np.float64)
    yd = (p[..., 1] - k[1, 2]) / k[1, 1]
    xd = (p[..., 0] - k[0, 2] - k[0, 1] * yd) / k[0, 0]
    c = np.zeros(12)
    if distortion is not None and len(distortion):
        d = np.nan_to_num(np.asarray(distortion, np.float64))[:12]
        c[:len(d)] = d
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = c
    x, y = xd.copy(), yd.copy()
    for _ in range(iterations):
        r2 = x * x + y * y
        inv = (1 + r2 * (k4 + r2 * (k5 + r2 * k6))) / (1 + r2 * (k1 + r2 * (k2 + r2 * k3)))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + r2 * (s1 + s2 * r2)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + r2 * (s3 + s4 * r2)
        x, y = (xd - dx) * inv, (yd - dy) * inv
    return np.stack([x, y], -1)
