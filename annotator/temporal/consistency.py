"""One person's track made consistent over time: left/right labels repaired, one body scale,
smoothed motion, constant bone lengths. Numpy only (the commit step runs on the driver, which never
imports TensorFlow).

Steps, in order, on the camera-frame 3D of one track ([N, J, 3], frames ``t`` with gaps):

1. **Left/right repair.** For each limb group (arms, legs, face) a two-state Viterbi along the
   track chooses, per frame, the labels as given or exchanged: the path cost is the root-relative
   movement of the group's joints from frame to frame plus ``swap_penalty_mm`` for each exchange, so a
   flip the network makes for a few frames is undone, while a consistent labelling is kept.
2. **One body scale.** The track's bone lengths are the median over its frames (or those of the
   committed neighbour it continues); each frame is scaled about the camera centre to them. Scaling
   about the camera centre moves the person along its viewing rays, so the 2D projection is kept:
   depth and size were one unknown for the monocular network.
3. **Smoothing** (``annotator.temporal.smoothing``) of the centroid trajectory and of the centroid-relative
   joints, separately (their noise differs: depth is the noisy part of the first).
4. **Constant bones.** Each frame is moved as little as needed for the bones of a spanning tree of
   the skeleton's edges to have the track's lengths (iterative constraint projection), about the
   smoothed centroid.

Frames marked ``context`` (labels a neighbouring shard already committed) anchor steps 1, 2 and 3
and are not changed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from annotator.temporal import smoothing

_ARMS = ("shoulder", "elbow", "wrist", "pinky", "index", "thumb", "hand", "sho", "elb", "wri")
_LEGS = ("hip", "knee", "ankle", "heel", "foot", "toe", "kne", "ank", "foo")


@dataclass(frozen=True)
class ConsistencyConfig:
    smoothing: str = "rts"  # annotator.temporal.smoothing.METHODS
    swaps: bool = True
    scale: bool = True
    bones: bool = True
    swap_penalty_mm: float = 60.0
    min_confidence: float = 0.3
    fps: float = 30.0  # only the frame-rate dependent filters (savgol, one_euro) use it


@dataclass(frozen=True)
class SkeletonInfo:
    """What the steps need from a joint set: left/right counterparts, swap groups, a spanning tree."""

    joint_names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    extra: dict = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, joint_names, edges) -> SkeletonInfo:
        return cls(tuple(joint_names), tuple((int(a), int(b)) for a, b in edges))

    @cached_property
    def mirror(self) -> np.ndarray:
        from annotator.estimator.skeletons import counterpart

        names = set(self.joint_names)
        index = {n: i for i, n in enumerate(self.joint_names)}
        return np.array([index[counterpart(n, names)] for n in self.joint_names])

    @cached_property
    def swap_groups(self) -> list[np.ndarray]:
        """Joints (both sides) of each limb group that has left/right pairs."""
        groups: dict[str, list[int]] = {"arms": [], "legs": [], "face": []}
        for j, name in enumerate(self.joint_names):
            if self.mirror[j] == j:
                continue
            low = name.lower()
            key = "legs" if any(p in low for p in _LEGS) else "arms" if any(p in low for p in _ARMS) else "face"
            groups[key].append(j)
        return [np.array(v) for v in groups.values() if v]

    @cached_property
    def tree(self) -> list[tuple[int, int]]:
        """(parent, child) bones of a spanning forest, parents first; each component rooted at its
        centre (smallest eccentricity), so chains from the root are short."""
        n = len(self.joint_names)
        adj: list[list[int]] = [[] for _ in range(n)]
        for a, b in self.edges:
            if a != b and 0 <= a < n and 0 <= b < n:
                adj[a].append(b)
                adj[b].append(a)
        adj = [sorted(set(x)) for x in adj]

        def bfs(root):
            dist, order, parent = {root: 0}, [], {}
            q = deque([root])
            while q:
                u = q.popleft()
                order.append(u)
                for v in adj[u]:
                    if v not in dist:
                        dist[v], parent[v] = dist[u] + 1, u
                        q.append(v)
            return dist, order, parent

        seen: set[int] = set()
        bones: list[tuple[int, int]] = []
        for start in range(n):
            if start in seen:
                continue
            comp = bfs(start)[0]
            seen |= set(comp)
            root = min(comp, key=lambda r: (max(bfs(r)[0].values()), r))
            _, order, parent = bfs(root)
            bones += [(parent[v], v) for v in order if v in parent]
        return bones


def _swap(x: np.ndarray, group: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[..., group, :] = x[..., mirror[group], :]
    return out


def repair_swaps(x: np.ndarray, conf: np.ndarray, fixed: np.ndarray, skel: SkeletonInfo,
                 config: ConsistencyConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 1: (joints [N,J,3], confidences [N,J], exchanged [N, groups] bool)."""
    n = len(x)
    mirror = skel.mirror
    flips = np.zeros((n, len(skel.swap_groups)), bool)
    if n < 2:
        return x, conf, flips
    centred = x - x.mean(axis=1, keepdims=True)
    for g, group in enumerate(skel.swap_groups):
        alt = [centred[:, group], centred[:, mirror[group]]]  # [N, G, 3] per state
        calt = [conf[:, group], conf[:, mirror[group]]]
        cost = np.where(fixed[0], [0.0, np.inf], [0.0, config.swap_penalty_mm])
        back = np.zeros((n, 2), int)
        for i in range(1, n):
            step = np.empty((2, 2))
            for a in range(2):  # previous state
                for b in range(2):  # this state
                    ok = (calt[a][i - 1] >= config.min_confidence) & (calt[b][i] >= config.min_confidence)
                    d = np.linalg.norm(alt[b][i] - alt[a][i - 1], axis=-1)
                    step[a, b] = float(d[ok].mean()) if ok.any() else 0.0
            total = cost[:, None] + step
            back[i] = np.argmin(total, axis=0)
            unary = np.array([0.0, np.inf if fixed[i] else config.swap_penalty_mm])
            cost = total.min(axis=0) + unary
        state = int(np.argmin(cost))
        for i in range(n - 1, -1, -1):
            flips[i, g] = bool(state)
            state = back[i, state]
    out, cout = x.copy(), conf.copy()
    for g, group in enumerate(skel.swap_groups):
        sel = flips[:, g]
        out[sel] = _swap(out[sel], group, mirror)
        cout[sel, :] = _swap(cout[sel, :, None], group, mirror)[..., 0]
    return out, cout, flips


