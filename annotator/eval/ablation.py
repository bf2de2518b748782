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

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotator.estimator.options import EstimatorOptions
from annotator.eval import multiview
from annotator.pipeline.infer import PoseInference

log = logging.getLogger(__name__)

# The raw networks, as a user would wire them without MeTRAbs' machinery.
RAW = EstimatorOptions(virtual_camera=False, alignment=False, linear_light=False, antialias=False,
                       aug_kinds=(), single_crop=(1.0, 1.0), reconstruction="translate_all",
                       aggregation="mean")


@dataclass(frozen=True)
class Row:
    name: str
    options: EstimatorOptions
    num_aug: int = 1
    suppress: bool = False  # suppress_implausible_poses (plausibility checks + 3D pose NMS)
    ground: bool = False  # the scene's floor fixes depth and scale (``annotator.labels.ground_plane``)
    ensemble: bool = False  # crop model = BlazePose full + heavy, averaged
    prior: bool = True  # body size fused with the population prior (``annotator.labels.body_size``)


def default_rows(default: EstimatorOptions | None = None, full: bool = False) -> list[Row]:
    """The ablation: cumulative steps from the raw networks (the issue's order), then each default
    step taken out of (or added to) the shipped defaults (``default``) one at a time, the variants of
    each step, TTA kinds alone and the whole schedule at 5, and MeTRAbs' machinery as published.
    ``full`` adds the rows that cost most and decided least (the other TTA kinds alone, the other
    aggregations and reconstructions)."""
    d = default or EstimatorOptions()
    vc = RAW.replace(virtual_camera=True)
    al = vc.replace(alignment=True)
    aa = al.replace(antialias=True)
    metrabs = EstimatorOptions.metrabs()
    all_kinds = ("gamma", "rotation", "scale", "flip")
    rows = [
        Row("raw networks", RAW),
        Row("+ virtual camera", vc),
        Row("+ alignment pass", al),
        Row("+ anti-aliasing", aa),
        Row("defaults, num_aug 1", d),
        Row("defaults without virtual camera", d.replace(virtual_camera=False)),
        Row("defaults without alignment pass", d.replace(alignment=False)),
        Row("defaults without anti-aliasing", d.replace(antialias=False)),
        Row("defaults + linear light", d.replace(linear_light=True)),
        Row("defaults, single crop identity (gamma 1, zoom 1)", d.replace(single_crop=(1.0, 1.0))),
        Row("defaults, MeTRAbs single crop (gamma .8, zoom 1.05)", d.replace(single_crop=(0.8, 1.05))),
        Row("defaults, reconstruction translate", d.replace(reconstruction="translate")),
        Row("defaults + plausibility / NMS, num_aug 1", d, suppress=True),
        Row("defaults + ensemble full+heavy, num_aug 1", d, ensemble=True),
        Row("defaults + ground plane, num_aug 1", d, ground=True),
        Row("defaults, network's body size (no population prior), num_aug 1", d, prior=False),
        Row("MeTRAbs machinery (before), num_aug 1", metrabs),
        Row("TTA rotation (25 deg) only, num_aug 5", d.replace(aug_kinds=("rotation",)), num_aug=5),
        Row("TTA flip only, num_aug 5", d.replace(aug_kinds=("flip",)), num_aug=5),
        Row("defaults, num_aug 5", d, num_aug=5),
        Row("defaults + ground plane, num_aug 5", d, num_aug=5, ground=True),
        Row("MeTRAbs machinery (before), num_aug 5", metrabs, num_aug=5),
        Row("defaults, num_aug 5, TTA not centred on the single crop", d.replace(tta_centred=False), num_aug=5),
        Row("defaults, num_aug 5, one body scale (3D only)", d.replace(keep_lengths="body"), num_aug=5),
        Row("defaults + MoveNet keypoints as 2D evidence, num_aug 1", d.replace(keypoint_evidence=1.0)),
    ]
    if full:
        rows += [
            Row("defaults, reconstruction translate_all", d.replace(reconstruction="translate_all")),
            Row("TTA gamma only, num_aug 5", d.replace(aug_kinds=("gamma",)), num_aug=5),
            Row(f"TTA scale ({d.scale_range[0]}-{d.scale_range[1]}) only, num_aug 5",
                d.replace(aug_kinds=("scale",)), num_aug=5),
            Row("defaults, num_aug 5, aggregation mean", d.replace(aggregation="mean"), num_aug=5),
            Row("MeTRAbs schedule, aggregation consensus, num_aug 5",
                metrabs.replace(aug_kinds=all_kinds, aggregation="consensus"), num_aug=5),
        ]
    return rows


