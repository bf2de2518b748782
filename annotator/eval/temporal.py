"""Temporal evaluation: ``annotator eval multiview SCENE OUT --consecutive N``.

N consecutive frames of every view are labelled once through the pipeline's inference stage, then
scored twice against ONE pseudo ground truth (the triangulation of the per-frame 2D, as in
``annotator.eval.multiview``): as labelled per frame, and after the temporal step the pipeline runs
on videos (``annotator.pipeline.sequence``: tracks per view, left/right repair, one body scale per track,
smoothing, constant bones). The reference does not depend on the temporal step, so the rows differ
only in what they predict.

Metrics per row: the multi-view ones (root-relative MPJPE, root error, PA-MPJPE, limb scale,
left/right swap rate: medians over predictions), plus
* acceleration error (mm/frame^2): mean over joints and frames of |a_pred - a_ref|, a the second
  difference of the world-frame joints over three consecutive frames where the view shows the
  person in all three (the usual definition, HMMR / VIBE); the reference's own acceleration is
  reported beside it: its noise floor;
* identity switches: per view and reference person (people linked over frames by their
  triangulated root), how often the track id of the detection showing the person changes;
* tracks per person and view, and the ms per image the temporal step costs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotator.eval import multiview
from annotator.pipeline import calibration, sequence
from annotator.temporal import consistency, smoothing, tracking


@dataclass
class TemporalSettings:
    consecutive: int = 60
    start: int = 0
    methods: tuple[str, ...] = ("rts",)  # smoothing filters to score (annotator.temporal.smoothing.METHODS)


def load_consecutive(scene_dir: str | Path, n: int, start: int = 0) -> tuple[multiview.Scene, float]:
    """The scene with frames start .. start+n-1 of every view, and the frame rate (fps)."""
    scene_dir = Path(scene_dir)
    views = multiview.find_views(scene_dir, calibration.load(scene_dir / "calibration"))
    total = min(multiview.count_frames(v.source) for v in views)
    start = max(0, min(start, total - 1))
    indices = list(range(start, min(total, start + n)))
    scene = multiview.Scene(views, indices, {v.name: multiview.read_frames(v.source, indices) for v in views},
                            calibration.world_up(scene_dir / "calibration"))
    return scene, _fps(views[0].source)


def _fps(source: Path) -> float:
    if source.is_dir():
        return 30.0
    import av

    with av.open(str(source)) as c:
        s = c.streams.video[0]
        return float(s.average_rate or s.guessed_rate or 30.0)


def predictions(stages: dict, scene: multiview.Scene) -> tuple[dict[tuple[int, str], object], float]:
    """``Prediction`` per (frame, view) and seconds per image."""
    out = {}
    started = time.perf_counter()
    for f in scene.indices:
        for v in scene.views:
            cam = v.camera
            out[(f, v.name)] = stages[v.name]([multiview.ImageInput(scene.frames[v.name][f], cam.intrinsics,
                                                                    cam.distortion, cam.extrinsics)])[0]
    return out, (time.perf_counter() - started) / max(len(out), 1)


def temporal_step(preds: dict, scene: multiview.Scene, skeleton: dict, config: consistency.ConsistencyConfig
                  ) -> tuple[dict, dict[tuple[int, str], np.ndarray], float]:
    """The pipeline's temporal step on each view's frames: (new predictions, track ids per
    (frame, view), seconds per image)."""
    started = time.perf_counter()
    out, ids = {}, {}
    for v in scene.views:
        ext = v.camera.extrinsics
        frames = [sequence.SequenceFrame.from_prediction(f, preds[(f, v.name)], ext, v.camera.intrinsics,
                                                         v.camera.distortion) for f in scene.indices]
        result = sequence.process(frames, skeleton, config, tracking.TrackerConfig())
        for fr, res in zip(frames, result, strict=True):
            p = dataclasses.replace(preds[(fr.frame, v.name)])
            if len(res.ids):
                p.poses3d = res.world(ext).astype(np.float32)
                p.poses2d = res.joints2d.astype(np.float32)
            out[(fr.frame, v.name)] = p
            ids[(fr.frame, v.name)] = res.ids
    return out, ids, (time.perf_counter() - started) / max(len(out), 1)


def link_references(refs: list[multiview.Reference], names: list[str], max_mm: float = 500.0
                    ) -> dict[tuple[int, int], int]:
    """Reference people linked over consecutive frames by their root (optimal assignment):
    (frame, person) -> identity."""
    by_frame: dict[int, list[multiview.Reference]] = {}
    for r in refs:
        by_frame.setdefault(r.frame, []).append(r)
    ident: dict[tuple[int, int], int] = {}
    nxt = 0
    prev: list[tuple[np.ndarray, int]] = []
    for f in sorted(by_frame):
        cur = [(multiview.root_of(np.nan_to_num(r.joints), names), r) for r in by_frame[f]]
        cost = (np.array([[np.linalg.norm(a - b) for b, _ in cur] for a, _ in prev]) if prev and cur
                else np.zeros((0, 0)))
        taken = {}
        for i, j in tracking.linear_assignment(cost) if cost.size else []:
            if cost[i, j] <= max_mm:
                taken[j] = prev[i][1]
        now = []
        for j, (root, r) in enumerate(cur):
            if j not in taken:
                taken[j], nxt = nxt, nxt + 1
            ident[(f, r.person)] = taken[j]
            now.append((root, taken[j]))
        prev = now
    return ident


def matched(detections: dict, refs: list[multiview.Reference], views: list[multiview.View], mirror, max_px: float
            ) -> dict[tuple[int, int, int], int]:
    """(frame, reference person, view index) -> index of the detection that shows it: as
    ``multiview.match`` (smallest median distance of the 2D to the reprojected triangulation, left/right
    either way, under ``max_px``), with the lens model in numpy (``consistency.project``)."""
    out = {}
    for ref in refs:
        joints = np.flatnonzero(ref.valid)
        for v, view in enumerate(views):
            det = detections[ref.frame][v]
            if not len(det["pixels"]):
                continue
            cam = view.camera
            proj = consistency.project(ref.joints[joints] @ cam.rotation.T + cam.translation, cam.intrinsics,
                                       cam.distortion)
            best = multiview.closest_detection(det["pixels"], joints, proj, mirror, max_px)
            if best is not None:
                out[(ref.frame, ref.person, v)] = best
    return out


def acceleration(detections: dict, refs: list[multiview.Reference], match: dict, ident: dict, n_views: int) -> dict:
    """Acceleration error (mm/frame^2) and the reference's own acceleration, over triples of
    consecutive frames where one view shows one linked person in all three."""
    by_id: dict[int, dict[int, multiview.Reference]] = {}
    for r in refs:
        by_id.setdefault(ident[(r.frame, r.person)], {})[r.frame] = r
    errs, ref_acc, pred_acc = [], [], []
    for frames in by_id.values():
        for f, r in frames.items():
            if f - 1 not in frames or f + 1 not in frames:
                continue
            trio = [frames[f - 1], r, frames[f + 1]]
            valid = trio[0].valid & trio[1].valid & trio[2].valid
            if valid.sum() < 6:
                continue
            ref_pos = [x.joints[valid] for x in trio]
            a_ref = ref_pos[0] - 2 * ref_pos[1] + ref_pos[2]
            for v in range(n_views):
                ks = [match.get((x.frame, x.person, v)) for x in trio]
                if any(k is None for k in ks):
                    continue
                p = [detections[x.frame][v]["poses3d"][k][valid] for x, k in zip(trio, ks, strict=True)]
                a_pred = p[0] - 2 * p[1] + p[2]
                errs.append(float(np.linalg.norm(a_pred - a_ref, axis=-1).mean()))
                pred_acc.append(float(np.linalg.norm(a_pred, axis=-1).mean()))
                ref_acc.append(float(np.linalg.norm(a_ref, axis=-1).mean()))
    def f(x):
        return round(float(np.mean(x)), 1) if x else None
    return {"accel_error_mm_per_frame2": f(errs), "accel_pred_mm_per_frame2": f(pred_acc),
            "accel_reference_mm_per_frame2": f(ref_acc), "accel_triples": len(errs)}


def identity(ids: dict, refs: list[multiview.Reference], match: dict, ident: dict, views: list[multiview.View]) -> dict:
    """Identity switches and tracks per reference person and view."""
    switches, tracks_per = 0, []
    seq: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r in refs:
        for v in range(len(views)):
            k = match.get((r.frame, r.person, v))
            if k is None:
                continue
            tid = ids[(r.frame, views[v].name)]
            if k < len(tid) and tid[k] >= 0:
                seq.setdefault((ident[(r.frame, r.person)], v), []).append((r.frame, int(tid[k])))
    for items in seq.values():
        items.sort()
        tids = [t for _, t in items]
        switches += sum(1 for a, b in zip(tids, tids[1:], strict=False) if a != b)
        tracks_per.append(len(set(tids)))
    per_view = {v.name: sorted({int(t) for (f, name), tid in ids.items() if name == v.name for t in tid if t >= 0})
                for v in views}
    return {"identity_switches": switches, "tracks_per_person_and_view": sorted(tracks_per),
            "people_linked": len({i for i in ident.values()}),
            "tracks_per_view": {k: len(v) for k, v in per_view.items()}}


def score_row(dets: dict, refs, scene, names, settings, mirror, ident, ids, match: dict) -> dict:
    """One row's metrics. ``match`` (which detection shows which reference) comes from the
    per-frame 2D, which the temporal step does not change: the same people are compared in every row
    (``multiview.score_against`` with the matching done once)."""
    rows = []
    for ref in refs:
        for v, view in enumerate(scene.views):
            d = match.get((ref.frame, ref.person, v))
            if d is None:
                continue
            det = dets[ref.frame][v]
            s = multiview.score(det["poses3d"][d], ref.joints, ref.valid, names, view.camera, settings, mirror)
            if s is not None:
                rows.append(multiview.PersonResult(ref.frame, view.name, ref.person,
                                                   views_in_triangulation=ref.views_used, **s))
    return {**multiview.summarize(rows), "people_matched": len(rows),
            **acceleration(dets, refs, match, ident, len(scene.views)),
            **identity(ids, refs, match, ident, scene.views)}


def _records(preds: dict, scene: multiview.Scene, like: dict | None = None) -> dict[int, list[dict]]:
    """Detection records for scoring; ``like``: records whose 2D (and rays) to keep, with these
    predictions' 3D."""
    cams = {v.name: v.camera for v in scene.views}
    if like is not None:
        return {f: [{**like[f][i], "poses3d": np.asarray(preds[(f, v.name)].poses3d, np.float64)}
                    for i, v in enumerate(scene.views)] for f in scene.indices}
    return {f: [multiview.detection_record(preds[(f, v.name)], cams[v.name]) for v in scene.views]
            for f in scene.indices}


