"""What each step of the estimator adds: one run, same frames, views, joints and triangulation for
every row (``annotator eval multiview SCENE --ablate``).

Each row is the estimator built in memory with one set of ``EstimatorOptions`` (and a ``num_aug``),
from the same converted networks the built-in models use. The first row is the raw networks
(MoveNet box -> BlazePose on a plain image crop with MediaPipe's padding, its 2D + metric 3D lifted
with the true camera, no test-time augmentation); each following row adds one step. Every row is
scored against ONE pseudo ground truth: the triangulation of the first row's 2D, so the rows differ
only in what they predict, never in what they are compared with.

Columns (medians over predictions; ``all`` = the 33 native joints, ``coco_19`` = the body joints
of the MeTRAbs skeleton): root-relative MPJPE, PA-MPJPE, root error, root depth bias, limb scale,
left/right swap rate, people matched, ms per image, and Spearman(quality, root-relative MPJPE).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotator.estimator.options import EstimatorOptions
from annotator.eval import multiview

log = logging.getLogger(__name__)

# The raw networks, as a user would wire them without MeTRAbs' machinery.
RAW = EstimatorOptions(virtual_camera=False, alignment=False, linear_light=False, antialias=False,
                       aug_kinds=(), metrabs_single_aug=False, reconstruction="translate_all",
                       aggregation="mean")


@dataclass(frozen=True)
class Row:
    name: str
    options: EstimatorOptions
    num_aug: int = 1
    suppress: bool = False  # suppress_implausible_poses (plausibility checks + 3D pose NMS)
    ground: bool = False  # the scene's floor fixes depth and scale (``annotator.ground_plane``)


def default_rows(default: EstimatorOptions | None = None) -> list[Row]:
    """The ablation: cumulative steps from the raw networks, then each variant of one step on top
    of the shipped defaults (``default``), each TTA kind alone and the whole schedule at 5."""
    default = default or EstimatorOptions()
    vc = RAW.replace(virtual_camera=True)
    al = vc.replace(alignment=True)
    ll = al.replace(linear_light=True, antialias=True)
    rows = [
        Row("raw networks", RAW),
        Row("+ virtual camera", vc),
        Row("+ alignment pass", al),
        Row("+ linear light, anti-aliasing", ll),
    ]
    for rec in ("translate_all", "translate", "blend"):
        rows.append(Row(f"reconstruction: {rec}", default.replace(reconstruction=rec)))
    rows.append(Row("MeTRAbs single-aug crop (gamma .8, scale 1.05)", default.replace(metrabs_single_aug=True)))
    for kind in ("gamma", "rotation", "scale", "flip"):
        rows.append(Row(f"TTA {kind} only, num_aug 5", default.replace(aug_kinds=(kind,)), num_aug=5))
    for agg in ("mean", "consensus"):
        rows.append(Row(f"TTA all kinds, aggregation {agg}, num_aug 5",
                        default.replace(aug_kinds=("gamma", "rotation", "scale", "flip"), aggregation=agg),
                        num_aug=5))
    rows.append(Row("defaults, num_aug 1", default))
    rows.append(Row("defaults, num_aug 5", default, num_aug=5))
    rows.append(Row("defaults + plausibility / NMS, num_aug 1", default, suppress=True))
    # MeTRAbs as published, around these networks: the machinery before this ablation
    rows.append(Row("MeTRAbs machinery (before), num_aug 1", EstimatorOptions(
        aug_kinds=("gamma", "rotation", "scale", "flip"), metrabs_single_aug=True, reconstruction="blend",
        aggregation="mean")))
    rows.append(Row("MeTRAbs machinery (before), num_aug 5", EstimatorOptions(
        aug_kinds=("gamma", "rotation", "scale", "flip"), metrabs_single_aug=True, reconstruction="blend",
        aggregation="mean"), num_aug=5))
    return rows


@dataclass
class Networks:
    """The converted networks, loaded once and shared by every row's estimator."""

    detector: object
    crop_model: object
    variant: str

    @classmethod
    def load(cls, variant: str = "default-full") -> Networks:
        import tensorflow as tf

        from annotator.estimator import crop_models, detectors
        from annotator.models import registry

        v = registry.VARIANTS[registry.canonical(variant)]
        det = detectors.MoveNetMultiPose(tf.saved_model.load(str(registry.build_component(v.detector, fetch=False))))
        crop = crop_models.BlazePoseGHUM(tf.saved_model.load(str(registry.build_component(v.crop_model,
                                                                                          fetch=False))))
        return cls(det, crop, v.name)

    def estimator(self, options: EstimatorOptions):
        from annotator.estimator import model

        return model.PoseEstimator(self.detector, self.crop_model, {"ablation": True}, options)


class _Fixed:
    """A model wrapper that fixes ``suppress_implausible_poses`` for ``multiview.predict``."""

    def __init__(self, model, suppress: bool):
        self.model, self.suppress = model, suppress
        self.joint_names = model.joint_names
        self.per_skeleton_joint_names = model.per_skeleton_joint_names

    def detect_poses(self, image, **kwargs):
        return self.model.detect_poses(image, suppress_implausible_poses=self.suppress, **kwargs)


@dataclass
class Result:
    row: Row
    all_joints: dict
    coco_19: dict
    ms_per_image: float
    quality_spearman: float | None
    extra: dict = field(default_factory=dict)


