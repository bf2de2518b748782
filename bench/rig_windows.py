"""What cutting a rig into windows (shards) costs the world-space temporal step (issue 25).

A rig shard is a time window read with ``overlap`` frames of context on either side; its tracks are
smoothed, and given one body size, over what it read, so two windows meet where each was smoothed
without the other's frames past the context. This measures that seam: the same predictions fused
(a) as one window and (b) cut into windows of ``--window`` frames with ``--overlap`` context, and
compares every frame's fused world joints (mm) of (b) against (a), at the seam (the ``--overlap``
frames either side of each cut) and away from it; and the frame-to-frame motion of the joints
across each cut against the same motion in (a) (a seam shows as a jump only (b) has).

    .venv/bin/python bench/rig_windows.py [samples/pose2sim/Demo_SinglePerson] [--frames 48] [--window 16] [--overlap 8]

Last results: ``bench/results/rig_windows.json`` (one entry per scene).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


def by_track_frame(rows: list[dict]) -> dict[int, dict[int, np.ndarray]]:
    """frame -> {person: world joints}; people keyed by their order of appearance in the frame's
    rows' centroid x (one rig, few people: enough to pair (a) and (b) per frame)."""
    out: dict[int, dict[int, np.ndarray]] = {}
    for r in rows:
        out.setdefault(r["frame"], {})[len(out.get(r["frame"], {}))] = np.asarray(r["joints_world_mm"], np.float64)
    return out


def pair(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """People of one frame in (a) and (b), nearest centroids, one to one."""
    out, used = [], set()
    for xa in a.values():
        best = min(((np.linalg.norm(xa.mean(0) - xb.mean(0)), k) for k, xb in b.items() if k not in used),
                   default=None)
        if best is not None and best[0] < 500.0:
            used.add(best[1])
            out.append((xa, b[best[1]]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene", nargs="?", default=str(REPO / "samples/pose2sim/Demo_SinglePerson"))
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--overlap", type=int, default=8)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=str(REPO / "bench/results/rig_windows.json"))
    args = ap.parse_args()
    from _common import rig_stage

    from annotator.pipeline import rig
    from annotator.pipeline.infer import ImageInput

    scene = Path(args.scene)
    r, stage, skeleton = rig_stage(scene, args.model)
    n = min(args.frames, r.frames)
    whole = rig.Window(0, 0, n, 0, n)
    preds = {f: [rig.label_dict(stage([ImageInput(img, v.camera.intrinsics, v.camera.distortion,
                                                  v.camera.extrinsics)])[0])
                 for img, v in zip(per_view, r.views, strict=True)]
             for f, per_view in rig.read_window(r, whole).items()}
    spec = rig.RigSpec(window=args.window, overlap=args.overlap, fps=60)
    one = by_track_frame(rig.fuse_window(whole, preds, r, skeleton, spec=spec))
    cut_rows = []
    for w in rig.windows(n, args.window, args.overlap):
        cut_rows += rig.fuse_window(w, {f: preds[f] for f in range(w.read_start, w.read_stop)}, r, skeleton, spec=spec)
    cut = by_track_frame(cut_rows)
    cuts = list(range(args.window, n, args.window))
    near, far = [], []
    for f in sorted(set(one) & set(cut)):
        d = [float(np.linalg.norm(xa - xb, axis=-1).mean()) for xa, xb in pair(one[f], cut[f])]
        (near if any(c - args.overlap <= f < c + args.overlap for c in cuts) else far).extend(d)
    jumps_one, jumps_cut = [], []
    for c in cuts:
        for frames, jumps in ((one, jumps_one), (cut, jumps_cut)):
            if c - 1 in frames and c in frames:
                jumps += [float(np.linalg.norm(xa - xb, axis=-1).mean()) for xa, xb in pair(frames[c - 1], frames[c])]
    result = {"scene": scene.name, "frames": n, "window": args.window, "overlap": args.overlap, "cuts": cuts,
              "windowed_vs_one_window_mm": {
                  "near_a_cut": {"median": float(np.median(near)) if near else None,
                                 "max": float(np.max(near)) if near else None, "n": len(near)},
                  "away_from_cuts": {"median": float(np.median(far)) if far else None,
                                     "max": float(np.max(far)) if far else None, "n": len(far)}},
              "motion_across_each_cut_mm": {"one_window": jumps_one, "windowed": jumps_cut}}
    print(json.dumps(result, indent=1))
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.exists() else {}
    runs[scene.name] = result  # one entry per scene
    out.write_text(json.dumps(runs, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
