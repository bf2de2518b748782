"""People tracks through a frame sequence (a video, or one view of a calibrated rig): which
detection of frame t is which person of frame t-1.

Method: SORT/ByteTrack-style tracking by detection. Each track predicts where its person is now
with a constant-velocity motion model (box, 2D joints and 3D root extrapolated from its recent
observations); an optimal assignment (Hungarian, ``linear_assignment``) matches the predictions
to the detections on a cost made of 2D joint distance (left/right labels either way), relative
change of the 3D root's depth (camera frame) and box overlap, with gates that widen with the time
since the track was last seen. As in ByteTrack, confident detections are matched first, then the less confident ones
to the tracks still unmatched; only confident detections start tracks. A track that misses frames
survives ``max_misses`` of them.

Why "windowed": the tracker's state at frame t depends only on the labelled detections of the
last ``window`` frames. So a shard of a video that starts at frame s continues its predecessor's
tracks exactly from the predecessor's committed labels of frames [s - window, s): the ids do not
depend on where the video was cut, nor on which shard finished first.

Track ids are ``first frame * 1000 + rank`` (rank: order among the tracks born at that frame):
unique within a video without a counter shared between shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INFEASIBLE = 1e6
ID_STRIDE = 1000


def linear_assignment(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of rows to columns (rectangular allowed): the Hungarian method in
    its shortest-augmenting-path form (Jonker-Volgenant), O(n^3). Returns (row, col) pairs, one
    per row of the smaller side. (scipy's ``linear_sum_assignment`` does the same; scipy is not a
    dependency of this project.)"""
    cost = np.asarray(cost, np.float64)
    transposed = cost.shape[0] > cost.shape[1]
    if transposed:
        cost = cost.T
    n, m = cost.shape
    if n == 0:
        return []
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, int)  # p[j]: row (1-based) assigned to column j; column 0 is the virtual start
    way = np.zeros(m + 1, int)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    pairs = [(int(p[j]) - 1, j - 1) for j in range(1, m + 1) if p[j]]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    return sorted(pairs)


@dataclass(frozen=True)
class TrackerConfig:
    """How tracks are kept and matched. The gates are in units one frame after the last sighting
    and grow by ``gate_growth`` per missed frame."""

    max_misses: int = 30  # frames a track may go unseen and still continue
    high_score: float = 0.5  # detections at or above it are matched first and may start tracks (ByteTrack)
    gate_2d: float = 0.5  # largest median joint distance, in person sizes (sqrt of box area)
    gate_depth: float = 0.3  # largest |log z'/z| of the root's depth: monocular depth errors grow with distance
    gate_growth: float = 0.15
    min_confidence: float = 0.3  # joints below it are not compared
    max_extrapolation: int = 5  # frames the motion model extrapolates; beyond, the track waits where it was
    velocity_span: int = 5  # velocity from the observation up to this many frames before the last

    @property
    def window(self) -> int:
        """Frames of labelled history the state at frame t depends on."""
        return self.max_misses + 1 + self.velocity_span


@dataclass
class Observation:
    t: int  # position in the sequence (frame index // every)
    box: np.ndarray  # [5] x, y, w, h, score
    joints2d: np.ndarray  # [J,2]
    root3d: np.ndarray | None  # [3] camera frame mm (mean of the confident joints)
    conf: np.ndarray  # [J]


@dataclass
class Frame:
    """One image of the sequence: its detections, and their track ids where already decided
    (context frames from a committed neighbour), else None."""

    t: int
    frame: int  # the frame's own index (names new tracks)
    boxes: np.ndarray  # [K,5]
    joints2d: np.ndarray  # [K,J,2]
    joints3d: np.ndarray | None = None  # [K,J,3] camera frame
    conf: np.ndarray | None = None  # [K,J]
    ids: np.ndarray | None = None  # [K] int64, -1 = no track

    def observation(self, k: int, min_conf: float) -> Observation:
        conf = self.conf[k] if self.conf is not None else np.ones(self.joints2d.shape[1], np.float32)
        root = None
        if self.joints3d is not None:
            ok = conf >= min_conf
            root = (self.joints3d[k][ok] if ok.sum() >= 3 else self.joints3d[k]).mean(0)
        return Observation(self.t, np.asarray(self.boxes[k], np.float64), np.asarray(self.joints2d[k], np.float64),
                           root, conf)