def run(scene_dir: str | Path, out: str | Path | None = None, frames: int = 20, rows: list[Row] | None = None,
        variant: str = "default-full", settings: multiview.Settings | None = None,
        networks: Networks | None = None) -> dict:
    """Run every row on the same frames and score it against one triangulation. Writes
    ``OUT/ablation.json`` and ``OUT/ablation.md`` when ``out`` is given; returns the JSON dict.
    Rows with ``ground`` use ``settings.ground_plane`` (and are skipped when the scene has none)."""
    from annotator.estimator import skeletons

    settings = settings or multiview.Settings()
    rows = rows or default_rows()
    scene = multiview.load_scene(scene_dir, frames)
    networks = networks or Networks.load(variant)
    native = skeletons.NATIVE
    names = list(native.joint_names)
    mirror = skeletons.mirror_indices(native)
    coco = skeletons.SKELETONS["coco_19"]
    coco_matrix = skeletons.joint_matrix(coco, native)

    reference_row = Row("reference", RAW)
    ref_model = networks.estimator(reference_row.options)
    ref_dets, _, _ = multiview.predict(ref_model, scene, 1, "", settings.detector_threshold, names)
    refs, reproj = multiview.references(ref_dets, scene.views, settings, mirror)
    log.info("reference: %d people triangulated over %d frames", len(refs), len(scene.indices))

    results: list[Result] = []
    for row in rows:
        if row.ground and settings.ground_plane is None:
            continue
        est = _Fixed(networks.estimator(row.options), row.suppress)
        first = scene.views[0]
        est.detect_poses(scene.frames[first.name][scene.indices[0]], **multiview.camera_arguments(first.camera),
                         num_aug=row.num_aug, average_aug=False)  # trace once, not timed
        dets, seconds, calls = multiview.predict(est, scene, row.num_aug, "", settings.detector_threshold, names,
                                                 settings.ground_plane if row.ground else None)
        people = multiview.score_against(dets, refs, scene.views, names, settings, mirror)
        body = multiview.score_against(dets, refs, scene.views, names, settings, mirror, coco_matrix,
                                       list(coco.joint_names))
        qe = multiview.quality_vs_error(body)
        results.append(Result(row, {**multiview.summarize(people), "people_matched": len(people)},
                              {**multiview.summarize(body), "people_matched": len(body)},
                              round(1000 * seconds / max(calls, 1), 1),
                              qe.get("spearman_root_relative_mpjpe_mm"),
                              {"quality_vs_error": qe, "predictions": [_compact(r) for r in body]}))
        log.info("%s: %s", row.name, results[-1].coco_19)
    report = {
        "scene": str(scene_dir), "frames": scene.indices, "views": [v.name for v in scene.views],
        "variant": networks.variant, "people_triangulated": len(refs),
        "reprojection_median_px": round(float(np.median(reproj)), 1) if reproj else None,
        "reference": "triangulation of the raw networks' 2D (row 1), the same for every row",
        "rows": [{"name": r.row.name, "num_aug": r.row.num_aug, "suppress_implausible_poses": r.row.suppress,
                  "options": r.row.options.to_dict(), "all": r.all_joints, "coco_19": r.coco_19,
                  "ms_per_image": r.ms_per_image, "spearman_quality_error": r.quality_spearman,
                  "ground_plane": r.row.ground, **r.extra}
                 for r in results],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ablation.json").write_text(json.dumps(report, indent=2))
        (out / "ablation.md").write_text(format_table(report))
    return report


def _compact(r: multiview.PersonResult) -> dict:
    """One scored prediction (coco_19 joints) for later analysis: where, errors, quality."""
    return {"frame": r.frame, "view": r.view, "person": r.person,
            **{m: round(float(getattr(r, m)), 4) for m in ("root_relative_mpjpe_mm", "root_error_mm",
                                                           "root_depth_bias_mm", "pa_mpjpe_mm", "limb_scale",
                                                           "swapped", "quality", "depth_sigma_mm")},
            "grounded": r.grounded}


def _cell(value, digits=0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def format_table(report: dict) -> str:
    """Markdown table of an ablation report (coco_19 body joints first, then all joints)."""
    head = ("| row | rel. MPJPE coco_19 / all | PA-MPJPE | root err | depth bias | limb scale | L/R swaps "
            "| matched | ms / image | Spearman(q, err) |")
    lines = [head, "|" + "---|" * 10]
    for r in report["rows"]:
        c, a = r["coco_19"], r["all"]
        lines.append(
            f"| {r['name']} | {_cell(c.get('root_relative_mpjpe_mm'))} / {_cell(a.get('root_relative_mpjpe_mm'))} "
            f"| {_cell(c.get('pa_mpjpe_mm'))} | {_cell(c.get('root_error_mm'))} "
            f"| {_cell(c.get('root_depth_bias_mm'))} | {_cell(c.get('limb_scale'), 3)} "
            f"| {_cell(c.get('swap_rate'), 2)} | {c.get('people_matched')} | {_cell(r['ms_per_image'])} "
            f"| {_cell(r['spearman_quality_error'], 2)} |")
    lines.append("")
    lines.append(f"{len(report['frames'])} frames x {len(report['views'])} views of {Path(report['scene']).name}, "
                 f"{report['people_triangulated']} people triangulated from the raw networks' 2D "
                 f"(median reprojection {report['reprojection_median_px']} px); medians, mm; model "
                 f"{report['variant']}.")
    return "\n".join(lines) + "\n"
