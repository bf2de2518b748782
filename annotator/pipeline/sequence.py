"""The temporal step of a video shard: track ids, then per-track consistency (``annotator.temporal.consistency``),
run on the shard's assembled rows right before they are committed (``pipeline.commit.commit_shard``, the
same call under Ray and Beam).

Shards of one video (``plan``: frame ranges) are cut with an overlap: a shard reads ``overlap``
frames past its end, which smooth its last frames and are dropped before the commit (the next shard
commits them). Its track ids continue its predecessor's: the predecessor's committed labels of the
last ``TrackerConfig.window`` frames before the shard's start are the tracker's state there
(``annotator.temporal.tracking``: the state is a function of that window), and they anchor the left/right
labels, the body scale and the smoothing of the tracks they continue. So a shard's labels depend
on its predecessor's committed labels, never on timing: runners commit the shards of one video in
frame order (``CommitOrder``), a rerun or a resume reads the same committed predecessor and gives
the same ids. A shard whose predecessor failed for good starts its tracks afresh (ids stay unique:
they are named after the frame a track begins).

Per person the step writes ``track_id`` and, when the temporal consistency is on (the default for
videos; ``RunSpec.temporal``), the per-frame values in ``joints2d_raw`` / ``joints3d_cam_raw`` /
``joints3d_world_raw`` while ``joints2d`` / ``joints3d_*`` hold the consistent ones (``joints2d``
stays the projection of ``joints3d_cam`` through the row's camera). Never imports Ray or Beam.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from annotator.labels import schema
from annotator.pipeline import layout
from annotator.temporal import consistency, tracking
from annotator.temporal.consistency import ConsistencyConfig, SkeletonInfo
from annotator.temporal.tracking import TrackerConfig

_FRAME = re.compile(r"#frame=(\d+)$")


# ---------------------------------------------------------------------------------------------
# numpy core: frames in, ids and consistent poses out


@dataclass
class SequenceFrame:
    """One image of a sequence as the temporal step sees it (camera-frame 3D)."""

    frame: int
    t: int
    boxes: np.ndarray  # [K,5]
    joints2d: np.ndarray  # [K,J,2]
    joints3d: np.ndarray  # [K,J,3] camera frame mm
    conf: np.ndarray | None  # [K,J]
    intrinsics: np.ndarray | None  # 3x3
    distortion: np.ndarray | None
    ids: np.ndarray | None = None  # given: a context frame (committed by a neighbour)

    @property
    def context(self) -> bool:
        return self.ids is not None

    @classmethod
    def from_prediction(cls, frame: int, pred, extrinsics, intrinsics, distortion, every: int = 1) -> SequenceFrame:
        """From an ``encode.Prediction`` (its 3D in the world frame when ``extrinsics`` is given)."""
        p3 = np.asarray(pred.poses3d, np.float64)
        if extrinsics is not None and len(p3):
            ext = np.asarray(extrinsics, np.float64)
            p3 = p3 @ ext[:3, :3].T + ext[:3, 3]
        return cls(frame, frame // every, np.asarray(pred.boxes, np.float64), np.asarray(pred.poses2d, np.float64), p3,
                   None if pred.joint_confidences is None else np.asarray(pred.joint_confidences, np.float64),
                   np.asarray(intrinsics, np.float64), distortion)


@dataclass
class FrameResult:
    ids: np.ndarray  # [K] int64, -1: no track
    joints3d: np.ndarray  # [K,J,3] camera frame
    joints2d: np.ndarray  # [K,J,2]
    changed: bool = False

    def world(self, extrinsics) -> np.ndarray:
        if extrinsics is None:
            return self.joints3d
        ext = np.asarray(extrinsics, np.float64)
        return (self.joints3d - ext[:3, 3]) @ ext[:3, :3]


def process(frames: list[SequenceFrame], skeleton: dict, config: ConsistencyConfig | None,
            tracker: TrackerConfig | None = None) -> list[FrameResult]:
    """Track ids for every frame, and (``config`` given) consistent poses for every tracked person
    of the frames that are not context."""
    names = list(skeleton["joint_names"])
    ids = tracking.track([tracking.Frame(f.t, f.frame, f.boxes, f.joints2d, f.joints3d, f.conf, f.ids)
                          for f in frames], tracker, names)
    results = [FrameResult(i, f.joints3d.copy(), f.joints2d.copy()) for f, i in zip(frames, ids, strict=True)]
    if config is None:
        return results
    skel = SkeletonInfo.of(names, skeleton.get("edges") or [])
    members: dict[int, list[tuple[int, int]]] = {}
    for fi, r in enumerate(results):
        for k, tid in enumerate(r.ids):
            if tid >= 0:
                members.setdefault(int(tid), []).append((fi, k))
    for tid in sorted(members):
        obs = members[tid]
        context = np.array([frames[fi].context for fi, _ in obs])
        if context.all():
            continue
        t = np.array([frames[fi].t for fi, _ in obs])
        x = np.stack([frames[fi].joints3d[k] for fi, k in obs])
        conf = None
        if all(frames[fi].conf is not None for fi, _ in obs):
            conf = np.stack([frames[fi].conf[k] for fi, k in obs])
        new = consistency.make_consistent(t, x, conf, context, skel, config)
        for (fi, k), pose, ctx in zip(obs, new, context, strict=True):
            if ctx:
                continue
            f, r = frames[fi], results[fi]
            r.joints3d[k] = pose
            if f.intrinsics is not None:
                r.joints2d[k] = consistency.project(pose, f.intrinsics, f.distortion)
            r.changed = True
    return results


# ---------------------------------------------------------------------------------------------
# the shard step on Arrow rows


@dataclass(frozen=True)
class TemporalSettings:
    """What a job asks of the temporal step (``RunSpec.temporal``, ``--no-temporal``)."""

    consistency: bool = True  # False: track ids only, per-frame values
    smoothing: str = "rts"
    overlap: int = 8  # frames a video shard reads past its end

    def config(self) -> ConsistencyConfig | None:
        return ConsistencyConfig(smoothing=self.smoothing) if self.consistency else None

    def to_dict(self) -> dict:
        return {"consistency": self.consistency, "smoothing": self.smoothing, "overlap": self.overlap,
                "tracker": TrackerConfig().__dict__}


@dataclass(frozen=True)
class ShardSequence:
    """Where a video shard sits in its video: the frames it commits [start, stop), the step between
    frames, and the shard whose committed labels it continues."""

    video: str
    start: int
    stop: int  # -1: to the end
    every: int
    previous: str | None
    settings: TemporalSettings = field(default_factory=TemporalSettings)


def plan_sequences(shard_rows: list[dict], settings: TemporalSettings) -> dict[str, ShardSequence]:
    """The plan's video shards -> their sequences (commit range = up to the next shard's start)."""
    out: dict[str, ShardSequence] = {}
    videos = [r for r in shard_rows if r.get("kind") == "video"]
    for i, r in enumerate(videos):
        nxt = videos[i + 1] if i + 1 < len(videos) and videos[i + 1]["source"] == r["source"] else None
        prev = videos[i - 1]["shard"] if i > 0 and videos[i - 1]["source"] == r["source"] else None
        stop = nxt["start"] if nxt is not None else int(r["stop"])
        every = max(1, int(r["every"] or 1))
        out[r["shard"]] = ShardSequence(r["source"], int(r["start"]), stop, every, prev, settings)
    return out


def frame_of(source_uri: str) -> int | None:
    m = _FRAME.search(source_uri or "")
    return int(m.group(1)) if m else None


def _arr(rows, key, fallback=None):
    return [np.asarray(p[key] if p.get(key) is not None else p[fallback], np.float64) for p in rows]


def _frames_of(table: pa.Table, every: int, context: bool) -> list[tuple[int, SequenceFrame]]:
    """(row index, frame) for the ok rows of ``table``; per-frame values come from the raw columns
    where a previous temporal step filled them (a ``--retry-errors`` merge), else the values; context
    frames take the committed (consistent) values and ids."""
    out = []
    cols = table.select(["source_uri", "status", "intrinsics", "distortion", "extrinsics", "people"]).to_pylist()
    for i, row in enumerate(cols):
        f = frame_of(row["source_uri"])
        if f is None or row["status"] != "ok":
            continue
        ppl = row["people"] or []
        raw = "" if context else "_raw"
        k3 = "joints3d_cam" + raw if ppl and ppl[0].get("joints3d_cam" + raw) is not None else "joints3d_cam"
        k2 = "joints2d" + raw if ppl and ppl[0].get("joints2d" + raw) is not None else "joints2d"
        j = len(ppl[0]["joints2d"]) if ppl else 0
        boxes = np.array([[*p["box"], p["score"]] for p in ppl], np.float64).reshape(-1, 5)
        j2 = np.stack(_arr(ppl, k2)) if ppl else np.zeros((0, j, 2))
        j3 = np.stack(_arr(ppl, k3)) if ppl else np.zeros((0, j, 3))
        conf = (np.stack(_arr(ppl, "joint_confidences")) if ppl and all(p.get("joint_confidences") is not None
                                                                         for p in ppl) else None)
        ids = np.array([-1 if p.get("track_id") is None else p["track_id"] for p in ppl], np.int64) if context else None
        k = None if row["intrinsics"] is None else np.asarray(row["intrinsics"], np.float64).reshape(3, 3)
        d = None if row["distortion"] is None else np.asarray(row["distortion"], np.float64)
        out.append((i, SequenceFrame(f, f // every, boxes, j2, j3, conf, k, d, ids)))
    return out


def _previous_rows(sink: layout.Output, seq: ShardSequence, window: int) -> pa.Table | None:
    """The predecessor's committed rows of the ``window`` frames before this shard's start."""
    if seq.previous is None:
        return None
    rec = sink.read_json(f"{layout.COMMITS}/{layout.record_name(seq.previous)}")
    if rec is None:
        return None
    t = sink.read_part(rec)
    frames = np.array([frame_of(u) if frame_of(u) is not None else -1 for u in t.column("source_uri").to_pylist()])
    keep = frames >= seq.start - window * seq.every
    return t.filter(pa.array(keep))


def apply(table: pa.Table, seq: ShardSequence, sink: layout.Output | None, skeleton: dict,
          continue_previous: bool = True) -> pa.Table:
    """The temporal step on one shard's rows (the label schema's columns, plus any ``_`` columns):
    rows past the shard's commit range (the overlap) are dropped; people get ``track_id`` and, with
    consistency on, consistent values and their per-frame ones in the ``*_raw`` columns."""
    settings = seq.settings
    tracker = TrackerConfig()
    frames_col = np.array([-1 if frame_of(u) is None else frame_of(u) for u in table.column("source_uri").to_pylist()])
    prev = _previous_rows(sink, seq, tracker.window) if continue_previous and sink is not None else None
    context = _frames_of(prev, seq.every, True) if prev is not None else []
    own = _frames_of(table, seq.every, False)
    frames = [f for _, f in context] + [f for _, f in own]
    results = process(frames, skeleton, settings.config(), tracker)[len(context):]
    people = table.column("people").to_pylist()
    exts = table.column("extrinsics").to_pylist()
    for (i, _), res in zip(own, results, strict=True):
        ext = None if exts[i] is None else np.asarray(exts[i], np.float64).reshape(4, 4)
        world = res.world(ext) if ext is not None else None
        for k, p in enumerate(people[i]):
            p["track_id"] = int(res.ids[k]) if res.ids[k] >= 0 else None
            if settings.consistency:
                if p.get("joints3d_cam_raw") is None:  # first pass: keep the per-frame values
                    p["joints2d_raw"], p["joints3d_cam_raw"] = p["joints2d"], p["joints3d_cam"]
                    p["joints3d_world_raw"] = p["joints3d_world"]
                p["joints3d_cam"] = res.joints3d[k].tolist()
                p["joints2d"] = res.joints2d[k].tolist()
                if world is not None:
                    p["joints3d_world"] = world[k].tolist()
    people_type = schema.arrow_schema().field("people").type
    out = table.set_column(table.schema.get_field_index("people"), "people", pa.array(people, people_type))
    stop = seq.stop if seq.stop >= 0 else np.iinfo(np.int64).max
    keep = (frames_col < 0) | ((frames_col >= seq.start) & (frames_col < stop))
    return out.filter(pa.array(keep)) if not keep.all() else out


def skeleton_of_metadata(file_metadata: dict[bytes, bytes]) -> dict:
    """The skeleton (joint names, edges) from a sink's file metadata."""
    return json.loads(file_metadata.get(b"annotator.skeleton", b"{}"))


# ---------------------------------------------------------------------------------------------
# commit order


class CommitOrder:
    """Which assembled shards may commit now: a video shard waits for the shard before it in the
    same video (its labels continue that shard's). Shared by the runners; the runner calls
    ``ready`` with its completed shards and ``done`` / ``failed`` as commits end."""

    def __init__(self, sequences: dict[str, ShardSequence], committed: set[str], work: set[str]):
        self.sequences = sequences
        self.committed = set(committed)
        self.failed: set[str] = set()
        self.work = work

    def previous(self, shard: str) -> str | None:
        seq = self.sequences.get(shard)
        return seq.previous if seq is not None else None

    def can_commit(self, shard: str) -> bool:
        prev = self.previous(shard)
        return prev is None or prev in self.committed or prev not in self.work and prev not in self.failed

    def blocked_by_failure(self, shard: str) -> bool:
        prev = self.previous(shard)
        return prev is not None and prev in self.failed

    def done(self, shard: str) -> None:
        self.committed.add(shard)

    def fail(self, shard: str) -> None:
        self.failed.add(shard)

    def waiting_reason(self, shard: str) -> str:
        return f"waits for shard {self.previous(shard)} of the same video or rig (its track ids continue that shard's)"

