"""The temporal step on calibrated multi-view video: per-frame labels vs the three smoothing filters
(Kalman/RTS, Savitzky-Golay, 1-euro), each with tracks, left/right repair, one body scale and
constant bones, scored against one triangulation (``annotator eval multiview --consecutive``).

    .venv/bin/python bench/temporal.py [SCENE ...] [--frames 60] [--start 0]

Default scene: samples/pose2sim/Demo_SinglePerson. Writes bench/results/temporal.json and prints one
table per scene. ~15 min per scene of 60 frames x 4 views on 2 cores (mostly the model)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402


def main() -> int:
    from annotator.eval import multiview, temporal

    ap = argparse.ArgumentParser()
    ap.add_argument("scenes", nargs="*", default=[str(c.REPO / "samples" / "pose2sim" / "Demo_SinglePerson")])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args()
    result = {"machine": c.machine(), "scenes": {}}
    for scene in args.scenes:
        with tempfile.TemporaryDirectory() as out:
            report = temporal.run(scene, out, multiview.Settings(),
                                  temporal.TemporalSettings(args.frames, args.start, ("rts", "savgol", "one_euro")))
        result["scenes"][Path(scene).name] = report
        print(f"## {Path(scene).name}\n\n{temporal.format_table(report)}")
    c.save("temporal", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
