"""Cost of rig fusion against inference, per frame of a calibrated rig (issue 25: fusion and the
temporal step together <= 10 % of inference time).

One shard of a Pose2Sim demo rig through ``annotator.pipeline.rig.label_window``: every view of
every frame through the pipeline's inference stage (coco_19, ground plane), then fusion per
instant and the world-space temporal step over the window. Prints the seconds of each and the ratio.
Also times the pipeline's form of the same step, ``rig.apply`` at a shard's commit (the views'
label rows in, fused view rows and world rows out, Arrow conversions included), on the same
predictions encoded as label rows.

    .venv/bin/python bench/rig_fusion.py [samples/pose2sim/Demo_MultiPerson] [--frames 30]

Last results: ``bench/results/rig_fusion.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene", nargs="?", default=str(REPO / "samples/pose2sim/Demo_SinglePerson"))
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    from _common import rig_stage

    from annotator.labels import camera_codec
    from annotator.pipeline import encode, rig

    scene = Path(args.scene)
    r, stage, skeleton = rig_stage(scene, args.model)
    rig.label_window(lambda k, images: stage(images), r, rig.Window(0, 0, 1, 0, 1), skeleton)  # warm-up
    window = rig.windows(min(args.frames, r.frames), args.frames, 0)[0]
    preds = {}

    def infer(k, images):  # keeps every view's predictions for the commit step below
        out = stage(images)
        preds.setdefault(k, []).append(out[0])
        return out

    rows, seconds = rig.label_window(infer, r, window, skeleton, spec=rig.RigSpec(fps=60))
    n = window.stop - window.start
    records = [encode.ImageRecord(f"{v.name}/{f:06d}", f"{v.source}#frame={f}", "000000", v.size[0], v.size[1],
                                  camera_codec.Camera(np.asarray(v.camera.intrinsics, np.float32), "calibration",
                                                      np.asarray(v.camera.distortion, np.float32),
                                                      np.asarray(v.camera.extrinsics, np.float32)), None, p)
               for k, v in enumerate(r.views) for f, p in zip(range(window.start, window.stop), preds[k], strict=True)]
    table = encode.to_table(records)
    shard = rig.RigShard("000000", str(scene), window.start, window.stop, tuple(v.name for v in r.views), 60.0)
    started = time.perf_counter()
    committed = rig.apply(table, shard, stage.skeleton)
    commit_step = time.perf_counter() - started
    out = {"scene": scene.name, "frames": n, "views": len(r.views), "people_rows": len(rows),
           "inference_ms_per_frame": round(1000 * seconds["inference"] / n, 1),
           "fusion_and_temporal_ms_per_frame": round(1000 * seconds["fusion"] / n, 1),
           "ratio": round(seconds["fusion"] / seconds["inference"], 4),
           "pipeline_commit_step_ms_per_frame": round(1000 * commit_step / n, 1),
           "pipeline_ratio": round(commit_step / seconds["inference"], 4),
           "world_rows": int(rig.is_world(committed).to_numpy(zero_copy_only=False).sum())}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
