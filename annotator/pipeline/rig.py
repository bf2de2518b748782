"""A calibrated camera rig as job input: its check, its shards (time windows with all their views)
and the fusion step that makes one world-space row per person per frame.

A rig is a folder of synchronised videos or frame folders, one per camera (``RIG/videos/cam01.mp4``
or ``RIG/cam01/``...), and a calibration in one of the formats ``annotator.eval.calibration`` reads
(the caller loads it; cameras here are any objects with ``name``, ``intrinsics``, ``distortion``,
``rotation``, ``translation``, ``size``), on any filesystem (``rig_source``: local, ``gs://``,
``s3://``). ``check`` refuses a rig whose calibration does not fit its views (count, names, image
size, frame offsets) with one line that names the view, before any inference runs. ``windows``
cuts the frames all views share into shards, each read with ``overlap`` frames of context on
either side for the temporal step. ``fuse_window`` is the label step of one shard (numpy;
``annotator.labels.fusion`` per instant, ``annotator.temporal.world`` over the window).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from annotator.labels import camera_codec, fusion
from annotator.labels import multiview_geometry as geo
from annotator.pipeline import calibration, rig_source, sources
from annotator.pipeline.rig_source import frame_files, list_sources, probe  # rig.X, as before they moved there
from annotator.temporal import consistency, tracking, world

KIND = "rig"  # the plan's shard kind of a rig's time window
WORLD_VIEW = "world"  # the ``view`` of a rig frame's fused world-space row

# codecs store frames padded to 16-pixel macroblocks (Pose2Sim's 1080-wide videos: calibrated at 1088)
SIZE_SLACK_PX = 16


class RigError(ValueError):
    """The rig cannot be labelled as given (said before any work starts)."""


@dataclass
class RigSpec:
    """``[rig]`` of a job spec."""

    calibration: str = ""  # calibration folder or file ('' = RIG/calibration)
    offsets: dict = field(default_factory=dict)  # camera -> its frame showing the rig's frame 0 (default 0)
    window: int = 120  # frames per shard
    overlap: int = 8  # frames read past both ends of a window for its temporal step
    temporal: bool = True  # world-space tracks, smoothing, one body size per track
    fps: float = 0.0  # 0: the first video's rate (frame folders: 30)


@dataclass(frozen=True)
class RigView:
    name: str
    camera: object
    source: str
    frames: int
    size: tuple[int, int]  # (width, height) as decoded
    offset: int = 0


@dataclass(frozen=True)
class Rig:
    views: tuple[RigView, ...]
    frames: int  # frames every view has, after the offsets
    fps: float = 30.0  # the first video's frame rate (frame folders: 30)

    @property
    def cameras(self) -> list:
        return [v.camera for v in self.views]


@dataclass(frozen=True)
class Window:
    shard: int
    start: int  # first frame it labels
    stop: int  # one past its last
    read_start: int  # with the context it reads
    read_stop: int


def pair_views(views: list, cameras: list) -> list[tuple[str, object, object]]:
    """(name, camera, source) per view (``views``: paths or URIs): cameras matched by name (``cam01``
    <-> ``cam01.mp4``), else in sorted order when the counts agree (what Pose2Sim does with Qualisys
    serials)."""
    if len(views) < 2:
        raise RigError(f"a rig needs at least two views (videos or frame folders), found {len(views)}")
    stem, name = rig_source.stem, rig_source.name
    by_name = {c.name.lower(): c for c in cameras}
    if all(stem(p).lower() in by_name for p in views):
        return [(stem(p), by_name[stem(p).lower()], p) for p in views]
    known = [p for p in views if stem(p).lower() in by_name]
    if known and len(views) != len(cameras):  # most names match: say which view has no camera
        missing = [name(p) for p in views if stem(p).lower() not in by_name]
        raise RigError(f"{', '.join(missing)}: no calibrated camera of that name (the calibration has "
                       f"{', '.join(c.name for c in cameras)})")
    if len(views) != len(cameras):
        raise RigError(f"{len(views)} views ({', '.join(name(p) for p in views)}) but {len(cameras)} calibrated "
                       f"cameras ({', '.join(c.name for c in cameras)}), and their names do not match")
    return [(stem(p), c, p) for p, c in zip(views, cameras, strict=True)]


def check(root, cameras: list, spec: RigSpec | None = None, storage_options: dict | None = None) -> Rig:
    """The rig at ``root`` (a folder or any fsspec URI) with ``cameras``, or a ``RigError`` naming
    what does not fit."""
    spec = spec or RigSpec()
    if spec.window < 1 or spec.overlap < 0:
        raise RigError("rig window must be >= 1 and overlap >= 0")
    if rig_source.kind(root, storage_options) != "dir":
        raise RigError(f"{rig_source.shown(root)}: no such rig folder (its videos or frame folders, one per camera)")
    views, rates = [], []
    pairs = pair_views(list_sources(root, storage_options), cameras)
    unknown = sorted(set(spec.offsets) - {name for name, _, _ in pairs})
    if unknown:
        raise RigError(f"frame offsets for unknown camera(s) {', '.join(unknown)}; the views are "
                       f"{', '.join(name for name, _, _ in pairs)}")
    for name, cam, source in pairs:
        frames, size, rate = probe(source, storage_options)
        rates.append(rate)
        want = getattr(cam, "size", None)
        if want is not None and (abs(want[0] - size[0]) >= SIZE_SLACK_PX or abs(want[1] - size[1]) >= SIZE_SLACK_PX):
            turned = abs(want[0] - size[1]) < SIZE_SLACK_PX and abs(want[1] - size[0]) < SIZE_SLACK_PX
            raise RigError(f"{name}: its frames are {size[0]}x{size[1]} but camera {cam.name} is calibrated for "
                           f"{want[0]}x{want[1]}" + (" (rotated by 90 degrees?)" if turned else ""))
        offset = int(spec.offsets.get(name, 0))
        if not 0 <= offset < frames:
            raise RigError(f"{name}: frame offset {offset} is outside its {frames} frames")
        views.append(RigView(name, cam, str(source), frames, size, offset))
    common = min(v.frames - v.offset for v in views)
    return Rig(tuple(views), common, spec.fps or next((r for r in rates if r), 30.0))


def calibration_path(spec) -> str:
    """Where the rig of ``spec`` (a ``RunSpec`` with ``rig``) keeps its calibration: a local path
    (as pathlib writes it) or a URI."""
    return rig_source.shown(spec.rig.calibration or sources.join(str(spec.input), "calibration"))


def load(spec) -> Rig:
    """The rig of ``spec`` (INPUT with ``[rig]``, on any filesystem its ``storage_options`` reach)
    checked against its calibration: a ``RigError`` naming what does not fit, before any work."""
    where, so = calibration_path(spec), spec.storage_options
    found = rig_source.kind(where, so)
    if found is None:
        raise RigError(f"{where}: no calibration (give --rig-calibration or [rig] calibration)")
    try:
        cams = calibration.load(where, so) if found == "dir" else calibration.read(where, so)
    except (OSError, ValueError, KeyError) as e:
        raise RigError(f"{where}: cannot read the calibration: {e}") from None
    return check(spec.input, cams, spec.rig, so)


def plan_options(opts, spec, root_uri: str):
    """The ``plan.PlanOptions`` of a job: of kind "rig" with the rig's shard rows when ``spec`` has a
    rig (checked against its calibration again: the plan is made of what the check read)."""
    if spec.rig is None:
        return opts
    return dataclasses.replace(opts, kind=KIND, rig=tuple(plan_rows(load(spec), spec.rig, root_uri,
                                                                    spec.storage_options)))


def with_world_up(spec):
    """``spec`` with the world's up direction of its rig's calibration where the format fixes it
    (Qualisys labs are Z-up; ``calibration.world_up``): the floor step needs it, and the default
    (-Y, for cameras looking level) would put a Z-up lab's floor on a wall."""
    where, so = calibration_path(spec), spec.storage_options
    up = calibration.world_up(where, so) if rig_source.kind(where, so) == "dir" else None
    if up is None:
        return spec
    return dataclasses.replace(spec, settings=dataclasses.replace(spec.settings, world_up_vector=tuple(up)))