def evaluate(preds: dict, scene: multiview.Scene, skeleton: dict, settings: multiview.Settings,
             temporal: TemporalSettings, fps: float) -> dict:
    """Per-frame and temporal rows from one set of predictions (no model needed)."""
    from annotator.estimator import skeletons

    names = skeleton["joint_names"]
    mirror = skeletons.mirror_indices(skeletons.Skeleton("eval", tuple(names), ()))
    raw = _records(preds, scene)
    refs, reproj = multiview.references(raw, scene.views, settings, mirror)
    ident = link_references(refs, names)
    match = matched(raw, refs, scene.views, mirror, settings.match_px)
    base_cfg = consistency.ConsistencyConfig(smoothing="none", swaps=False, scale=False, bones=False, fps=fps)
    _, ids, track_s = temporal_step(preds, scene, skeleton, base_cfg)
    rows = {"per frame": {**score_row(raw, refs, scene, names, settings, mirror, ident, ids, match),
                          "ms_per_image": round(1000 * track_s, 2)}}
    for method in temporal.methods:
        cfg = consistency.ConsistencyConfig(smoothing=method, fps=fps)
        new, ids, secs = temporal_step(preds, scene, skeleton, cfg)
        rows[f"temporal ({method})"] = {**score_row(_records(new, scene, raw), refs, scene, names, settings, mirror,
                                                    ident, ids, match), "ms_per_image": round(1000 * secs, 2)}
    return {"rows": rows, "frames": len(scene.indices), "first_frame": scene.indices[0], "views": len(scene.views),
            "fps": fps, "people_triangulated": len(refs),
            "reprojection_median_px": round(float(np.median(reproj)), 1) if reproj else None}


