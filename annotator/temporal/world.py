"""The temporal step of fused rig labels, in world space: tracks, one body size per track,
smoothing. Numpy only.

Fused people (``annotator.labels.fusion``) are already metric and in one frame, so the camera-frame
video step's depth/scale repair does not apply: a track is linked by the 3D distance of people's
centroids from instant to instant (minimum-cost assignment, ``max_speed_mm_s`` gate), then each
track goes through ``annotator.temporal.consistency`` with its world joints: smoothing (RTS with
the maximum-likelihood noise ratio) of centroid and centroid-relative joints, weighted by each
joint's fused sigma, and the track's median bone lengths for every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotator.temporal import consistency, tracking


@dataclass(frozen=True)
class WorldTrackConfig:
    max_speed_mm_s: float = 4000.0  # a centroid moving faster between two instants starts a new track
    # the centroids' own noise (a joint fused from two views or from the monocular prior moves it
    # by 100-200 mm between instants): a track's gate is the distance it can move plus this
    noise_mm: float = 300.0
    fps: float = 30.0
    smoothing: str = "rts"
    bones: bool = True  # one body size: the track's median bone lengths in every frame
    sigma_ref_mm: float = 25.0  # a joint with this fused sigma gets weight 1 (weights: (ref / sigma)^2)


def link(t: np.ndarray, centroids: list[np.ndarray], config: WorldTrackConfig | None = None) -> list[np.ndarray]:
    """Track ids per instant: ``t`` [N] frame numbers (increasing), ``centroids[i]`` [K_i,3] world mm.
    Ids count from 0 in order of appearance."""
    config = config or WorldTrackConfig()
    ids: list[np.ndarray] = []
    last: dict[int, tuple[float, np.ndarray]] = {}  # track -> (frame, centroid) where it was last seen
    next_id = 0
    for frame, cs in zip(t, centroids, strict=True):
        cs = np.asarray(cs, np.float64).reshape(-1, 3)
        out = np.full(len(cs), -1)
        tracks = list(last)
        if tracks and len(cs):
            cost = np.full((len(cs), len(tracks)), tracking.INFEASIBLE)
            for k, tid in enumerate(tracks):
                f0, c0 = last[tid]
                gate = config.max_speed_mm_s * max(frame - f0, 1) / config.fps + config.noise_mm
                d = np.linalg.norm(cs - c0, axis=1)
                cost[:, k] = np.where(d < gate, d, tracking.INFEASIBLE)
            for i, k in tracking.linear_assignment(cost):
                if cost[i, k] < tracking.INFEASIBLE:
                    out[i] = tracks[k]
        for i in range(len(cs)):
            if out[i] < 0:
                out[i], next_id = next_id, next_id + 1
            last[int(out[i])] = (float(frame), cs[i])
        ids.append(out)
    return ids


def smooth_track(t: np.ndarray, joints: np.ndarray, sigma_mm: np.ndarray, names, edges,
                 config: WorldTrackConfig | None = None, context: np.ndarray | None = None) -> np.ndarray:
    """One track's world joints [N,J,3] at frames ``t`` -> smoothed, one body size ([N,J,3]).
    ``sigma_mm`` [N,J]: each joint's fused uncertainty (weights); ``context``: frames that a
    neighbouring window already committed (kept as they are, anchoring the rest)."""
    config = config or WorldTrackConfig()
    skel = consistency.SkeletonInfo.of(names, edges)
    weight = np.clip((config.sigma_ref_mm / np.maximum(np.asarray(sigma_mm, np.float64), 1e-3)) ** 2, 0.0, 1.0)
    cc = consistency.ConsistencyConfig(smoothing=config.smoothing, swaps=False, scale=False, bones=config.bones,
                                       min_confidence=0.0, fps=config.fps)
    return consistency.make_consistent(np.asarray(t), np.asarray(joints, np.float64), weight, context, skel, cc)
