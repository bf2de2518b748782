"""``annotator eval mocap``: the labels against the user's own motion capture, by the standard protocol.

Why: the bundled clips only measure the labels against a triangulation of the model's own 2D.
Users who hold licensed benchmark data (Human3.6M, MPI-INF-3DHP, 3DPW) or a studio's capture can
measure them against real motion capture, in one command, with the numbers papers report.

Method:

1. The dataset (``annotator.eval.mocap_data``: images, a camera per image, 3D joints in mm with
   their names) is read and checked; joints are compared only where the dataset and the model's
   skeleton name the same point (``annotator.eval.joint_names``; ``--joints limbs``: the 12 limb
   joints only).
2. Every image goes through the pipeline's inference stage (``PoseInference``: the same depth,
   ground plane, skeleton mapping and quality as written labels) with its own intrinsics,
   distortion and extrinsics. Predictions come back in the world frame when there are extrinsics
   and are taken to the camera frame, where everything is scored.
3. Each captured person is matched to the prediction whose 2D joints lie nearest (median, either
   left/right labelling) to the capture's projection, within half the person's projected extent
   (or ``match_px``), one prediction per person. Unmatched people count as missed.
4. Per person (``annotator.eval.metrics``, the definitions ``eval multiview`` uses): root-relative
   MPJPE with the root at the midpoint of the hips (the pelvis when a side has no hips), PA-MPJPE
   (similarity Procrustes), root error, depth bias (camera z of the predicted root minus the true
   one), limb scale (median predicted / true limb length), PCK@150 mm and AUC over 0-150 mm,
   whether left and right are swapped, and where the labels carry them, whether the errors lie
   within 1 and 2 of the labels' sigmas (``depth_sigma_mm`` for the root depth; ``joint_sigma_mm``
   for the root-relative joint errors).
5. Summaries: means (the benchmarks' protocol) and medians (``*_median_mm``) overall and per
   ``sequence``, ``action``, ``subject`` and ``camera``; PCK and AUC pool all joints; the Spearman
   correlation of quality against error. ``OUT/metrics.json``, ``OUT/table.md``, ``OUT/people.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotator.eval import joint_names, metrics, mocap_data
from annotator.pipeline.infer import ImageInput, InferenceSettings, PoseInference

SIGMA_LEVELS = metrics.SIGMA_LEVELS
CAMERA_UP = (0.0, -1.0, 0.0)  # image "up" in camera coordinates (y points down)


@dataclass
class Settings:
    model: str = "default"
    num_aug: int = 1
    skeleton: str = ""
    detector_threshold: float = 0.3
    suppress_implausible_poses: bool = True
    joints: str = "shared"  # "shared": every joint both name alike; "limbs": the 12 limb joints
    pck_mm: float = 150.0
    match_px: float = 0.0  # 0: half the captured person's projected extent
    batch: int = 8  # images per inference call
    limit: int = 0  # evaluate the first N images only (0: all)
    # the world's up direction (None: the dataset's ``world_up``, else each camera's own up) and
    # whether the floor X . up = floor height fixes depth and scale (needs a known up and extrinsics)
    world_up: tuple[float, float, float] | None = None
    ground_plane: bool = False
    floor_height_mm: float | None = None  # None: the dataset's, else 0


@dataclass
class PersonRow:
    """One captured person of one image and how its label did (metrics NaN when not matched)."""

    image: str
    person: int
    sequence: str = ""
    action: str = ""
    subject: str = ""
    camera: str = ""
    matched: bool = False
    root_relative_mpjpe_mm: float = math.nan
    pa_mpjpe_mm: float = math.nan
    root_error_mm: float = math.nan
    root_depth_bias_mm: float = math.nan
    limb_scale: float = math.nan
    pck: float = math.nan
    auc: float = math.nan
    joints: int = 0
    swapped: float = math.nan
    quality: float = math.nan
    depth_sigma_mm: float = math.nan
    grounded: bool = False
    joint_within_1_sigma: float = math.nan
    joint_within_2_sigma: float = math.nan
    joint_errors: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # root-relative, mm
    joint_sigmas: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)  # the labels' own


@dataclass
class Plan:
    """Which joints are compared: ``names`` (canonical) at ``reference`` indices of the dataset
    and ``predicted`` indices of the model's skeleton; ``mirror`` within ``names``."""

    names: list[str]
    reference: np.ndarray
    predicted: np.ndarray
    mirror: list[int]


