"""3D accuracy against calibrated multi-view video: triangulated pseudo ground truth vs monocular output.

Method (``../shared/reference/models.md`` section 7, extended to several people):

1. Run the model monocularly on every view of the chosen frames, with each camera's true
   intrinsics, distortion and extrinsics, so ``poses3d`` comes out in the shared world frame (mm).
2. Associate people across views: two detections in different views are the same person when
   their 2D joints agree with the epipolar geometry (median symmetric epipolar distance, px).
   Pairs are merged greedily, best first, never putting two detections of one view together.
3. Triangulate each associated person from its views' 2D (the model's own 2D detections,
   ``poses2d_raw``, when it has them, else ``poses2d``), undistorted with the calibration, by
   confidence-weighted DLT; views that reproject a joint badly are dropped and it is solved again.
   Joints seen confidently in at least two views form the pseudo ground truth.
4. Each view's prediction of an associated person is matched to its triangulation and scored:
   root-relative MPJPE, absolute root (pelvis) error, root depth bias along that view's ray,
   PA-MPJPE (similarity Procrustes), limb-length scale (prediction / triangulation, median over
   limbs), PCK@150 mm (root-relative). Summaries are medians over people x frames x views.

Independent 2D makes the reference independent of the monocular depth, which is what is measured.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotator.eval import metrics

# shared with ``annotator eval mocap`` (``annotator.eval.metrics``); kept reachable from here
from annotator.eval.metrics import closest_detection as closest_detection
from annotator.eval.metrics import procrustes_aligned as procrustes_aligned
from annotator.eval.metrics import quality_vs_error as quality_vs_error
from annotator.eval.metrics import root_of as root_of
from annotator.labels import multiview_geometry as geometry
from annotator.pipeline import calibration
from annotator.pipeline.infer import ImageInput, InferenceSettings, PoseInference

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Settings:
    frames: int = 10
    num_aug: int = 1
    model: str = "default"
    skeleton: str = ""
    detector_threshold: float = 0.3
    min_confidence: float = 0.5  # a joint observation counts for triangulation above this
    association_px: float = 60.0  # max median epipolar distance of one person across two views
    reprojection_px: float = 40.0  # observations reprojecting worse are dropped
    pck_mm: float = 150.0
    match_px: float = 100.0  # a view's prediction shows a triangulated person when its 2D is this close
    suppress_implausible_poses: bool = True
    # the world's up direction (None: as the calibration format fixes it, else each camera's own
    # up, so crops are upright as without extrinsics) and whether the floor X . up =
    # floor_height_mm fixes depth and scale (``annotator.labels.ground_plane``; needs a known up)
    world_up: tuple[float, float, float] | None = None
    ground_plane: bool = False
    floor_height_mm: float = 0.0
    export_mocap: bool = False  # also write the triangulation as an ``eval mocap`` dataset (OUT/mocap/)
    body_prior: bool = True  # the population prior of body size (``annotator.labels.body_size``), as the pipeline


@dataclass
class View:
    name: str
    camera: calibration.Camera
    source: Path


@dataclass
class PersonResult:
    frame: int
    view: str
    person: int  # index of the triangulated person in this frame
    root_relative_mpjpe_mm: float
    root_error_mm: float
    root_depth_bias_mm: float
    pa_mpjpe_mm: float
    limb_scale: float
    pck: float
    joints: int
    views_in_triangulation: int
    quality: float = float("nan")  # annotator.labels.quality of this prediction (the pipeline's people[].quality)
    swapped: float = float("nan")  # 1 when the prediction with left/right exchanged is closer
    depth_sigma_mm: float = float("nan")  # the prediction's own 1-sigma depth uncertainty
    grounded: bool = False  # its depth came from the ground plane
    joint_within_1_sigma: float = float("nan")  # share of root-relative joint errors within joint_sigma_mm
    joint_within_2_sigma: float = float("nan")
    # the triangulated root (world mm): tells people apart across frames (per-person summaries)
    reference_root_x_mm: float = float("nan")
    reference_root_y_mm: float = float("nan")
    reference_root_z_mm: float = float("nan")
    extra: dict = field(default_factory=dict)  # joint_errors [J], joint_sigmas [J] (not in people.csv)


# ------------------------------------------------------------------------------ scene loading
def find_views(scene_dir: Path, cameras: list[calibration.Camera]) -> list[View]:
    """Pair ``videos/camNN.mp4`` (or ``videos/camNN/`` frame folders) with calibrated cameras.

    Cameras are matched by name (``cam01`` <-> ``cam01.mp4``) and otherwise by sorted order, which
    is what Pose2Sim does with Qualisys serials (``annotator.pipeline.rig``, which rig jobs share)."""
    from annotator.pipeline import rig

    return [View(name, cam, Path(source))
            for name, cam, source in rig.pair_views(rig.list_sources(scene_dir), cameras)]


def count_frames(source: Path) -> int:
    if source.is_dir():
        return len([f for f in source.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES])
    import av

    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_frames(source: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """RGB uint8 frames at ``indices`` (decoded sequentially; videos are short here)."""
    wanted = set(indices)
    if source.is_dir():
        files = sorted((f for f in source.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: calibration._natural_key(p.name))
        from PIL import Image

        return {i: np.asarray(Image.open(files[i]).convert("RGB")) for i in wanted}
    import av

    out: dict[int, np.ndarray] = {}
    with av.open(str(source)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(wanted):
                break
    return out


# ------------------------------------------------------------------------------ geometry (numpy)
def undistort_points(pixels: np.ndarray, cam: calibration.Camera) -> np.ndarray:
    """Image pixels [..., 2] -> undistorted normalised coordinates (the estimator's lens model)."""
    from annotator.estimator import camera as tfcam

    shape = pixels.shape
    flat = pixels.reshape(1, -1, 2).astype(np.float32)
    rays = tfcam.pixels_to_rays(flat, cam.intrinsics[None], cam.distortion[None]).numpy()
    return rays.reshape(shape)


def reproject(point: np.ndarray, cam: calibration.Camera) -> np.ndarray:
    """World point (mm) -> image pixels through the full lens model."""
    from annotator.estimator import camera as tfcam

    pc = cam.rotation @ point + cam.translation
    return tfcam.project_distorted(pc[None, None].astype(np.float32), cam.intrinsics[None],
                                   cam.distortion[None]).numpy()[0, 0]


# shared with rig fusion (``annotator.labels.fusion``); kept reachable from here
triangulate = geometry.triangulate
epipolar_distance_px = geometry.epipolar_distance_px


# ------------------------------------------------------------------------------ association
def associate(detections: list[dict], views: list[View], settings: Settings,
              mirror: list[int] | None = None) -> list[dict[int, int]]:
    """Clusters {view index: detection index} of one person across views (greedy, best pair first).

    ``mirror`` (left/right counterpart of each joint): the cost of a pair is the better of the
    labels as given and left/right swapped, since monocular models confuse sides of people seen
    from behind; triangulation later drops the swapped observations by their reprojection."""
    pairs = []
    for va in range(len(views)):
        for vb in range(va + 1, len(views)):
            da, db = detections[va], detections[vb]
            for i in range(len(da["rays"])):
                for j in range(len(db["rays"])):
                    cost, flip = geometry.pair_cost(da["rays"][i], da["conf"][i], db["rays"][j], db["conf"][j],
                                                    views[va].camera, views[vb].camera, settings.min_confidence,
                                                    mirror)
                    if cost < settings.association_px:
                        pairs.append((cost, va, i, vb, j, flip))
    return [{v: det for v, (det, _) in c.items()} for c in geometry.merge_pairs(pairs)]


def triangulate_person(cluster: dict[int, int], detections: list[dict], views: list[View],
                       settings: Settings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joints [J,3] (mm, world), valid [J], number of views used per joint [J]."""
    n_joints = detections[next(iter(cluster))]["rays"].shape[1]
    out = np.full((n_joints, 3), np.nan)
    used = np.zeros(n_joints, int)
    for j in range(n_joints):
        obs = [(v, detections[v]["rays"][d][j], detections[v]["pixels"][d][j], detections[v]["conf"][d][j])
               for v, d in cluster.items() if detections[v]["conf"][d][j] > settings.min_confidence]
        for _ in range(len(obs)):
            if len(obs) < 2:
                break
            point = triangulate(np.array([o[1] for o in obs]), np.array([views[o[0]].camera.projection() for o in obs]),
                                np.array([o[3] for o in obs]))
            errors = [np.linalg.norm(reproject(point, views[o[0]].camera) - o[2]) for o in obs]
            worst = int(np.argmax(errors))
            if errors[worst] <= settings.reprojection_px:
                out[j], used[j] = point, len(obs)
                break
            obs.pop(worst)
    return out, used >= 2, used


# ------------------------------------------------------------------------------ scoring
def score(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray, names: list[str], cam: calibration.Camera,
          settings: Settings, mirror: list[int] | None = None) -> dict | None:
    """Metrics of one predicted person against its triangulation (both [J,3] world mm;
    ``metrics.person_metrics``: the same definitions as ``annotator eval mocap``)."""
    out = metrics.person_metrics(pred, ref, valid, names, cam.rotation, cam.translation, settings.pck_mm, mirror)
    if out is not None:
        out["extra"] = {"joint_errors": out.pop("joint_errors")}
    return out


METRICS = ("root_relative_mpjpe_mm", "root_error_mm", "root_depth_bias_mm", "pa_mpjpe_mm", "limb_scale", "pck",
           "swapped")


def summarize(rows: list) -> dict:
    """Medians over scored predictions (``swapped``: the share of predictions with left and right
    exchanged). ``rows`` are ``PersonResult``s or dicts of metrics."""
    get = metrics.value
    out = {}
    for m in METRICS:
        values = np.array([get(r, m) for r in rows], np.float64)
        values = values[np.isfinite(values)]
        if m == "swapped":
            out["swap_rate"] = round(float(values.mean()), 3) if len(values) else None
            continue
        out[m] = round(float(np.median(values)), 4 if m in ("limb_scale", "pck") else 1) if len(values) else None
        if m == "root_relative_mpjpe_mm" and len(values):
            out["root_relative_mpjpe_mean_mm"] = round(float(values.mean()), 1)
    bias = np.array([get(r, "root_depth_bias_mm") for r in rows], np.float64)
    sigma = np.array([get(r, "depth_sigma_mm") for r in rows], np.float64)
    # calibration of the depth uncertainty: ~0.68 of the errors should lie within 1 sigma
    out["depth_within_1_sigma"] = metrics.within_sigma(bias, sigma)
    out["depth_within_2_sigma"] = metrics.within_sigma(bias, sigma, 2.0)
    err, sig = joint_errors_and_sigmas(rows)
    out["joint_within_1_sigma"] = metrics.within_sigma(err, sig, 1.0)
    out["joint_within_2_sigma"] = metrics.within_sigma(err, sig, 2.0)
    grounded = np.array([bool(get(r, "grounded")) if not isinstance(get(r, "grounded"), float) else False
                         for r in rows])
    out["grounded_share"] = round(float(grounded.mean()), 3) if len(rows) else None
    return out


# ------------------------------------------------------------------------------ the run, in pieces
@dataclass
class Scene:
    """A calibrated multi-view scene with the frames to evaluate decoded once."""

    views: list[View]
    indices: list[int]
    frames: dict[str, dict[int, np.ndarray]]  # view name -> frame index -> RGB
    world_up: tuple[float, float, float] | None = None  # where the calibration format fixes it


def load_scene(scene_dir: str | Path, n_frames: int) -> Scene:
    """Cameras, views and ``n_frames`` evenly spaced frames of every view."""
    scene_dir = Path(scene_dir)
    views = find_views(scene_dir, calibration.load(scene_dir / "calibration"))
    total = min(count_frames(v.source) for v in views)
    indices = sorted({int(round(x)) for x in np.linspace(0, total - 1, max(1, min(n_frames, total)))})
    return Scene(views, indices, {v.name: read_frames(v.source, indices) for v in views},
                 calibration.world_up(scene_dir / "calibration"))


def inference_settings(settings: Settings, up: np.ndarray | tuple[float, float, float]) -> InferenceSettings:
    """The pipeline's settings for evaluating with a given world up direction."""
    up = np.asarray(up, np.float64)
    up = up / np.linalg.norm(up)
    return InferenceSettings(skeleton=settings.skeleton, num_aug=settings.num_aug,
                             detector_threshold=settings.detector_threshold,
                             suppress_implausible_poses=settings.suppress_implausible_poses,
                             world_up_vector=tuple(float(x) for x in up), ground_plane=settings.ground_plane,
                             ground_height_mm=settings.floor_height_mm, body_prior=settings.body_prior)


def inferences(model, settings: Settings, scene: Scene) -> dict[str, PoseInference]:
    """One inference stage per view around one loaded model: all with the scene's up direction
    when it is known, else each with its camera's own up (no ground plane then)."""
    up = settings.world_up if settings.world_up is not None else scene.world_up
    if settings.ground_plane and up is None:
        raise ValueError("the ground plane needs the world's up direction: the calibration format does not "
                         "fix it, pass world_up (--world-up X,Y,Z)")
    out = {}
    for v in scene.views:
        view_up = up if up is not None else v.camera.rotation.T @ np.array([0.0, -1.0, 0.0])
        out[v.name] = PoseInference(model, inference_settings(settings, view_up))
    return out


def predict(inferences: dict[str, PoseInference], scene: Scene,
            keep: dict | None = None) -> tuple[dict[int, list[dict]], float, int]:
    """Label every view of every frame through the pipeline's inference stage (``PoseInference``:
    the same depth, ground plane, skeleton mapping and quality as the written labels). Returns
    ({frame: [per-view detections]}, seconds, calls); a detection dict holds per-person arrays:
    ``poses3d`` [K,J,3] world mm, ``pixels`` [K,J,2] (the model's own 2D when it has it), ``conf``
    [K,J], ``rays`` (undistorted ``pixels``), ``quality`` [K], ``depth_sigma`` [K] (mm), ``grounded`` [K].
    ``keep``: a dict that also gets each ``Prediction`` by (frame, view name)."""
    out: dict[int, list[dict]] = {}
    started = time.perf_counter()
    calls = 0
    for f in scene.indices:
        out[f] = []
        for v in scene.views:
            cam = v.camera
            pred = inferences[v.name]([ImageInput(scene.frames[v.name][f], cam.intrinsics, cam.distortion,
                                                  cam.extrinsics)])[0]
            calls += 1
            out[f].append(detection_record(pred, cam))
            if keep is not None:
                keep[(f, v.name)] = pred
    return out, time.perf_counter() - started, calls


def detection_record(pred, cam: calibration.Camera) -> dict:
    """One view's ``Prediction`` as numpy arrays for scoring."""
    has_raw = pred.poses2d_raw is not None
    p2 = pred.poses2d_raw if has_raw else pred.poses2d
    k = len(pred.poses3d)
    conf = pred.joint_confidences if pred.joint_confidences is not None else np.ones(p2.shape[:2], np.float32)
    nan = np.full(k, np.nan)
    return {"poses3d": np.asarray(pred.poses3d, np.float64), "pixels": p2, "conf": conf,
            "quality": pred.quality if pred.quality is not None else nan,
            "depth_sigma": pred.depth_sigma_mm if pred.depth_sigma_mm is not None else nan,
            "joint_sigma": (pred.joint_sigma_mm if getattr(pred, "joint_sigma_mm", None) is not None
                            else np.full(p2.shape[:2], np.nan)),
            "grounded": np.array([s == "ground_plane" for s in (pred.depth_source or [""] * k)], bool),
            "rays": undistort_points(p2, cam) if len(p2) else p2, "has_raw": has_raw}


@dataclass
class Reference:
    """One triangulated person of one frame."""

    frame: int
    person: int
    joints: np.ndarray  # [J,3] world mm (NaN where not triangulated)
    valid: np.ndarray  # [J] bool
    views_used: int
    cluster: dict[int, int]  # view index -> detection index it was triangulated from


def references(detections: dict[int, list[dict]], views: list[View], settings: Settings,
               mirror: list[int] | None) -> tuple[list[Reference], list[float]]:
    """Triangulated people of every frame (>= 6 joints) and the reprojection errors (px) of the
    observations they were made from."""
    refs: list[Reference] = []
    reproj: list[float] = []
    for f, dets in detections.items():
        for person, cluster in enumerate(associate(dets, views, settings, mirror)):
            joints, valid, used = triangulate_person(cluster, dets, views, settings)
            if valid.sum() < 6:
                continue
            refs.append(Reference(f, person, joints, valid, int(used.max()), cluster))
            for v, d in cluster.items():
                reproj.extend(float(np.linalg.norm(reproject(joints[j], views[v].camera) - dets[v]["pixels"][d][j]))
                              for j in np.flatnonzero(valid))
    return refs, reproj


def match(ref: Reference, det: dict, cam: calibration.Camera, mirror: list[int] | None, max_px: float) -> int | None:
    """The detection of one view that shows ``ref``'s person: smallest median distance between its
    2D and the triangulation's reprojection (left/right labels either way), if under ``max_px``."""
    if not len(det["pixels"]):
        return None
    joints = np.flatnonzero(ref.valid)
    proj = np.stack([reproject(ref.joints[j], cam) for j in joints])
    return closest_detection(det["pixels"], joints, proj, mirror, max_px)


def score_against(detections: dict[int, list[dict]], refs: list[Reference], views: list[View], names: list[str],
                  settings: Settings, mirror: list[int] | None, matrix: np.ndarray | None = None,
                  matched_names: list[str] | None = None) -> list[PersonResult]:
    """Score each view's prediction of each reference person. ``matrix`` [J',J] maps both the
    prediction and the triangulation to another joint set (``matched_names``), e.g. coco_19 from
    BlazePose's 33 joints; a mapped joint is valid when all its sources are."""
    out_names = matched_names or names
    out_mirror = mirror
    if matrix is not None:
        from annotator.estimator import skeletons

        out_mirror = skeletons.mirror_indices(skeletons.Skeleton("eval", tuple(out_names), ()))
    rows: list[PersonResult] = []
    for ref in refs:
        joints, valid = ref.joints, ref.valid
        if matrix is not None:
            used = matrix != 0
            valid = np.array([valid[u].all() for u in used])
            joints = matrix @ np.nan_to_num(ref.joints)
        for v, view in enumerate(views):
            det = detections[ref.frame][v]
            d = match(ref, det, view.camera, mirror, settings.match_px)
            if d is None:
                continue
            pred = det["poses3d"][d] if matrix is None else matrix @ det["poses3d"][d]
            s = score(pred, joints, valid, out_names, view.camera, settings, out_mirror)
            if s is None:
                continue
            errors = s["extra"]["joint_errors"]
            sigmas = det["joint_sigma"][d] if matrix is None else np.sqrt((matrix ** 2) @ det["joint_sigma"][d] ** 2)
            sigmas = np.asarray(sigmas, np.float64)[valid]
            root = metrics.root_of(joints, out_names)
            rows.append(PersonResult(ref.frame, view.name, ref.person, views_in_triangulation=ref.views_used,
                                     quality=float(det["quality"][d]), depth_sigma_mm=float(det["depth_sigma"][d]),
                                     grounded=bool(det["grounded"][d]),
                                     joint_within_1_sigma=_nan_if_none(metrics.within_sigma(errors, sigmas, 1.0)),
                                     joint_within_2_sigma=_nan_if_none(metrics.within_sigma(errors, sigmas, 2.0)),
                                     reference_root_x_mm=float(root[0]), reference_root_y_mm=float(root[1]),
                                     reference_root_z_mm=float(root[2]), **s))
            rows[-1].extra.update(joint_sigmas=sigmas, detection=d, valid=valid)
    return rows


def reliability(rows: list[PersonResult]) -> dict:
    """The sigmas' reliability curve over scored predictions (``metrics.reliability``)."""
    bias = np.array([r.root_depth_bias_mm for r in rows], np.float64)
    sigma = np.array([r.depth_sigma_mm for r in rows], np.float64)
    return metrics.reliability(bias, sigma, *joint_errors_and_sigmas(rows))


def joint_errors_and_sigmas(rows: list) -> tuple[np.ndarray, np.ndarray]:
    """Every scored joint's root-relative 3D error (mm) and its ``joint_sigma_mm``, concatenated."""
    extras = [r.extra for r in rows if isinstance(r, PersonResult) and "joint_sigmas" in r.extra]
    if not extras:
        return np.zeros(0), np.zeros(0)
    return (np.concatenate([e["joint_errors"] for e in extras]),
            np.concatenate([e["joint_sigmas"] for e in extras]))


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else x


# ------------------------------------------------------------------------------ the run
def run(scene_dir: str | Path, out_dir: str | Path, settings: Settings | None = None, model=None) -> dict:
    """Evaluate a model on a calibrated multi-view scene; writes ``OUT/metrics.json``,
    ``OUT/people.csv`` and ``OUT/table.txt`` and returns the summary. The reference is the
    triangulation of the model's own 2D."""
    import tensorflow as tf

    from annotator.estimator import skeletons
    from annotator.models import loader

    settings = settings or Settings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = load_scene(scene_dir, settings.frames)
    resolved = None
    if model is None:
        resolved = loader.resolve(settings.model)
        model = tf.saved_model.load(resolved.path)
    stages = inferences(model, settings, scene)
    first = stages[scene.views[0].name]
    names = first.skeleton["joint_names"]
    mirror = skeletons.mirror_indices(skeletons.Skeleton("eval", tuple(names), ()))
    detections, elapsed, calls = predict(stages, scene)
    refs, reproj = references(detections, scene.views, settings, mirror)
    if settings.export_mocap:
        from annotator.eval import mocap_export

        mocap_export.export_triangulation(out_dir / "mocap", scene.views, scene.frames, refs, names,
                                          settings.skeleton, settings.world_up or scene.world_up,
                                          settings.floor_height_mm, sequence=Path(scene_dir).name)
    rows = score_against(detections, refs, scene.views, names, settings, mirror)
    has_raw = any(d["has_raw"] for dets in detections.values() for d in dets)
    summary = {**summarize(rows), "people_matched": len(rows), "people_triangulated": len(refs),
               "frames": len(scene.indices), "views": len(scene.views), "num_aug": settings.num_aug,
               "skeleton": settings.skeleton or "all",
               "world_up": list(first.settings.world_up_vector) if (settings.world_up or scene.world_up)
               else "per camera",
               "ground_plane": settings.ground_plane,
               "triangulation_2d": "poses2d_raw" if has_raw else "poses2d",
               "reprojection_median_px": round(float(np.median(reproj)), 1) if reproj else None,
               "seconds_per_image": round(elapsed / max(calls, 1), 3)}
    if resolved is not None:
        summary["model"] = resolved.to_dict()
    summary["quality_vs_error"] = quality_vs_error(rows)
    summary["sigma_coverage"] = reliability(rows)
    if rows:
        from annotator.eval import uncertainty

        uncertainty.plot_reliability(summary["sigma_coverage"], out_dir / "reliability.png",
                                     f"{Path(scene_dir).name}, num_aug {settings.num_aug}"
                                     f"{', ground plane' if settings.ground_plane else ''}")
    summary["per_view"] = {v.name: summarize([r for r in rows if r.view == v.name]) for v in scene.views}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_people_csv(rows, out_dir / "people.csv")
    (out_dir / "table.txt").write_text(format_table(summary))
    return summary


def write_people_csv(rows: list[PersonResult], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[k for k in asdict(rows[0]) if k != "extra"] if rows else ["frame"])
        w.writeheader()
        for r in rows:
            d = asdict(r)
            d.pop("extra")
            w.writerow(d)


def format_table(summary: dict) -> str:
    cols = ("root_relative_mpjpe_mm", "root_error_mm", "root_depth_bias_mm", "pa_mpjpe_mm", "limb_scale", "pck")
    heads = ("view", "rel. MPJPE", "root err", "depth bias", "PA-MPJPE", "limb scale", "PCK@150")
    lines = ["  ".join(f"{h:>11s}" for h in heads)]
    for name, s in [*summary["per_view"].items(), ("overall", summary)]:
        lines.append("  ".join([f"{name:>11s}"] + [f"{s[c]:>11}" if s.get(c) is not None else f"{'-':>11s}"
                                                  for c in cols]))
    lines.append(f"people matched {summary['people_matched']} / triangulated {summary['people_triangulated']}"
                 f" over {summary['frames']} frames x {summary['views']} views, num_aug {summary['num_aug']}"
                 " (medians; mm)")
    if summary.get("joint_within_1_sigma") is not None or summary.get("depth_within_1_sigma") is not None:
        lines.append(f"sigmas (calibrated: 0.68 within 1 sigma, 0.95 within 2): joints "
                     f"{summary.get('joint_within_1_sigma')} / {summary.get('joint_within_2_sigma')}, root depth "
                     f"{summary.get('depth_within_1_sigma')} / {summary.get('depth_within_2_sigma')} (reliability.png)")
    qe = summary.get("quality_vs_error", {})
    if "spearman_root_relative_mpjpe_mm" in qe:
        lines.append(f"quality vs error over {qe['n']} predictions: Spearman {qe['spearman_root_relative_mpjpe_mm']}"
                     f" (rel. MPJPE), {qe['spearman_pa_mpjpe_mm']} (PA-MPJPE); rel. MPJPE median "
                     f"{qe['root_relative_mpjpe_mm_median_top_half']} mm in the better half by quality, "
                     f"{qe['root_relative_mpjpe_mm_median_bottom_half']} mm in the worse half")
    return "\n".join(lines) + "\n"