def windows(n_frames: int, window: int, overlap: int) -> list[Window]:
    """Shards of ``window`` frames covering 0..n_frames-1 once each, read with ``overlap`` frames of
    context on either side (clipped to the rig)."""
    out = []
    for shard, start in enumerate(range(0, n_frames, window)):
        stop = min(start + window, n_frames)
        out.append(Window(shard, start, stop, max(0, start - overlap), min(n_frames, stop + overlap)))
    return out


def view_people(preds: list[dict], rig: Rig) -> list[fusion.ViewPeople]:
    """One instant's per-view labels (dicts: ``pixels`` [K,J,2] the model's 2D in that view's
    image, ``conf`` [K,J], ``poses3d`` [K,J,3] world mm) as fusion input (undistorted rays)."""
    out = []
    for p, v in zip(preds, rig.views, strict=True):
        pixels = np.asarray(p["pixels"], np.float64)
        rays = geo.undistort_pixels(pixels, v.camera.intrinsics, v.camera.distortion) if pixels.size else pixels
        out.append(fusion.ViewPeople(rays.reshape(pixels.shape), np.asarray(p["conf"], np.float64),
                                     np.asarray(p["poses3d"], np.float64)))
    return out


def fuse_window(window: Window, preds: dict[int, list[dict]], rig: Rig, skeleton: fusion.RigSkeleton,
                config: fusion.FusionConfig | None = None, spec: RigSpec | None = None) -> list[dict]:
    """One world-space row per person per frame of ``window`` (frames ``start..stop-1``; ``preds``
    holds every frame it read, context included: frame -> per-view label dicts). Rows: ``frame``,
    ``track_id`` (``window.shard * tracking.ID_STRIDE + k``; the pipeline's ``apply`` passes the
    window's first frame, the video convention: a track is named after where it begins),
    ``joints_world_mm`` [J,3], ``joint_sigma_mm`` [J], ``views_used`` [J], ``reprojection_px``
    [J], ``quality``; per view (``views``) the fused person in that camera's frame
    (``poses3d_camera`` [J,3]) and image (``poses2d`` [J,2] px, through its lens model), so
    view-level consumers keep working; and the detections it fused (``members``: view name ->
    detection index; ``flipped``: view name -> that detection's left/right exchanged)."""
    spec = spec or RigSpec()
    frames = sorted(preds)
    fused = {f: fusion.fuse(view_people(preds[f], rig), rig.cameras, skeleton, config) for f in frames}
    cfg = world.WorldTrackConfig(fps=spec.fps or rig.fps)
    ids = world.link(np.array(frames, float), [np.array([p.joints.mean(0) for p in fused[f]]).reshape(-1, 3)
                                              for f in frames], cfg)
    joints = {(f, k): p.joints for f in frames for k, p in enumerate(fused[f])}
    if spec.temporal:
        for tid in {int(i) for a in ids for i in a}:
            members = [(f, k) for f, a in zip(frames, ids, strict=True) for k, i in enumerate(a) if i == tid]
            if len(members) >= 3:
                t = np.array([f for f, _ in members], float)
                smoothed = world.smooth_track(t, np.stack([joints[m] for m in members]),
                                              np.stack([fused[f][k].sigma_mm for f, k in members]),
                                              skeleton.names, skeleton.edges, cfg)
                joints.update(zip(members, smoothed, strict=True))
    rows = []
    for f, a in zip(frames, ids, strict=True):
        if not window.start <= f < window.stop:
            continue
        for k, p in enumerate(fused[f]):
            x = joints[(f, k)]
            views = {}
            for v in rig.views:
                cam_xyz = geo.to_camera(x, v.camera)
                views[v.name] = {"poses3d_camera": cam_xyz.astype(np.float32),
                                 "poses2d": consistency.project(cam_xyz, v.camera.intrinsics,
                                                                v.camera.distortion).astype(np.float32)}
            rows.append({"frame": f, "track_id": window.shard * tracking.ID_STRIDE + int(a[k]),
                         "joints_world_mm": x.astype(np.float32), "joint_sigma_mm": p.sigma_mm.astype(np.float32),
                         "views_used": p.views_used.astype(np.int8),
                         "reprojection_px": p.reprojection_px.astype(np.float32), "quality": float(p.quality),
                         "views": views,
                         "members": {rig.views[v].name: int(d) for v, d in sorted(p.members.items())},
                         "flipped": {rig.views[v].name: bool(fl) for v, fl in sorted(p.flipped.items())}})
    return rows


