"""``annotator eval``: label accuracy on data with known geometry (calibrated multi-view scenes)."""

from __future__ import annotations

import json

from annotator.cli.common import vector3


def add(sub) -> None:
    p = sub.add_parser("eval", help="measure label accuracy on data with known geometry")
    esub = p.add_subparsers(dest="eval_cmd", required=True)
    m = esub.add_parser("multiview", help="3D error against triangulation of calibrated synchronised views"
                        " (SCENE_DIR/videos/camNN.mp4 or frame folders + SCENE_DIR/calibration/)")
    m.add_argument("scene_dir")
    m.add_argument("--out", required=True, help="folder for metrics.json, people.csv, table.txt")
    m.add_argument("--frames", type=int, default=10, help="frames evaluated, evenly spaced (default 10)")
    m.add_argument("--num-aug", type=int, default=1, help="test-time augmentations (default 1)")
    m.add_argument("--model", default="default", help="built-in name, SavedModel folder, archive or URI")
    m.add_argument("--skeleton", default="", help="joint set to evaluate ('' = all joints of the model)")
    m.add_argument("--world-up", type=vector3, metavar="X,Y,Z",
                   help="the world's up direction in the calibration's frame (default: from the calibration format, "
                        "Qualisys: 0,0,1; otherwise each camera's own up)")
    m.add_argument("--ground-plane", action="store_true",
                   help="put standing people on the floor (X . up = --floor-height) to fix depth and scale, as "
                        "`annotator run` does for images with extrinsics")
    m.add_argument("--floor-height", type=float, default=0.0, metavar="MM", help="floor height along up (default 0)")
    m.add_argument("--ablate", action="store_true",
                   help="instead: the ablation of every estimator step (same frames and triangulation for every "
                        "row; OUT/ablation.md and ablation.json; builds each row in memory, ~1 min per row and frame"
                        " batch on 2 cores)")
    m.add_argument("--rows", default="", help="with --ablate: comma-separated row numbers to run (default all)")
    m.add_argument("--consecutive", type=int, metavar="N",
                   help="instead: N consecutive frames, scored per frame and after the temporal step of videos "
                        "(tracks, left/right repair, one body scale, smoothing): accelerations, identity switches; "
                        "OUT/temporal.md and temporal.json")
    m.add_argument("--start", type=int, default=0, help="with --consecutive: the first frame (default 0)")
    m.set_defaults(func=cmd_eval_multiview)


def cmd_eval_multiview(args) -> int:
    from annotator.eval import multiview

    settings = multiview.Settings(frames=args.frames, num_aug=args.num_aug, model=args.model, skeleton=args.skeleton,
                                  world_up=args.world_up, ground_plane=args.ground_plane,
                                  floor_height_mm=args.floor_height)
    if args.ablate:
        from annotator.eval import ablation

        rows = ablation.default_rows()
        if args.rows:
            rows = [rows[int(i)] for i in args.rows.split(",")]
        report = ablation.run(args.scene_dir, args.out, frames=args.frames, rows=rows, settings=settings,
                              variant=args.model if args.model != "default" else "default-full")
        print(ablation.format_table(report), end="")
        return 0 if report["rows"] else 1
    if args.consecutive:
        from annotator.eval import temporal

        report = temporal.run(args.scene_dir, args.out, settings,
                              temporal.TemporalSettings(consecutive=args.consecutive, start=args.start))
        print(temporal.format_table(report), end="")
        return 0
    summary = multiview.run(args.scene_dir, args.out, settings)
    print(multiview.format_table(summary), end="")
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["people_matched"] > 0 else 1
