"""Cost of rig fusion against inference, per frame of a calibrated rig (issue 25: fusion and the
temporal step together <= 10 % of inference time).

One shard of a Pose2Sim demo rig through ``annotator.pipeline.rig.label_window``: every view of
every frame through the pipeline's inference stage (coco_19, ground plane), then fusion per
instant and the world-space temporal step over the window. Prints the seconds of each and the ratio.

    .venv/bin/python bench/rig_fusion.py [samples/pose2sim/Demo_MultiPerson] [--frames 30]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene", nargs="?", default=str(REPO / "samples/pose2sim/Demo_SinglePerson"))
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    import tensorflow as tf

    from annotator.eval import calibration
    from annotator.labels import fusion
    from annotator.models import loader
    from annotator.pipeline import rig
    from annotator.pipeline.infer import InferenceSettings, PoseInference

    scene = Path(args.scene)
    r = rig.check(scene, calibration.load(scene / "calibration"))
    up = calibration.world_up(scene / "calibration")
    stage = PoseInference(tf.saved_model.load(loader.resolve(args.model).path),
                          InferenceSettings(skeleton="coco_19", world_up_vector=up, ground_plane=True))
    skeleton = fusion.RigSkeleton.of(stage.skeleton["joint_names"], stage.skeleton["edges"])
    rig.label_window(lambda k, images: stage(images), r, rig.Window(0, 0, 1, 0, 1), skeleton)  # warm-up
    window = rig.windows(min(args.frames, r.frames), args.frames, 0)[0]
    rows, seconds = rig.label_window(lambda k, images: stage(images), r, window, skeleton, spec=rig.RigSpec(fps=60))
    n = window.stop - window.start
    out = {"scene": scene.name, "frames": n, "views": len(r.views), "people_rows": len(rows),
           "inference_ms_per_frame": round(1000 * seconds["inference"] / n, 1),
           "fusion_and_temporal_ms_per_frame": round(1000 * seconds["fusion"] / n, 1),
           "ratio": round(seconds["fusion"] / seconds["inference"], 4)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