def read_window(rig: Rig, window: Window, storage_options: dict | None = None) -> dict[int, list[np.ndarray]]:
    """RGB uint8 frames ``read_start..read_stop-1`` of every view (each view's offset applied):
    rig frame -> one image per view."""
    wanted = range(window.read_start, window.read_stop)
    out: dict[int, list[np.ndarray]] = {f: [] for f in wanted}
    for v in rig.views:
        if rig_source.kind(v.source, storage_options) == "dir":
            from PIL import Image

            files = frame_files(v.source, storage_options)
            for f in wanted:
                with rig_source.open_file(files[f + v.offset], storage_options) as fh, Image.open(fh) as im:
                    out[f].append(np.asarray(im.convert("RGB")))
            continue
        first, last = window.read_start + v.offset, window.read_stop - 1 + v.offset
        with rig_source.open_video(v.source, storage_options) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= first:
                    out[i - v.offset].append(frame.to_ndarray(format="rgb24"))
                if i >= last:
                    break
    return out


def label_dict(pred) -> dict:
    """One view's ``Prediction`` (world-frame 3D: inferred with the camera's extrinsics) as fusion
    input: the model's own 2D when it has it."""
    pixels = pred.poses2d_raw if pred.poses2d_raw is not None else pred.poses2d
    conf = pred.joint_confidences if pred.joint_confidences is not None else np.ones(pixels.shape[:2], np.float32)
    return {"pixels": pixels, "conf": conf, "poses3d": pred.poses3d}