def plan(data: mocap_data.MocapSet, model_names: list[str], skeleton: str, which: str = "shared") -> Plan:
    """The joints both sides have (``which``: "shared" or "limbs"), checked to allow the protocol:
    a root (both hips, or a pelvis) and at least 3 joints."""
    from annotator.estimator import skeletons

    if which not in ("shared", "limbs"):
        raise ValueError(f"joints must be 'shared' or 'limbs', got {which!r}")
    predicted = joint_names.canonical(model_names, skeleton)
    names = joint_names.shared(data.joint_names, predicted,
                               joint_names.LIMB_JOINTS if which == "limbs" else None)
    if len(names) < 3 or not metrics.root_joints(names, pelvis_first=False):
        raise ValueError(f"the dataset ({', '.join(data.source_joint_names)}) and the model's skeleton "
                         f"{skeleton or 'all'!r} ({', '.join(model_names)}) share too few joints to evaluate "
                         f"({', '.join(names) or 'none'}; need a root - both hips or a pelvis - and 3 joints)")
    ref_idx = {n: i for i, n in enumerate(data.joint_names)}
    pred_idx = {n: i for i, n in enumerate(predicted)}
    mirror = skeletons.mirror_indices(skeletons.Skeleton("mocap", tuple(names), ()))
    return Plan(names, np.array([ref_idx[n] for n in names]), np.array([pred_idx[n] for n in names]), mirror)


# ------------------------------------------------------------------------------ inference
def world_up(settings: Settings, data: mocap_data.MocapSet, extrinsics: np.ndarray | None) -> tuple:
    """The up direction the model is given for one image: the known world up, else the camera's."""
    up = settings.world_up if settings.world_up is not None else data.world_up
    if up is None:
        up = CAMERA_UP if extrinsics is None else tuple(extrinsics[:3, :3].T @ np.array(CAMERA_UP))
    up = np.asarray(up, np.float64)
    return tuple(round(float(x), 9) for x in up / np.linalg.norm(up))


def inference_settings(settings: Settings, data: mocap_data.MocapSet, up: tuple) -> InferenceSettings:
    floor = settings.floor_height_mm if settings.floor_height_mm is not None else (data.floor_height_mm or 0.0)
    return InferenceSettings(skeleton=settings.skeleton, num_aug=settings.num_aug,
                             detector_threshold=settings.detector_threshold,
                             suppress_implausible_poses=settings.suppress_implausible_poses,
                             world_up_vector=up, ground_plane=settings.ground_plane, ground_height_mm=floor)


def image_batches(data: mocap_data.MocapSet, settings: Settings) -> list[tuple[tuple, list[list[int]]]]:
    """Rows grouped by image (an image with several people is labelled once), images grouped by the
    up direction they are labelled with and cut into batches: [(up, [[rows of one image], ...])]."""
    by_image: dict[str, list[int]] = {}
    for i, name in enumerate(data.images):
        by_image.setdefault(name, []).append(i)
    images = list(by_image.values())
    if settings.limit:
        images = images[:settings.limit]
    by_up: dict[tuple, list[list[int]]] = {}
    for rows in images:
        by_up.setdefault(world_up(settings, data, data.extrinsics[rows[0]]), []).append(rows)
    size = max(settings.batch, 1)
    return [(up, group[s:s + size]) for up, group in by_up.items() for s in range(0, len(group), size)]


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise mocap_data.MocapFormatError(f"{path}: cannot read the image: {e}") from None


