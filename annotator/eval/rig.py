"""Split-view evaluation of rig fusion: fuse from some views, compare with the triangulation of
the others, so no label is scored against itself.

For a calibrated 4-camera scene (``annotator eval multiview SCENE --split-views``): every split of
the views into two disjoint pairs (3 for 4 views), both directions. From the source pair, three
labels of each person: the fused label (``annotator.labels.fusion``: those two views' monocular
3D and 2D only), the plain two-view triangulation of their 2D (``multiview.triangulate_person``:
confidence-weighted DLT, outliers dropped, no prior), and each source view's monocular label. The
reference is the plain triangulation of the *other* pair's 2D, so it shares no observation with
the labels it grades. Scored on the joints the reference has (plain triangulation: on the joints
both have), with the definitions of ``annotator.eval.metrics``; medians over frames x splits x
directions x people, 95 % intervals resampling frames, and the fused label's paired difference to
the plain triangulation and to the monocular labels (same frame, split, direction, person).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from annotator.eval import metrics, multiview
from annotator.eval.ablation import frame_bootstrap
from annotator.labels import fusion

METHODS = ("fused", "two-view triangulation", "monocular")
SCORED = ("root_relative_mpjpe_mm", "root_error_mm", "pa_mpjpe_mm")
MAX_MATCH_MM = 500.0  # a label is the reference person's when its joints are this close (mean)


def splits(n_views: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every split of the views into two disjoint halves of n // 2 (ordered: source, reference;
    both directions). 4 views: 3 splits, 6 (source, reference) pairs."""
    half = n_views // 2
    out = []
    for a in itertools.combinations(range(n_views), half):
        rest = [v for v in range(n_views) if v not in a]
        for b in itertools.combinations(rest, half):
            out.append((a, b))
    return out


def view_people(dets: list[dict], pick) -> list[fusion.ViewPeople]:
    return [fusion.ViewPeople(dets[v]["rays"], dets[v]["conf"], dets[v]["poses3d"]) for v in pick]


def triangulated(dets: list[dict], views: list[multiview.View], pick, settings: multiview.Settings,
                 mirror) -> list[tuple[np.ndarray, np.ndarray]]:
    """Plain triangulations (joints, valid) of the people the views ``pick`` see together."""
    sub_d, sub_v = [dets[v] for v in pick], [views[v] for v in pick]
    out = []
    for cluster in multiview.associate(sub_d, sub_v, settings, mirror):
        joints, valid, _ = multiview.triangulate_person(cluster, sub_d, sub_v, settings)
        if valid.sum() >= 6:
            out.append((joints, valid))
    return out


def _closest(candidates: list[tuple[np.ndarray, np.ndarray]], ref: np.ndarray, valid: np.ndarray) -> int | None:
    best, best_d = None, MAX_MATCH_MM
    for i, (joints, ok) in enumerate(candidates):
        both = ok & valid
        if both.sum() < 6:
            continue
        d = float(np.mean(np.linalg.norm(joints[both] - ref[both], axis=-1)))
        if d < best_d:
            best, best_d = i, d
    return best


def evaluate(detections: dict[int, list[dict]], views: list[multiview.View], names: list[str], edges,
             settings: multiview.Settings, config: fusion.FusionConfig | None = None) -> list[dict]:
    """One row per (frame, source, reference person, method[, view]) with the ``SCORED`` metrics."""
    config = config or fusion.FusionConfig()
    skeleton = fusion.RigSkeleton.of(names, edges)
    mirror = list(skeleton.mirror)
    cams = [v.camera for v in views]
    rows: list[dict] = []
    for f, dets in detections.items():
        for src, dst in splits(len(views)):
            refs = triangulated(dets, views, dst, settings, mirror)
            plain = triangulated(dets, views, src, settings, mirror)
            fused = fusion.fuse(view_people(dets, src), [cams[v] for v in src], skeleton, config)
            for person, (ref, valid) in enumerate(refs):
                key = {"frame": f, "source": "+".join(views[v].name for v in src), "person": person}
                k = _closest(plain, ref, valid)
                if k is not None:
                    rows.append(_row(key, "two-view triangulation", np.nan_to_num(plain[k][0]), ref,
                                     valid & plain[k][1], names))
                i = _closest([(p.joints, np.ones(len(names), bool)) for p in fused], ref, valid)
                if i is not None:
                    row = _row(key, "fused", fused[i].joints, ref, valid, names, quality=fused[i].quality,
                               sigma_mm=round(float(np.median(fused[i].sigma_mm)), 1))
                    same = _row({}, "", fused[i].joints, ref, valid & plain[k][1], names) if k is not None else None
                    if row is not None and same is not None:  # on the joints the plain triangulation has
                        row.update({"on_plain_joints_" + m: same[m] for m in SCORED})
                    rows.append(row)
                reference = multiview.Reference(f, person, ref, valid, len(dst), {})
                for v in src:
                    d = multiview.match(reference, dets[v], views[v].camera, mirror, settings.match_px)
                    if d is not None:
                        rows.append(_row({**key, "view": views[v].name}, "monocular", dets[v]["poses3d"][d], ref,
                                         valid, names, quality=float(dets[v]["quality"][d])))
    return [r for r in rows if r is not None]