def label_window(infer, rig: Rig, window: Window, skeleton: fusion.RigSkeleton,
                 config: fusion.FusionConfig | None = None, spec: RigSpec | None = None,
                 storage_options: dict | None = None) -> tuple[list[dict], dict]:
    """One shard of a rig: read its frames, label every view of every frame with ``infer``
    (``infer(view_index, [ImageInput]) -> [Prediction]``, e.g. a ``pipeline.infer.PoseInference``
    per view), fuse (``fuse_window``). Returns (rows, seconds: ``inference``, ``fusion``)."""
    import time

    from annotator.pipeline.infer import ImageInput

    images = read_window(rig, window, storage_options)
    started = time.perf_counter()
    preds = {}
    for f, per_view in images.items():
        preds[f] = [label_dict(infer(k, [ImageInput(img, v.camera.intrinsics, v.camera.distortion,
                                                    v.camera.extrinsics)])[0])
                    for k, (img, v) in enumerate(zip(per_view, rig.views, strict=True))]
    inferred = time.perf_counter()
    rows = fuse_window(window, preds, rig, skeleton, config, spec)
    return rows, {"inference": inferred - started, "fusion": time.perf_counter() - inferred}


# ---------------------------------------------------------------------------------------------
# a rig as a job's input: the plan's shards, reading them, the label step at the commit


@dataclass(frozen=True)
class ViewCamera:
    """A view's calibrated camera as the fusion takes it (what ``eval.calibration.Camera`` has)."""

    name: str
    intrinsics: np.ndarray
    distortion: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    size: tuple[int, int] | None = None

    @property
    def extrinsics(self) -> np.ndarray:
        e = np.eye(4, dtype=np.float32)
        e[:3, :3], e[:3, 3] = self.rotation, self.translation
        return e

    @classmethod
    def of(cls, name: str, cam: camera_codec.Camera) -> ViewCamera:
        ext = np.asarray(cam.extrinsics, np.float64)
        return cls(name, np.asarray(cam.intrinsics, np.float64), np.asarray(cam.distortion, np.float64),
                   ext[:3, :3], ext[:3, 3])