def bone_lengths(x: np.ndarray, bones: list[tuple[int, int]]) -> np.ndarray:
    """[..., B] lengths of ``bones`` in poses [..., J, 3]."""
    a = np.array([p for p, _ in bones], int)
    b = np.array([c for _, c in bones], int)
    return np.linalg.norm(x[..., b, :] - x[..., a, :], axis=-1)


def track_lengths(x: np.ndarray, conf: np.ndarray, context: np.ndarray, skel: SkeletonInfo,
                  min_confidence: float) -> np.ndarray:
    """The track's bone lengths [B]: those of the committed frames it continues, else the median
    over its frames (a bone counts where both its joints are confident)."""
    bones = skel.tree
    lengths = bone_lengths(x, bones)
    if context.any():
        return np.median(lengths[context], axis=0)
    a = np.array([p for p, _ in bones], int)
    b = np.array([c for _, c in bones], int)
    ok = (conf[:, a] >= min_confidence) & (conf[:, b] >= min_confidence)
    out = np.median(lengths, axis=0)
    for k in range(len(bones)):
        if ok[:, k].sum() >= 1:
            out[k] = np.median(lengths[ok[:, k], k])
    return out


def normalise_scale(x: np.ndarray, conf: np.ndarray, lengths: np.ndarray, fixed: np.ndarray, skel: SkeletonInfo,
                    min_confidence: float) -> np.ndarray:
    """Step 2: each frame scaled about the camera centre so its bones match ``lengths`` (median
    ratio over its confident bones)."""
    bones = skel.tree
    a = np.array([p for p, _ in bones], int)
    b = np.array([c for _, c in bones], int)
    own = bone_lengths(x, bones)
    ok = (conf[:, a] >= min_confidence) & (conf[:, b] >= min_confidence) & (own > 1e-6)
    out = x.copy()
    for i in range(len(x)):
        if fixed[i] or ok[i].sum() < 2:
            continue
        out[i] *= float(np.median(lengths[ok[i]] / own[i, ok[i]]))
    return out