def project(points: np.ndarray, intrinsics: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    """Camera-frame points [J,3] (mm) -> pixels [J,2] through the estimator's lens model."""
    from annotator.estimator import camera as tfcam

    dist = np.zeros(max(5, len(distortion)), np.float32)
    dist[:len(distortion)] = distortion
    return tfcam.project_distorted(points[None].astype(np.float32), intrinsics[None].astype(np.float32),
                                   dist[None]).numpy()[0]


# ------------------------------------------------------------------------------ scoring
def score_image(pred, rows: list[int], data: mocap_data.MocapSet, p: Plan, settings: Settings) -> list[PersonRow]:
    """Match the captured people of one image to its predictions and score each."""
    e = data.extrinsics[rows[0]]
    poses = np.asarray(pred.poses3d, np.float64)[:, p.predicted]
    if e is not None:  # predicted in the world frame: to the camera's
        poses = poses @ e[:3, :3].T + e[:3, 3]
    pixels = np.asarray(pred.poses2d, np.float64)[:, p.predicted].copy()
    sigmas = getattr(pred, "joint_sigma_mm", None)
    out = []
    for i in rows:
        row = PersonRow(data.images[i], int(data.person[i]),
                        **{g: v[i] for g, v in data.groups.items()})
        ref = data.joints[i][p.reference]
        valid = np.isfinite(ref).all(-1)
        joints = np.flatnonzero(valid)
        out.append(row)
        if len(joints) < 2 or not len(pixels):
            continue
        proj = project(np.nan_to_num(ref[joints]), data.intrinsics[i], data.distortion[i])
        max_px = settings.match_px or 0.5 * float(np.ptp(proj, axis=0).max())
        d = metrics.closest_detection(pixels, joints, proj, p.mirror, max_px)
        if d is None:
            continue
        pixels[d] = np.inf  # one prediction per captured person
        s = metrics.person_metrics(poses[d], ref, valid, p.names, pck_mm=settings.pck_mm, mirror=p.mirror,
                                   pelvis_first=False, min_joints=min(6, len(p.names)))
        if s is None:
            continue
        errors = s.pop("joint_errors")
        row.matched = True
        for key, value in s.items():
            setattr(row, key, value)
        row.auc = metrics.auc(errors)
        row.joint_errors = errors
        row.quality = _at(pred.quality, d)
        row.depth_sigma_mm = _at(pred.depth_sigma_mm, d)
        row.grounded = bool(pred.depth_source is not None and pred.depth_source[d] == "ground_plane")
        if sigmas is not None and np.ndim(sigmas) == 2:
            row.joint_sigmas = np.asarray(sigmas, np.float64)[d, p.predicted][valid]
            row.joint_within_1_sigma = metrics.within_sigma(errors, row.joint_sigmas, 1.0)
            row.joint_within_2_sigma = metrics.within_sigma(errors, row.joint_sigmas, 2.0)
    return out


def _at(values, i: int) -> float:
    return float(values[i]) if values is not None else math.nan


def evaluate(model, data: mocap_data.MocapSet, settings: Settings) -> tuple[list[PersonRow], Plan, dict]:
    """Label every image through the pipeline's inference stage and score it: (rows, the joints
    compared, timing)."""
    batches = image_batches(data, settings)
    if settings.ground_plane and settings.world_up is None and data.world_up is None:
        raise ValueError("the ground plane needs the world's up direction: give 'world_up' in the dataset's "
                         "metadata or --world-up X,Y,Z")
    stages: dict[tuple, PoseInference] = {}
    rows: list[PersonRow] = []
    p = None
    started, images = time.perf_counter(), 0
    for up, batch in batches:
        if up not in stages:
            stages[up] = PoseInference(model, inference_settings(settings, data, up))
        stage = stages[up]
        if p is None:
            p = plan(data, stage.skeleton["joint_names"], settings.skeleton, settings.joints)
        inputs = [ImageInput(read_image(data.image_path(r[0])), data.intrinsics[r[0]].astype(np.float32),
                             data.distortion[r[0]].astype(np.float32),
                             None if data.extrinsics[r[0]] is None else data.extrinsics[r[0]].astype(np.float32))
                  for r in batch]
        for pred, image_rows in zip(stage(inputs), batch, strict=True):
            rows.extend(score_image(pred, image_rows, data, p, settings))
        images += len(batch)
    elapsed = time.perf_counter() - started
    return rows, p, {"images": images, "seconds_per_image": round(elapsed / max(images, 1), 3)}


# ------------------------------------------------------------------------------ summaries
MM_METRICS = ("root_relative_mpjpe_mm", "pa_mpjpe_mm", "root_error_mm", "root_depth_bias_mm")


def summarize(rows: list[PersonRow], pck_mm: float = 150.0) -> dict:
    """Means (the protocol) and medians over the matched people; PCK and AUC over all their
    joints; sigma coverage where the labels carry sigmas."""
    matched = [r for r in rows if r.matched]
    out: dict = {"people": len(rows), "matched": len(matched),
                 "matched_share": round(len(matched) / len(rows), 4) if rows else None}

    def finite(name):
        v = np.array([getattr(r, name) for r in matched], np.float64)
        return v[np.isfinite(v)]

    for m in (*MM_METRICS, "limb_scale"):
        v = finite(m)
        digits = 4 if m == "limb_scale" else 1
        base = m[:-3] if m.endswith("_mm") else m
        out[m] = round(float(v.mean()), digits) if len(v) else None
        out[f"{base}_median{'_mm' if m.endswith('_mm') else ''}"] = round(float(np.median(v)), digits) \
            if len(v) else None
    errors = np.concatenate([r.joint_errors for r in matched]) if matched else np.zeros(0)
    out["pck"] = round(metrics.pck(errors, pck_mm), 4) if len(errors) else None
    out["auc"] = round(metrics.auc(errors), 4) if len(errors) else None
    swapped = finite("swapped")
    out["swap_rate"] = round(float(swapped.mean()), 3) if len(swapped) else None
    bias, sigma = finite_pairs(matched, "root_depth_bias_mm", "depth_sigma_mm")
    out["depth_within_1_sigma"] = metrics.within_sigma(bias, sigma, 1.0)
    out["depth_within_2_sigma"] = metrics.within_sigma(bias, sigma, 2.0)
    with_sigmas = [r for r in matched if len(r.joint_sigmas)]
    joint_err = np.concatenate([r.joint_errors for r in with_sigmas]) if with_sigmas else np.zeros(0)
    joint_sig = np.concatenate([r.joint_sigmas for r in with_sigmas]) if with_sigmas else np.zeros(0)
    out["joint_within_1_sigma"] = metrics.within_sigma(joint_err, joint_sig, 1.0)
    out["joint_within_2_sigma"] = metrics.within_sigma(joint_err, joint_sig, 2.0)
    out["grounded_share"] = round(float(np.mean([r.grounded for r in matched])), 3) if matched else None
    return out


def finite_pairs(rows: list[PersonRow], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([getattr(r, a) for r in rows], np.float64)
    y = np.array([getattr(r, b) for r in rows], np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def sigma_coverage(rows: list[PersonRow]) -> dict:
    """The reliability curve (``metrics.reliability``) over the matched people."""
    matched = [r for r in rows if r.matched]
    bias, sigma = finite_pairs(matched, "root_depth_bias_mm", "depth_sigma_mm")
    with_sigmas = [r for r in matched if len(r.joint_sigmas)]
    err = np.concatenate([r.joint_errors for r in with_sigmas]) if with_sigmas else np.zeros(0)
    sig = np.concatenate([r.joint_sigmas for r in with_sigmas]) if with_sigmas else np.zeros(0)
    return metrics.reliability(bias, sigma, err, sig)


def report(rows: list[PersonRow], p: Plan, settings: Settings, data: mocap_data.MocapSet) -> dict:
    """The summary: overall, per group column, quality against error, sigma coverage."""
    summary = {**summarize(rows, settings.pck_mm), "joints_compared": p.names,
               "root": "hip midpoint" if len(metrics.root_joints(p.names, pelvis_first=False)) == 2 else "pelvis",
               "num_aug": settings.num_aug, "skeleton": settings.skeleton or "all", "joints": settings.joints,
               "ground_plane": settings.ground_plane, "pck_mm": settings.pck_mm, "frame": data.frame}
    summary["quality_vs_error"] = metrics.quality_vs_error([r for r in rows if r.matched])
    summary["sigma_coverage"] = sigma_coverage(rows)
    for g in mocap_data.GROUP_COLUMNS:
        if g in data.groups:
            values = sorted({getattr(r, g) for r in rows})
            summary[f"per_{g}"] = {v: summarize([r for r in rows if getattr(r, g) == v], settings.pck_mm)
                                   for v in values}
    return summary


TABLE = (("people", "people", "{}"), ("matched", "matched", "{}"), ("root_relative_mpjpe_mm", "MPJPE", "{:.1f}"),
         ("pa_mpjpe_mm", "PA-MPJPE", "{:.1f}"), ("root_error_mm", "root err", "{:.1f}"),
         ("root_depth_bias_mm", "depth bias", "{:+.1f}"), ("limb_scale", "limb scale", "{:.3f}"),
         ("pck", "PCK@150", "{:.3f}"), ("auc", "AUC", "{:.3f}"), ("depth_within_1_sigma", "depth in 1σ", "{:.2f}"),
         ("joint_within_1_sigma", "joints in 1σ", "{:.2f}"))


def format_table(summary: dict) -> str:
    """Markdown tables: overall, then one per group column (means over matched people, mm)."""
    def line(cells):
        return "| " + " | ".join(cells) + " |"

    def table(title: str, groups: dict[str, dict]) -> list[str]:
        lines = [line([title, *(h for _, h, _ in TABLE)]), line(["---"] * (len(TABLE) + 1))]
        for name, s in groups.items():
            lines.append(line([name or "(none)", *(f.format(s[k]) if s.get(k) is not None else "-"
                                                   for k, _, f in TABLE)]))
        return lines

    lines = table("", {"overall": summary})
    for g in mocap_data.GROUP_COLUMNS:
        if f"per_{g}" in summary:
            lines += ["", *table(g, summary[f"per_{g}"])]
    lines += ["", f"Means over matched people (medians in metrics.json); root-relative at the {summary['root']}; "
              f"{len(summary['joints_compared'])} joints ({', '.join(summary['joints_compared'])}); "
              f"skeleton {summary['skeleton']}, num_aug {summary['num_aug']}"
              f"{', ground plane' if summary['ground_plane'] else ''}."]
    qe = summary.get("quality_vs_error", {})
    if "spearman_root_relative_mpjpe_mm" in qe:
        lines.append(f"Quality vs error over {qe['n']} people: Spearman {qe['spearman_root_relative_mpjpe_mm']} "
                     f"(MPJPE), {qe.get('spearman_pa_mpjpe_mm')} (PA-MPJPE), {qe.get('spearman_root_error_mm')} "
                     "(root error); negative: higher quality, lower error.")
    return "\n".join(lines) + "\n"


def write_people_csv(rows: list[PersonRow], path: Path) -> None:
    hidden = ("joint_errors", "joint_sigmas")
    names = [f for f in PersonRow.__dataclass_fields__ if f not in hidden]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=names)
        w.writeheader()
        for r in rows:
            d = asdict(r)
            w.writerow({k: d[k] for k in names})


# ------------------------------------------------------------------------------ the run
def run(dataset: str | Path, out_dir: str | Path, settings: Settings | None = None, model=None) -> dict:
    """Evaluate a model on a motion-capture dataset; writes ``OUT/metrics.json``, ``OUT/table.md``
    and ``OUT/people.csv`` and returns the summary."""
    settings = settings or Settings()
    data = mocap_data.load(dataset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = None
    if model is None:
        import tensorflow as tf

        from annotator.models import loader

        resolved = loader.resolve(settings.model)
        model = tf.saved_model.load(resolved.path)
    rows, p, timing = evaluate(model, data, settings)
    summary = {**report(rows, p, settings, data), **timing, "dataset": str(mocap_data.find(dataset))}
    if resolved is not None:
        summary["model"] = resolved.to_dict()
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "table.md").write_text(format_table(summary))
    if summary["matched"]:
        from annotator.eval import uncertainty

        uncertainty.plot_reliability(summary["sigma_coverage"], out_dir / "reliability.png",
                                     f"motion capture, num_aug {settings.num_aug}")
    write_people_csv(rows, out_dir / "people.csv")
    return summary