def plan_rows(rig: Rig, spec: RigSpec, root_uri: str, storage_options: dict | None = None) -> list[dict]:
    """The plan's shard rows of ``rig`` (without shard ids): one per time window, ``start``/``stop``
    the frames it labels, ``camera`` the JSON its read needs: the frames it reads (with the context
    of its temporal step) and per view its name, offset, camera and source (a video, or the
    window's frame files; resolved local paths, or URIs: ``rig_source.plan_uri``)."""
    out = []
    files = {v.name: [rig_source.plan_uri(f) for f in frame_files(v.source, storage_options)]
             for v in rig.views if rig_source.kind(v.source, storage_options) == "dir"}
    for w in windows(rig.frames, spec.window, spec.overlap):
        views = []
        for v in rig.views:
            cam = camera_codec.Camera(np.asarray(v.camera.intrinsics, np.float32), "calibration",
                                      np.asarray(v.camera.distortion, np.float32),
                                      np.asarray(v.camera.extrinsics, np.float32))
            doc = {"name": v.name, "offset": v.offset, "camera": json.loads(camera_codec.to_json(cam))}
            if v.name in files:
                doc["files"] = files[v.name][w.read_start + v.offset:w.read_stop + v.offset]
            else:
                doc["video"] = rig_source.plan_uri(v.source)
            views.append(doc)
        read = {"read_start": w.read_start, "read_stop": w.read_stop, "fps": rig.fps, "views": views}
        out.append({"kind": KIND, "source": root_uri, "name": rig_source.name(root_uri),
                    "members": (w.stop - w.start) * len(rig.views), "bytes": 0, "etag": "",
                    "start": w.start, "stop": w.stop, "every": 1, "camera": json.dumps(read, sort_keys=True)})
    return out


def read_views(shard: dict, storage_options: dict | None = None, fetch: int = 16
               ) -> Iterator[tuple[str, str, np.ndarray | None, bytes | Exception | None, camera_codec.Camera]]:
    """A rig shard's images, view after view: (image id ``VIEW/FRAME``, FRAME the rig's frame; its
    source URI; the RGB frame of a video, or the bytes of a frame file, or the exception reading
    it; the view's camera)."""
    from annotator.pipeline import sources

    doc = json.loads(shard["camera"])
    lo, hi = int(doc["read_start"]), int(doc["read_stop"])
    for v in doc["views"]:
        cam = camera_codec.from_json(v["camera"], "calibration")
        name, offset = v["name"], int(v["offset"])
        if "files" in v:
            files = v["files"]
            for at in range(0, len(files), fetch):
                chunk = files[at:at + fetch]
                for i, (uri, data) in enumerate(zip(chunk, sources.read_many(chunk, storage_options), strict=True)):
                    yield f"{name}/{lo + at + i:06d}", uri, None, data, cam
            continue
        for idx, frame in sources.iter_video_frames(v["video"], lo + offset, hi + offset, 1, storage_options):
            yield f"{name}/{idx - offset:06d}", f"{v['video']}#frame={idx}", frame, None, cam


@dataclass(frozen=True)
class RigShard:
    """Where a rig shard sits: the frames it labels, its views in order, the rig's frame rate and
    the window before it, whose committed tracks its own continue (so a window commits after it:
    ``sequence.CommitOrder``)."""

    shard: str
    source: str
    start: int
    stop: int
    views: tuple[str, ...]
    fps: float
    temporal: bool = True
    previous: str | None = None  # the window before it: its tracks continue that window's

    @property
    def video(self) -> str:
        """Beam's commit group: the windows of one rig, committed in order (``sequence.CommitOrder``)."""
        return f"rig:{self.source}"


def plan_shards(shard_rows: list[dict], spec: RigSpec | None) -> dict[str, RigShard]:
    """The plan's rig shards -> their ``RigShard``."""
    out = {}
    previous: dict[str, str] = {}  # rig -> its last window so far (plan order is time order)
    for r in shard_rows:
        if r.get("kind") != KIND:
            continue
        doc = json.loads(r["camera"])
        out[r["shard"]] = RigShard(r["shard"], r["source"], int(r["start"]), int(r["stop"]),
                                   tuple(v["name"] for v in doc["views"]), float(doc["fps"]),
                                   True if spec is None else spec.temporal, previous.get(r["source"]))
        previous[r["source"]] = r["shard"]
    return out


def previous_tracks(sink, shard: str) -> dict[int, tuple[int, np.ndarray]]:
    """The committed world people of window ``shard``: track id -> (its last frame, centroid)."""
    from annotator.pipeline import layout

    rec = sink.read_json(f"{layout.COMMITS}/{layout.record_name(shard)}")
    if rec is None:
        return {}
    t = sink.read_part(rec, ["image_id", "view", "people"])
    out: dict[int, tuple[int, np.ndarray]] = {}
    for image_id, view, people in zip(*(t.column(c).to_pylist() for c in ("image_id", "view", "people")),
                                      strict=True):
        if view != WORLD_VIEW:
            continue
        frame = int(image_id.rpartition("/")[2])
        for p in people or []:
            if p.get("track_id") is not None and frame >= out.get(p["track_id"], (-1,))[0]:
                out[int(p["track_id"])] = (frame, np.asarray(p["joints3d_world"], np.float64).mean(0))
    return out