def rebuild_bones(x: np.ndarray, lengths: np.ndarray, skel: SkeletonInfo, iterations: int = 100) -> np.ndarray:
    """Step 4: poses [N,J,3] moved as little as needed for their spanning-tree bones to have
    ``lengths``: each bone's two ends pulled or pushed along it by half the difference, over the tree
    repeatedly (constraint projection, as in position-based dynamics), so corrections spread over
    the body instead of piling up at the ends of chains; each pose's centroid is kept."""
    out = x.copy()
    parents = np.array([p for p, _ in skel.tree], int)
    children = np.array([c for _, c in skel.tree], int)
    for _ in range(iterations):
        for k in range(len(parents)):
            p, c = parents[k], children[k]
            d = out[:, c] - out[:, p]
            norm = np.linalg.norm(d, axis=-1, keepdims=True)
            corr = np.where(norm > 1e-9, (norm - lengths[k]) / np.maximum(norm, 1e-9), 0.0) * d / 2
            out[:, p] += corr
            out[:, c] -= corr
    return out - out.mean(axis=1, keepdims=True) + x.mean(axis=1, keepdims=True)


def make_consistent(t: np.ndarray, joints3d: np.ndarray, conf: np.ndarray | None, context: np.ndarray | None,
                    skel: SkeletonInfo, config: ConsistencyConfig | None = None) -> np.ndarray:
    """Steps 1-4 on one track: camera-frame joints [N,J,3] at frames ``t`` [N] -> consistent [N,J,3]
    (frames in ``context`` come back as given)."""
    config = config or ConsistencyConfig()
    order = np.argsort(t, kind="stable")
    t = np.asarray(t)[order]
    x = np.asarray(joints3d, np.float64)[order]
    n, j, _ = x.shape
    conf = np.ones((n, j)) if conf is None else np.asarray(conf, np.float64)[order]
    fixed = np.zeros(n, bool) if context is None else np.asarray(context, bool)[order]
    if config.swaps:
        x, conf, _ = repair_swaps(x, conf, fixed, skel, config)
    lengths = track_lengths(x, conf, fixed, skel, config.min_confidence) if skel.tree else None
    if config.scale and lengths is not None:
        x = normalise_scale(x, conf, lengths, fixed, skel, config.min_confidence)
    if config.smoothing != "none" and n >= 3:
        centre = x.mean(axis=1)
        rel = (x - centre[:, None]).reshape(n, j * 3)
        size = float(lengths.sum()) / 2 if lengths is not None and lengths.sum() > 0 else 1700.0
        w_rel = np.repeat(np.maximum(conf, 0.05), 3, axis=1)
        w_rel[fixed] = 1.0
        centre_s = smoothing.smooth(config.smoothing, t, centre, None, np.zeros(3, int), config.fps, size)
        rel_s = smoothing.smooth(config.smoothing, t, rel, w_rel, np.repeat(np.arange(j), 3), config.fps, size)
        x = np.where(fixed[:, None, None], x, rel_s.reshape(n, j, 3) + centre_s[:, None])
    if config.bones and lengths is not None:
        x = np.where(fixed[:, None, None], x, rebuild_bones(x, lengths, skel))
    out = np.empty_like(x)
    out[order] = x
    if context is not None:
        out[np.asarray(context, bool)] = np.asarray(joints3d, np.float64)[np.asarray(context, bool)]
    return out


def project(points: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray | None) -> np.ndarray:
    """Camera-frame points [..., 3] -> pixels through OpenCV's lens model (12 coefficients: k1 k2
    p1 p2 k3 k4 k5 k6 s1 s2 s3 s4, fewer = zeros): numpy twin of ``estimator.camera.project_distorted``."""
    p = np.asarray(points, np.float64)
    z = np.maximum(p[..., 2], 1e-6)
    x, y = p[..., 0] / z, p[..., 1] / z
    c = np.zeros(12)
    if distortion is not None and len(distortion):
        d = np.nan_to_num(np.asarray(distortion, np.float64))[:12]
        c[:len(d)] = d
    k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = c
    r2 = x * x + y * y
    rad = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + r2 * (s1 + s2 * r2)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + r2 * (s3 + s4 * r2)
    k = np.asarray(intrinsics, np.float64)
    return np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], -1)