def _row(key: dict, method: str, pred: np.ndarray, ref: np.ndarray, valid: np.ndarray, names: list[str],
         **extra) -> dict | None:
    m = metrics.person_metrics(pred, ref, valid, names)
    if m is None:
        return None
    return {**key, "method": method, **{k: round(float(m[k]), 2) for k in SCORED}, "joints": int(valid.sum()), **extra}


def summarize(rows: list[dict], resamples: int = 1000, seed: int = 0) -> dict:
    """Per method: medians and their 95 % intervals (frames resampled); for ``fused``, the paired
    differences to the others (monocular: the mean of the source views' monocular errors)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for method in METHODS:
        sel = [r for r in rows if r["method"] == method]
        if not sel:
            continue
        s = {"n": len(sel)}
        for m in SCORED:
            by_frame = {f: [r[m] for r in sel if r["frame"] == f] for f in sorted({r["frame"] for r in sel})}
            s[m] = round(float(np.median([r[m] for r in sel])), 1)
            s[m + "_ci95"] = frame_bootstrap(by_frame, rng, resamples) if len(by_frame) >= 3 else None
        out[method] = s
    fused = {_key(r): r for r in rows if r["method"] == "fused"}
    for other in METHODS[1:]:
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            if r["method"] == other and _key(r) in fused:
                groups.setdefault(_key(r), []).append(r)
        paired = {}
        for m in SCORED:
            # against the plain triangulation: on the joints it has (it leaves out the ones its views disagree on)
            mine = "on_plain_joints_" + m if other == "two-view triangulation" else m
            diffs = [(k[0], fused[k][mine] - float(np.mean([r[m] for r in g]))) for k, g in groups.items()
                     if mine in fused[k]]
            if len(diffs) < 3:
                continue
            by_frame = {f: [d for g, d in diffs if g == f] for f in sorted({f for f, _ in diffs})}
            paired[m] = {"median": round(float(np.median([d for _, d in diffs])), 1), "n": len(diffs),
                         "ci95": frame_bootstrap(by_frame, rng, resamples) if len(by_frame) >= 3 else None}
        if "fused" in out:
            out["fused"]["vs " + other] = paired
    return out


def _key(r: dict) -> tuple:
    return r["frame"], r["source"], r["person"]


def run(scene_dir: str | Path, out_dir: str | Path, settings: multiview.Settings | None = None,
        config: fusion.FusionConfig | None = None, model=None) -> dict:
    """Split-view evaluation of one scene; writes ``OUT/split_views.json`` (summary + every
    scored row) and ``OUT/split_views.md``, returns the report."""
    import tensorflow as tf

    from annotator.models import loader

    settings = settings or multiview.Settings()
    config = config or fusion.FusionConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scene = multiview.load_scene(scene_dir, settings.frames)
    if len(scene.views) < 4:
        raise ValueError(f"{scene_dir}: the split-view evaluation needs 4 views or more, not {len(scene.views)}")
    if model is None:
        model = tf.saved_model.load(loader.resolve(settings.model).path)
    stages = multiview.inferences(model, settings, scene)
    skel = stages[scene.views[0].name].skeleton
    names, edges = list(skel["joint_names"]), skel["edges"]
    detections, elapsed, calls = multiview.predict(stages, scene)
    rows = evaluate(detections, scene.views, names, edges, settings, config)
    report = {"scene": Path(scene_dir).name, "frames": len(scene.indices), "views": len(scene.views),
              "splits": len(splits(len(scene.views))) // 2, "skeleton": settings.skeleton or "all",
              "ground_plane": settings.ground_plane, "num_aug": settings.num_aug,
              "seconds_per_image": round(elapsed / max(calls, 1), 3),
              "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
              "summary": summarize(rows), "rows": rows}
    (out_dir / "split_views.json").write_text(json.dumps(report, indent=2))
    (out_dir / "split_views.md").write_text(format_table(report))
    return report


def format_table(report: dict) -> str:
    s = report["summary"]
    heads = ("label (from 2 views)", "rel. MPJPE", "root err", "PA-MPJPE", "n")
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for method in METHODS:
        if method not in s:
            continue
        m = s[method]
        cells = [f"{m[k]} ({_interval(m[k + '_ci95'])})" for k in ("root_relative_mpjpe_mm", "root_error_mm")]
        lines.append(f"| {method} | {cells[0]} | {cells[1]} | {m['pa_mpjpe_mm']} | {m['n']} |")
    for other in METHODS[1:]:
        p = s.get("fused", {}).get("vs " + other, {})
        if p:
            lines.append(f"fused vs {other}, paired: " + ", ".join(
                f"{k.removesuffix('_mm')} {v['median']:+} ({_interval(v['ci95'])})" for k, v in p.items()))
    lines.append(f"{report['scene']}: {report['frames']} frames, {report['splits']} splits of {report['views']} views, "
                 f"both directions; reference: the other pair's triangulation; medians, mm, 95 % intervals "
                 f"resampling frames; skeleton {report['skeleton']}")
    return "\n".join(lines) + "\n"


def _interval(ci) -> str:
    return "-" if not ci else f"{ci[0]:.0f}-{ci[1]:.0f}"