def continue_tracks(fused: list[dict], before: dict[int, tuple[int, np.ndarray]], fps: float,
                    config: world.WorldTrackConfig | None = None) -> None:
    """Rename (in place) the tracks of a window's fused rows that continue a track of the window
    before it (``before``: ``previous_tracks``): each track's first frame against each earlier
    track's last frame, by centroid distance within the distance one can move plus the noise
    (``world.link``'s gate), one to one."""
    if not fused or not before:
        return
    config = config or world.WorldTrackConfig(fps=fps)
    first: dict[int, tuple[int, np.ndarray]] = {}
    for r in sorted(fused, key=lambda r: r["frame"]):
        first.setdefault(r["track_id"], (r["frame"], r["joints_world_mm"].astype(np.float64).mean(0)))
    mine, theirs = sorted(first), sorted(before)
    cost = np.full((len(mine), len(theirs)), tracking.INFEASIBLE)
    for i, m in enumerate(mine):
        f0, c0 = first[m]
        for k, tid in enumerate(theirs):
            f1, c1 = before[tid]
            d = float(np.linalg.norm(c0 - c1))
            if f0 > f1 and d < config.max_speed_mm_s * (f0 - f1) / config.fps + config.noise_mm:
                cost[i, k] = d
    rename = {mine[i]: theirs[k] for i, k in tracking.linear_assignment(cost) if cost[i, k] < tracking.INFEASIBLE}
    for r in fused:
        r["track_id"] = rename.get(r["track_id"], r["track_id"])


def split_id(image_id: str) -> tuple[str, int] | None:
    """``VIEW/FRAME`` -> (view, frame); None for ids of no frame (a shard's failure row)."""
    view, _, frame = (image_id or "").rpartition("/")
    return (view, int(frame)) if view and frame.isdigit() else None


def _mono(person: dict, key: str) -> list:
    """A view's own value of a person: the per-frame (``_raw``) one where an earlier step kept it."""
    raw = person.get(key + "_raw")
    return raw if raw is not None else person[key]


