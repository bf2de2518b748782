"""Body size and calibrated uncertainty on the bundled calibrated clips: per-person limb scale, and
the sigmas' calibration fitted on one clip and checked on the other, then the other way round.

    .venv/bin/python bench/uncertainty.py [--frames 20] [--cache FILE] [--clips A,B]

For each clip (samples/pose2sim/Demo_SinglePerson, Demo_MultiPerson), num_aug 1 and 5, without and
with the floor: the pipeline's own inference stage on every view (``annotator eval multiview``'s
machinery, coco_19, reference = the triangulation of the raw networks' 2D), then

- per person (told apart by the triangulated root): the median limb scale, root-relative MPJPE
  and root error;
- ``eval.uncertainty.fit`` on one clip (all four settings pooled), coverage at 1 and 2 sigma on
  the other, per setting; then swapped; then the fit on both, which is what
  ``labels.uncertainty.CALIBRATION`` ships.

The predictions are cached (``--cache``) so a refit does not rerun the model. Writes
bench/results/uncertainty.json and prints the tables. ~12 min on 2 cores (mostly the model)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

CLIPS = ("Demo_SinglePerson", "Demo_MultiPerson")
SETTINGS = tuple((aug, floor) for aug in (1, 5) for floor in (False, True))


def collect(clip: str, frames: int, model) -> list[dict]:
    """Every scored prediction of ``clip`` under each of ``SETTINGS``, with what its sigmas were made of."""
    from annotator.estimator import skeletons
    from annotator.eval import multiview

    scene = multiview.load_scene(c.REPO / "samples" / "pose2sim" / clip, frames)
    out = []
    for aug, floor in SETTINGS:
        settings = multiview.Settings(frames=frames, num_aug=aug, skeleton="coco_19", ground_plane=floor)
        stages = multiview.inferences(model, settings, scene)
        names = stages[scene.views[0].name].skeleton["joint_names"]
        mirror = skeletons.mirror_indices(skeletons.Skeleton("eval", tuple(names), ()))
        preds: dict = {}
        dets, _, _ = multiview.predict(stages, scene, keep=preds)
        refs, _ = multiview.references(dets, scene.views, settings, mirror)
        for r in multiview.score_against(dets, refs, scene.views, names, settings, mirror):
            p, d = preds[(r.frame, r.view)], r.extra["detection"]
            terms = {k: (None if v is None else np.asarray(v)[d]) for k, v in p.sigma_terms.items()}
            pose = np.asarray(p.poses3d[d], np.float64)
            out.append({"clip": clip, "num_aug": aug, "floor": floor, "frame": r.frame, "view": r.view,
                        "root_xy": (r.reference_root_x_mm, r.reference_root_y_mm), "limb_scale": r.limb_scale,
                        "rel_mm": r.root_relative_mpjpe_mm, "root_mm": r.root_error_mm,
                        "names": names, "rel": pose - pose.mean(axis=0), "valid": r.extra["valid"],
                        "joint_errors": r.extra["joint_errors"], "quality": r.quality,
                        "log_size_sigma": float(terms["log_size_sigma"]), "joint_spread": terms["joint_spread_mm"],
                        "depth_error": r.root_depth_bias_mm, "depth_mm": float(terms["depth_mm"]),
                        "depth_spread": None if terms["depth_spread_mm"] is None else float(terms["depth_spread_mm"]),
                        "grounded": r.grounded, "depth_sigma_mm": r.depth_sigma_mm})
        print(f"{clip} num_aug {aug} {'floor' if floor else 'no floor'}: {len(refs)} people triangulated",
              flush=True)
    return out


def persons(rows: list[dict], max_step_mm: float = 600.0) -> list[list[dict]]:
    """Rows grouped by person: the triangulated root followed frame by frame (nearest, < max_step_mm)."""
    tracks: list[list] = []
    for r in sorted(rows, key=lambda r: r["frame"]):
        x, y = r["root_xy"]
        near = min(tracks, key=lambda t: math.hypot(t[0][0] - x, t[0][1] - y), default=None)
        if near is not None and math.hypot(near[0][0] - x, near[0][1] - y) < max_step_mm:
            near[0] = (x, y)
            near[1].append(r)
        else:
            tracks.append([(x, y), [r]])
    return [t[1] for t in tracks]


def summary(rows: list[dict]) -> dict:
    def med(key, rs):
        return round(float(np.median([r[key] for r in rs])), 3 if key == "limb_scale" else 1)

    return {"rel_mm": med("rel_mm", rows), "root_mm": med("root_mm", rows), "limb_scale": med("limb_scale", rows),
            "n": len(rows), "persons": [{"limb_scale": med("limb_scale", t), "rel_mm": med("rel_mm", t),
                                         "root_mm": med("root_mm", t), "n": len(t)} for t in persons(rows)]}


def main() -> int:
    from annotator.eval import uncertainty as check
    from annotator.labels import uncertainty

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=None, help="predictions: read if present, else written")
    ap.add_argument("--clips", default=",".join(CLIPS))
    args = ap.parse_args()
    clips = args.clips.split(",")
    if args.cache and args.cache.exists():
        rows = pickle.loads(args.cache.read_bytes())
    else:
        import tensorflow as tf

        from annotator.models import loader

        model = tf.saved_model.load(loader.resolve("default").path)
        rows = [r for clip in clips for r in collect(clip, args.frames, model)]
        if args.cache:
            args.cache.write_bytes(pickle.dumps(rows))

    def select(clip=None, aug=None, floor=None):
        return [r for r in rows if (clip is None or r["clip"] == clip) and (aug is None or r["num_aug"] == aug)
                and (floor is None or r["floor"] == floor)]

    result = {"machine": c.machine(), "frames": args.frames, "shipped": dataclasses.asdict(uncertainty.CALIBRATION),
              "labels": {}, "cross_clip": {}}
    print("\n| clip | num_aug | floor | rel. MPJPE | root err | limb scale | per person: limb scale (n) |")
    print("|---|---|---|---|---|---|---|")
    for clip in clips:
        for aug, floor in SETTINGS:
            s = summary(select(clip, aug, floor))
            result["labels"][f"{clip} a{aug}{' floor' if floor else ''}"] = s
            people = ", ".join(f"{p['limb_scale']:.3f} ({p['n']})" for p in s["persons"])
            print(f"| {clip} | {aug} | {'yes' if floor else 'no'} | {s['rel_mm']} | {s['root_mm']} | "
                  f"{s['limb_scale']:.3f} | {people} |")
    fits = {clip: check.fit(check.observations(select(clip))) for clip in clips}
    fits["both"] = check.fit(check.observations(rows))
    print("\n| fitted on | checked on | num_aug | floor | joints in 1σ / 2σ | depth in 1σ / 2σ |")
    print("|---|---|---|---|---|---|")
    for fitted_on, cal in fits.items():
        result["cross_clip"][fitted_on] = {"calibration": dataclasses.asdict(cal), "checked": {}}
        for clip in clips:
            for aug, floor in SETTINGS:
                h = check.holds(check.observations(select(clip, aug, floor)), cal)
                result["cross_clip"][fitted_on]["checked"][f"{clip} a{aug}{' floor' if floor else ''}"] = h
                print(f"| {fitted_on} | {clip} | {aug} | {'yes' if floor else 'no'} | "
                      f"{h['joints_within_1_sigma']:.2f} / {h['joints_within_2_sigma']:.2f} | "
                      f"{h['depth_within_1_sigma']:.2f} / {h['depth_within_2_sigma']:.2f} |")
    print(f"\nfit on both clips (ships as labels.uncertainty.CALIBRATION): {fits['both']}")
    print(f"shipped now: {uncertainty.CALIBRATION}")
    c.save("uncertainty", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