@dataclass
class Networks:
    """The converted networks, loaded once and shared by every row's estimator."""

    detector: object
    crop_model: object
    variant: str

    ensemble: object | None = None  # full + heavy, built on first use

    @classmethod
    def load(cls, variant: str = "default-full") -> Networks:
        import tensorflow as tf

        from annotator.estimator import crop_models, detectors
        from annotator.models import registry

        v = registry.VARIANTS[registry.canonical(variant)]
        det = detectors.MoveNetMultiPose(tf.saved_model.load(str(registry.build_component(v.detector, fetch=False))))
        crop = crop_models.BlazePoseGHUM(_component(v.crop_model))
        return cls(det, crop, v.name)

    def estimator(self, options: EstimatorOptions, ensemble: bool = False):
        from annotator.estimator import crop_models, model

        crop = self.crop_model
        if ensemble:
            if self.ensemble is None:
                self.ensemble = crop_models.BlazePoseEnsemble([self.crop_model.model, _component("blazepose-heavy")])
            crop = self.ensemble
        return model.PoseEstimator(self.detector, crop, {"ablation": True}, options)


def _component(name: str):
    import tensorflow as tf

    from annotator.models import registry

    return tf.saved_model.load(str(registry.build_component(name, fetch=False)))


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
    Rows with ``ground`` put people on the floor ``settings.floor_height_mm`` (skipped unless
    ``settings.ground_plane``); every row uses ``settings.world_up`` (or the rig's up)."""
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

    def inference(options: EstimatorOptions, num_aug: int = 1, suppress: bool = False, ground: bool = False,
                  ensemble: bool = False, prior: bool = True) -> dict[str, PoseInference]:
        row_settings = dataclasses.replace(settings, num_aug=num_aug, skeleton="",
                                           suppress_implausible_poses=suppress, ground_plane=ground, body_prior=prior)
        return multiview.inferences(networks.estimator(options, ensemble), row_settings, scene)

    # rows that label the same way (same options and settings, another name) are labelled once
    labelled: dict[tuple, tuple] = {}

    def label(options: EstimatorOptions, num_aug: int = 1, suppress: bool = False, ground: bool = False,
              ensemble: bool = False, prior: bool = True) -> tuple:
        key = (options, num_aug, suppress, ground, ensemble, prior)
        if key not in labelled:
            inf = inference(*key)
            next(iter(inf.values())).warm_up()  # trace once (one model behind every view), not timed
            labelled[key] = multiview.predict(inf, scene)
        return labelled[key]

    ref_dets, _, _ = label(RAW)
    refs, reproj = multiview.references(ref_dets, scene.views, settings, mirror)
    log.info("reference: %d people triangulated over %d frames", len(refs), len(scene.indices))

    results: list[Result] = []
    report = _report(scene_dir, scene, networks, refs, reproj, results)
    for row in rows:
        if row.ground and not settings.ground_plane:
            continue
        dets, seconds, calls = label(row.options, row.num_aug, row.suppress, row.ground, row.ensemble, row.prior)
        people = multiview.score_against(dets, refs, scene.views, names, settings, mirror)
        body = multiview.score_against(dets, refs, scene.views, names, settings, mirror, coco_matrix,
                                       list(coco.joint_names))
        qe = multiview.quality_vs_error(body)
        body_summary = {**multiview.summarize(body), "people_matched": len(body),
                        **{f"{m}_ci95": bootstrap_ci(body, m) for m in ("root_relative_mpjpe_mm", "root_error_mm")}}
        results.append(Result(row, {**multiview.summarize(people), "people_matched": len(people)},
                              body_summary,
                              round(1000 * seconds / max(calls, 1), 1),
                              qe.get("spearman_root_relative_mpjpe_mm"),
                              {"quality_vs_error": qe, "predictions": [_compact(r) for r in body]}))
        log.info("%s: %s", row.name, results[-1].coco_19)
        report = _report(scene_dir, scene, networks, refs, reproj, results)
        if out is not None:  # after every row: a long run stopped early keeps what it measured
            write(report, out)
    return report


def _report(scene_dir, scene, networks, refs, reproj, results: list[Result]) -> dict:
    report = {
        "scene": str(scene_dir), "frames": scene.indices, "views": [v.name for v in scene.views],
        "variant": networks.variant, "people_triangulated": len(refs),
        "reprojection_median_px": round(float(np.median(reproj)), 1) if reproj else None,
        "reference": "triangulation of the raw networks' 2D (row 1), the same for every row",
        "rows": [{"name": r.row.name, "num_aug": r.row.num_aug, "suppress_implausible_poses": r.row.suppress,
                  "options": r.row.options.to_dict(), "all": r.all_joints, "coco_19": r.coco_19,
                  "ms_per_image": r.ms_per_image, "spearman_quality_error": r.quality_spearman,
                  "ground_plane": r.row.ground, "body_prior": r.row.prior, **r.extra}
                 for r in results],
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    paired_differences(report)
    return report


def write(report: dict, out: str | Path) -> None:
    """``OUT/ablation.json`` and ``OUT/ablation.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    (out / "ablation.md").write_text(format_table(report))


def bootstrap_ci(rows: list[multiview.PersonResult], metric: str, resamples: int = 1000, seed: int = 0) -> list | None:
    """95 % interval of the median of ``metric``, resampling whole frames (the views of one frame
    share a pose, so they are not independent): how much of a difference between rows is noise."""
    frames = sorted({r.frame for r in rows})
    if len(frames) < 3:
        return None
    by_frame = {f: [getattr(r, metric) for r in rows if r.frame == f] for f in frames}
    return frame_bootstrap(by_frame, np.random.default_rng(seed), resamples)


def frame_bootstrap(by_frame: dict, rng: np.random.Generator, resamples: int = 1000) -> list:
    """[lo, hi] 95 % interval of the median of the values of ``by_frame`` (frame -> values),
    resampling whole frames with ``rng``; non-finite values are left out."""
    frames = sorted(by_frame)
    medians = []
    for _ in range(resamples):
        pick = rng.choice(len(frames), len(frames))
        values = np.concatenate([by_frame[frames[i]] for i in pick])
        values = values[np.isfinite(values)]
        if len(values):
            medians.append(np.median(values))
    lo, hi = np.percentile(medians, [2.5, 97.5])
    return [round(float(lo), 1), round(float(hi), 1)]


BASELINE = "defaults, num_aug 1"
# what the paired differences compare: the errors, and the limb scale's distance from 1 in % (a
# median limb scale can move towards 1 while each prediction's own scale error grows, or back)
PAIRED = {"root_relative_mpjpe_mm": lambda p: p["root_relative_mpjpe_mm"],
          "root_error_mm": lambda p: p["root_error_mm"],
          "limb_scale_error_percent": lambda p: 100.0 * abs(p["limb_scale"] - 1.0)}


def paired_differences(report: dict, baseline: str = BASELINE, resamples: int = 1000, seed: int = 0) -> None:
    """Add to each row ``vs_baseline``: the median over predictions of (row error - baseline error)
    for the same frame, view and person, with a 95 % interval resampling frames. Paired, so the
    differences between people and frames (most of the spread) cancel; the honest test of whether
    a step helps."""
    base = next((r for r in report["rows"] if r["name"] == baseline), None)
    if base is None:
        return
    rng = np.random.default_rng(seed)
    key = ("frame", "view", "person")
    ref = {tuple(p[k] for k in key): p for p in base["predictions"]}
    for r in report["rows"]:
        out = {}
        for m, value in PAIRED.items():
            pairs = [(p["frame"], value(p) - value(ref[k])) for p in r["predictions"]
                     if (k := tuple(p[x] for x in key)) in ref]
            if len(pairs) < 3:
                continue
            by_frame = {f: [d for g, d in pairs if g == f] for f in sorted({f for f, _ in pairs})}
            out[m] = {"median": round(float(np.median([d for _, d in pairs])), 1),
                      "ci95": frame_bootstrap(by_frame, rng, resamples), "n": len(pairs)}
        r["vs_baseline"] = out
    report["baseline"] = baseline


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
            "| matched | ms / image | Spearman(q, err) | vs defaults: rel. / root / limb % |")

    def ci(c, m):
        v = c.get(f"{m}_ci95")
        return f" ({v[0]:.0f}-{v[1]:.0f})" if v else ""

    lines = [head, "|" + "---|" * 11]

    def delta(r, m, digits=0):
        v = r.get("vs_baseline", {}).get(m)
        if v is None:
            return "-"
        return f"{v['median']:+.{digits}f} ({v['ci95'][0]:+.{digits}f}..{v['ci95'][1]:+.{digits}f})"

    for r in report["rows"]:
        c, a = r["coco_19"], r["all"]
        lines.append(
            f"| {r['name']} | {_cell(c.get('root_relative_mpjpe_mm'))}{ci(c, 'root_relative_mpjpe_mm')} / "
            f"{_cell(a.get('root_relative_mpjpe_mm'))} "
            f"| {_cell(c.get('pa_mpjpe_mm'))} | {_cell(c.get('root_error_mm'))}{ci(c, 'root_error_mm')} "
            f"| {_cell(c.get('root_depth_bias_mm'))} | {_cell(c.get('limb_scale'), 3)} "
            f"| {_cell(c.get('swap_rate'), 2)} | {c.get('people_matched')} | {_cell(r['ms_per_image'])} "
            f"| {_cell(r['spearman_quality_error'], 2)} "
            f"| {delta(r, 'root_relative_mpjpe_mm')} / {delta(r, 'root_error_mm')} "
            f"/ {delta(r, 'limb_scale_error_percent', 1)} |")
    lines.append("")
    lines.append("In brackets: 95 % interval of the median, resampling frames. Last column: median of the paired "
                 f"differences to the row '{report.get('baseline', BASELINE)}' (same frame, view and person; "
                 "negative = better), with its 95 % interval; limb %: each prediction's |limb scale - 1| in %.")
    lines.append(f"{len(report['frames'])} frames x {len(report['views'])} views of {Path(report['scene']).name}, "
                 f"{report['people_triangulated']} people triangulated from the raw networks' 2D "
                 f"(median reprojection {report['reprojection_median_px']} px); medians, mm; model "
                 f"{report['variant']}.")
    return "\n".join(lines) + "\n"