def apply(table: pa.Table, rs: RigShard, skeleton: dict, config: fusion.FusionConfig | None = None,
          sink=None, continue_previous: bool = True) -> pa.Table:
    """The label step of one rig shard on its assembled rows (the label schema's columns plus any
    ``_`` columns): every frame's views fused (``fuse_window``; the views' own labels are its input:
    the network's 2D ``joints2d_net`` where the model gives it, else ``joints2d``, and the world 3D,
    from the ``*_raw`` values where a previous commit kept them). Each fused detection gets the fused
    person (reprojected ``joints2d``, ``joints3d_cam``, world ``joints3d_world``, ``track_id``,
    ``fused_views``, ``views_used``, ``reprojection_px``, the fused sigma and quality; its own
    values in the ``*_raw`` columns); people that no other view sees stay monocular. Each frame gains
    one world row (``view`` "world") holding its fused people. Rows outside the shard's frames
    (context) are dropped. With ``sink`` (``continue_previous``), tracks continue those the window
    before it committed (``continue_tracks``), so one person keeps one id through the rig."""
    rows = table.sort_by("image_id").to_pylist()
    rows = [r for r in rows if r.get("view") != WORLD_VIEW]  # a --retry-errors merge: made again below
    names = list(skeleton.get("joint_names") or [])
    skel = fusion.RigSkeleton.of(names, skeleton.get("edges") or [])
    index: dict[int, dict[str, int]] = {}
    cams: dict[str, ViewCamera] = {}
    for i, r in enumerate(rows):
        key = split_id(r["image_id"])
        if key is None or key[0] not in rs.views:
            continue
        r["view"] = key[0]
        index.setdefault(key[1], {})[key[0]] = i
        if key[0] not in cams and r["status"] == "ok" and r["intrinsics"] is not None and r["extrinsics"] is not None:
            cams[key[0]] = ViewCamera.of(key[0], camera_codec.from_lists(r["intrinsics"], r["distortion"],
                                                                         r["extrinsics"], r["camera_source"]))
    views = [v for v in rs.views if v in cams]  # a view none of whose frames decoded takes no part
    n_joints = len(names)
    rig = Rig(tuple(RigView(v, cams[v], "", 0, (0, 0)) for v in views), 0, rs.fps)
    preds: dict[int, list[dict]] = {}
    for f, per_view in sorted(index.items()):
        preds[f] = []
        for v in views:
            r = rows[per_view[v]] if v in per_view else None
            people = (r["people"] or []) if r is not None and r["status"] == "ok" else []
            preds[f].append({
                "pixels": np.array([p["joints2d_net"] if p.get("joints2d_net") is not None else _mono(p, "joints2d")
                                    for p in people], np.float64).reshape(-1, n_joints, 2),
                "conf": np.array([p["joint_confidences"] if p.get("joint_confidences") is not None
                                  else [1.0] * n_joints for p in people], np.float64).reshape(-1, n_joints),
                "poses3d": np.array([_mono(p, "joints3d_world") for p in people], np.float64).reshape(-1, n_joints, 3)})
    fused = fuse_window(Window(rs.start, rs.start, rs.stop, rs.start, rs.stop), preds, rig, skel, config,
                        RigSpec(temporal=rs.temporal, fps=rs.fps)) if len(views) >= 2 else []
    if sink is not None and continue_previous and rs.previous is not None:
        continue_tracks(fused, previous_tracks(sink, rs.previous), rs.fps)
    world_people: dict[int, list[dict]] = {}
    for fr in fused:
        person = {"box": [], "score": 1.0, "pose_score": None, "joints2d": [],
                  "joints3d_cam": fr["joints_world_mm"].tolist(), "joints3d_world": fr["joints_world_mm"].tolist(),
                  "joint_confidences": None, "quality": fr["quality"],
                  "depth_sigma_mm": float(np.median(fr["joint_sigma_mm"])), "depth_source": "rig",
                  "track_id": fr["track_id"], "joints2d_raw": None, "joints3d_cam_raw": None,
                  "joints3d_world_raw": None, "joint_sigma_mm": fr["joint_sigma_mm"].tolist(),
                  "fused_views": sorted(fr["members"]), "views_used": fr["views_used"].astype(int).tolist(),
                  "reprojection_px": fr["reprojection_px"].tolist()}
        world_people.setdefault(fr["frame"], []).append(person)
        for v, det in fr["members"].items():
            p = rows[index[fr["frame"]][v]]["people"][det]
            if p.get("joints3d_cam_raw") is None:  # first pass: keep the view's own values
                p["joints2d_raw"], p["joints3d_cam_raw"] = p["joints2d"], p["joints3d_cam"]
                p["joints3d_world_raw"] = p["joints3d_world"]
            p.update({k: person[k] for k in ("joints3d_world", "quality", "depth_sigma_mm", "depth_source",
                                             "track_id", "joint_sigma_mm", "fused_views", "views_used",
                                             "reprojection_px")})
            p["joints2d"] = fr["views"][v]["poses2d"].tolist()
            p["joints3d_cam"] = fr["views"][v]["poses3d_camera"].tolist()
    keep = [r for r in rows if (k := split_id(r["image_id"])) is None or rs.start <= k[1] < rs.stop]
    blank = {c: None for c in table.column_names}
    for f in sorted(world_people):
        keep.append({**blank, "image_id": f"{WORLD_VIEW}/{f:06d}", "source_uri": f"{rs.source}#frame={f}",
                     "shard": rs.shard, "status": "ok", "extrinsics": np.eye(4).ravel().tolist(),
                     "camera_source": KIND, "num_people": len(world_people[f]), "people": world_people[f],
                     "view": WORLD_VIEW})
    return pa.Table.from_pylist(keep, schema=table.schema)


def is_world(table: pa.Table) -> pa.Array:
    """Which rows are a rig frame's fused world rows (``view`` "world")."""
    import pyarrow.compute as pc

    if "view" not in table.column_names:
        return pa.array([False] * table.num_rows)
    return pc.fill_null(pc.equal(table.column("view"), WORLD_VIEW), False)