def _mirror(names: list[str] | None, j: int) -> np.ndarray:
    if names is None:
        return np.arange(j)
    from annotator.estimator.skeletons import counterpart

    index = {n: i for i, n in enumerate(names)}
    return np.array([index[counterpart(n, set(names))] for n in names])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker:
    """Assigns track ids frame by frame; ``step`` returns the ids of one frame's detections."""

    def __init__(self, config: TrackerConfig | None = None, joint_names: list[str] | None = None):
        self.config = config or TrackerConfig()
        self.joint_names = joint_names
        self.history: dict[int, list[Observation]] = {}
        self.mirror: np.ndarray | None = None

    # -- state ------------------------------------------------------------------------------------

    def _forget(self, t: int) -> None:
        """Keep only what the windowed state allows: observations of the last ``window`` frames."""
        lo = t - self.config.window
        for tid in list(self.history):
            obs = [o for o in self.history[tid] if o.t >= lo]
            if obs:
                self.history[tid] = obs
            else:
                del self.history[tid]

    def _predict(self, obs: list[Observation], t: int) -> tuple[Observation, int]:
        """The track's expected observation at t (constant velocity), and frames since last seen."""
        c = self.config
        last = obs[-1]
        gap = t - last.t
        prev = [o for o in obs[:-1] if last.t - o.t <= c.velocity_span]
        if not prev:
            return last, gap
        first = prev[0]
        dt = last.t - first.t
        steps = min(gap, c.max_extrapolation)
        vel_box = (last.box[:4] - first.box[:4]) / dt
        box = last.box.copy()
        box[:2] += vel_box[:2] * steps
        box[2:4] = np.maximum(box[2:4] + vel_box[2:4] * steps, 1.0)
        j2d = last.joints2d + (last.joints2d - first.joints2d) / dt * steps
        root = None
        if last.root3d is not None and first.root3d is not None:
            root = last.root3d + (last.root3d - first.root3d) / dt * steps
        return Observation(t, box, j2d, root, last.conf), gap

    # -- association ------------------------------------------------------------------------------

    def _cost(self, pred: Observation, gap: int, det: Observation) -> float:
        c = self.config
        widen = 1.0 + c.gate_growth * max(gap - 1, 0)
        size = float(np.sqrt(max(pred.box[2] * pred.box[3], 1.0)))
        ok = (pred.conf >= c.min_confidence) & (det.conf >= c.min_confidence)
        if ok.sum() >= 3:
            d = np.linalg.norm(det.joints2d - pred.joints2d, axis=-1)
            e2 = float(np.median(d[ok]))
            if self.mirror is not None:  # a left/right mix-up is still the same person
                okm = (pred.conf >= c.min_confidence) & (det.conf[self.mirror] >= c.min_confidence)
                if okm.sum() >= 3:
                    dm = np.linalg.norm(det.joints2d[self.mirror] - pred.joints2d, axis=-1)
                    e2 = min(e2, float(np.median(dm[okm])))
        else:  # too few joints: the box centre
            e2 = float(np.linalg.norm((det.box[:2] + det.box[2:4] / 2) - (pred.box[:2] + pred.box[2:4] / 2)))
        e2 /= size * c.gate_2d * widen
        if e2 > 1.0:
            return INFEASIBLE
        e3 = 0.0
        if pred.root3d is not None and det.root3d is not None and pred.root3d[2] > 0 and det.root3d[2] > 0:
            e3 = abs(float(np.log(det.root3d[2] / pred.root3d[2]))) / (c.gate_depth * widen)
            if e3 > 1.0:
                return INFEASIBLE
        iou = _iou(pred.box, det.box)
        return e2 * e2 + e3 * e3 + (1.0 - iou) * 0.5 + 0.05 * (gap - 1)

    def _match(self, tracks: list[int], preds: dict[int, tuple[Observation, int]], dets: list[int],
               obs: list[Observation]) -> list[tuple[int, int]]:
        if not tracks or not dets:
            return []
        cost = np.array([[self._cost(*preds[tid], obs[k]) for k in dets] for tid in tracks])
        return [(tracks[r], dets[col]) for r, col in linear_assignment(cost) if cost[r, col] < INFEASIBLE]

    def step(self, frame: Frame) -> np.ndarray:
        """Ids of ``frame``'s detections (-1: unmatched low-score detection). A frame that comes
        with ids (context) only updates the state."""
        c = self.config
        k = len(frame.boxes)
        if self.mirror is None and k:
            self.mirror = _mirror(self.joint_names, frame.joints2d.shape[1])
        self._forget(frame.t)
        obs = [frame.observation(i, c.min_confidence) for i in range(k)]
        if frame.ids is not None:
            ids = np.asarray(frame.ids, np.int64)
        else:
            ids = np.full(k, -1, np.int64)
            alive = sorted(tid for tid, h in self.history.items() if frame.t - h[-1].t <= c.max_misses + 1)
            preds = {tid: self._predict(self.history[tid], frame.t) for tid in alive}
            scores = frame.boxes[:, 4] if k else np.zeros(0)
            high = [i for i in range(k) if scores[i] >= c.high_score]
            low = [i for i in range(k) if scores[i] < c.high_score]
            matched = self._match(alive, preds, high, obs)
            taken = {tid for tid, _ in matched}
            matched += self._match([tid for tid in alive if tid not in taken], preds, low, obs)
            for tid, i in matched:
                ids[i] = tid
            born = [i for i in high if ids[i] < 0]
            for rank, i in enumerate(born):
                ids[i] = frame.frame * ID_STRIDE + rank
        for i, tid in enumerate(ids):
            if tid >= 0:
                self.history.setdefault(int(tid), []).append(obs[i])
        return ids


def track(frames: list[Frame], config: TrackerConfig | None = None, joint_names: list[str] | None = None
          ) -> list[np.ndarray]:
    """Ids for every frame (processed in ``t`` order, returned in the given order); frames with
    ``ids`` given keep theirs."""
    tracker = Tracker(config, joint_names)
    out: list[np.ndarray | None] = [None] * len(frames)
    for i in sorted(range(len(frames)), key=lambda i: frames[i].t):
        out[i] = tracker.step(frames[i])
    return out  # type: ignore[return-value]