def run(scene_dir: str | Path, out_dir: str | Path, settings: multiview.Settings | None = None,
        temporal: TemporalSettings | None = None, model=None) -> dict:
    """Label N consecutive frames once and score them with and without the temporal step; writes
    ``OUT/temporal.json`` and ``OUT/temporal.md``."""
    import tensorflow as tf

    from annotator.models import loader

    settings = settings or multiview.Settings()
    temporal = temporal or TemporalSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene, fps = load_consecutive(scene_dir, temporal.consecutive, temporal.start)
    if model is None:
        model = tf.saved_model.load(loader.resolve(settings.model).path)
    stages = multiview.inferences(model, settings, scene)
    skeleton = stages[scene.views[0].name].skeleton
    preds, infer_s = predictions(stages, scene)
    report = evaluate(preds, scene, skeleton, settings, temporal, fps)
    report["inference_ms_per_image"] = round(1000 * infer_s, 1)
    report["num_aug"] = settings.num_aug
    (out_dir / "temporal.json").write_text(json.dumps(report, indent=2))
    (out_dir / "temporal.md").write_text(format_table(report))
    return report


COLUMNS = (("root_relative_mpjpe_mm", "rel. MPJPE"), ("root_error_mm", "root err"), ("pa_mpjpe_mm", "PA-MPJPE"),
           ("accel_error_mm_per_frame2", "accel err"), ("swap_rate", "L/R swaps"),
           ("identity_switches", "ID switches"), ("people_matched", "matched"), ("ms_per_image", "ms/image"))


def format_table(report: dict) -> str:
    lines = ["| labels | " + " | ".join(h for _, h in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in report["rows"].items():
        cells = ("-" if row.get(k) is None else str(row[k]) for k, _ in COLUMNS)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = next(iter(report["rows"].values()))
    lines.append("")
    lines.append(f"{report['frames']} consecutive frames from frame {report['first_frame']} x {report['views']} views "
                 f"at {report['fps']:g} fps; medians (mm) except accel err (mean, mm/frame^2; the reference's own "
                 f"acceleration is {first.get('accel_reference_mm_per_frame2')}) and ms/image (the temporal step "
                 f"only; inference {report.get('inference_ms_per_image', '-')} ms/image). Tracks per view: "
                 f"{first.get('tracks_per_view')}; tracks per person and view: "
                 f"{first.get('tracks_per_person_and_view')}.")
    return "\n".join(lines) + "\n"


__all__ = ["run", "evaluate", "format_table", "TemporalSettings", "smoothing"]
