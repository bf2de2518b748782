"""A calibrated camera rig as job input: its check, its shards (time windows with all their views)
and the fusion step that makes one world-space row per person per frame.

A rig is a folder of synchronised videos or frame folders, one per camera (``RIG/videos/cam01.mp4``
or ``RIG/cam01/``...), and a calibration in one of the formats ``annotator.eval.calibration`` reads
(the caller loads it; cameras here are any objects with ``name``, ``intrinsics``, ``distortion``,
``rotation``, ``translation``, ``size``). ``check`` refuses a rig whose calibration does not fit its
views (count, names, image size, frame offsets) with one line that names the view, before any
inference runs. ``windows`` cuts the frames all views share into shards, each read with
``overlap`` frames of context on either side for the temporal step. ``fuse_window`` is the label
step of one shard (numpy; ``annotator.labels.fusion`` per instant, ``annotator.temporal.world``
over the window).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotator.labels import fusion
from annotator.labels import multiview_geometry as geo
from annotator.temporal import consistency, tracking, world

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
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


def natural_key(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def list_sources(root: str | Path) -> list[Path]:
    """The rig's views: videos or frame folders in ``root/videos`` (else ``root``), in natural order."""
    root = Path(root)
    vdir = root / "videos" if (root / "videos").is_dir() else root
    return sorted([p for p in vdir.iterdir() if (p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
                   or (p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()))],
                  key=lambda p: natural_key(p.name))


def pair_views(sources: list[Path], cameras: list) -> list[tuple[str, object, Path]]:
    """(name, camera, source) per view: cameras matched by name (``cam01`` <-> ``cam01.mp4``), else in
    sorted order when the counts agree (what Pose2Sim does with Qualisys serials)."""
    if len(sources) < 2:
        raise RigError(f"a rig needs at least two views (videos or frame folders), found {len(sources)}")
    by_name = {c.name.lower(): c for c in cameras}
    if all(p.stem.lower() in by_name for p in sources):
        return [(p.stem, by_name[p.stem.lower()], p) for p in sources]
    if len(sources) != len(cameras):
        raise RigError(f"{len(sources)} views ({', '.join(p.name for p in sources)}) but {len(cameras)} calibrated "
                       f"cameras ({', '.join(c.name for c in cameras)}), and their names do not match")
    return [(p.stem, c, p) for p, c in zip(sources, cameras, strict=True)]


def frame_files(source: Path) -> list[Path]:
    files = (f for f in source.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files, key=lambda p: natural_key(p.name))


def probe(source: Path) -> tuple[int, tuple[int, int], float | None]:
    """(frames, (width, height), fps or None) of a video or a frame folder, without decoding it all."""
    if source.is_dir():
        from PIL import Image

        files = frame_files(source)
        with Image.open(files[0]) as im:
            return len(files), im.size, None
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        frames = int(stream.frames) or sum(1 for _ in container.decode(stream))
        rate = float(stream.average_rate) if stream.average_rate else None
        return frames, (int(stream.width), int(stream.height)), rate


def check(root: str | Path, cameras: list, spec: RigSpec | None = None) -> Rig:
    """The rig at ``root`` with ``cameras``, or a ``RigError`` naming what does not fit."""
    spec = spec or RigSpec()
    if spec.window < 1 or spec.overlap < 0:
        raise RigError("rig window must be >= 1 and overlap >= 0")
    views, rates = [], []
    pairs = pair_views(list_sources(root), cameras)
    unknown = sorted(set(spec.offsets) - {name for name, _, _ in pairs})
    if unknown:
        raise RigError(f"frame offsets for unknown camera(s) {', '.join(unknown)}; the views are "
                       f"{', '.join(name for name, _, _ in pairs)}")
    for name, cam, source in pairs:
        frames, size, rate = probe(source)
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
    ``track_id`` (``shard * tracking.ID_STRIDE + k``), ``joints_world_mm`` [J,3], ``joint_sigma_mm``
    [J], ``views_used`` [J], ``reprojection_px`` [J], ``quality``, and per view (``views``) the fused
    person in that camera's frame (``poses3d_camera`` [J,3]) and image (``poses2d`` [J,2] px, through
    its lens model), so view-level consumers keep working."""
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
                         "views": views})
    return rows


def read_window(rig: Rig, window: Window) -> dict[int, list[np.ndarray]]:
    """RGB uint8 frames ``read_start..read_stop-1`` of every view (each view's offset applied):
    rig frame -> one image per view."""
    wanted = range(window.read_start, window.read_stop)
    out: dict[int, list[np.ndarray]] = {f: [] for f in wanted}
    for v in rig.views:
        source = Path(v.source)
        if source.is_dir():
            from PIL import Image

            files = frame_files(source)
            for f in wanted:
                with Image.open(files[f + v.offset]) as im:
                    out[f].append(np.asarray(im.convert("RGB")))
            continue
        import av

        first, last = window.read_start + v.offset, window.read_stop - 1 + v.offset
        with av.open(str(source)) as container:
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
                 config: fusion.FusionConfig | None = None, spec: RigSpec | None = None) -> tuple[list[dict], dict]:
    """One shard of a rig: read its frames, label every view of every frame with ``infer``
    (``infer(view_index, [ImageInput]) -> [Prediction]``, e.g. a ``pipeline.infer.PoseInference``
    per view), fuse (``fuse_window``). Returns (rows, seconds: ``inference``, ``fusion``)."""
    import time

    from annotator.pipeline.infer import ImageInput

    images = read_window(rig, window)
    started = time.perf_counter()
    preds = {}
    for f, per_view in images.items():
        preds[f] = [label_dict(infer(k, [ImageInput(img, v.camera.intrinsics, v.camera.distortion,
                                                    v.camera.extrinsics)])[0])
                    for k, (img, v) in enumerate(zip(per_view, rig.views, strict=True))]
    inferred = time.perf_counter()
    rows = fuse_window(window, preds, rig, skeleton, config, spec)
    return rows, {"inference": inferred - started, "fusion": time.perf_counter() - inferred}
