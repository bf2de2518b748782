"""``annotator eval``: label accuracy on data with known geometry (calibrated multi-view scenes, motion
capture)."""

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
    model_options(m, "joint set to evaluate ('' = all joints of the model)")
    floor_options(m, "the world's up direction in the calibration's frame (default: from the calibration format, "
                  "Qualisys: 0,0,1; otherwise each camera's own up)", 0.0, "floor height along up (default 0)")
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
    m.add_argument("--split-views", action="store_true",
                   help="instead: rig fusion from two views against the triangulation of the other two, every "
                        "split (needs 4 views; fused vs plain two-view triangulation vs monocular labels; "
                        "OUT/split_views.md and split_views.json)")
    m.add_argument("--export-mocap", action="store_true",
                   help="also write the triangulation as an `eval mocap` dataset: OUT/mocap/mocap.parquet + images")
    m.set_defaults(func=cmd_eval_multiview)
    add_mocap(esub)


def model_options(m, skeleton_help: str) -> None:
    m.add_argument("--num-aug", type=int, default=1, help="test-time augmentations (default 1)")
    m.add_argument("--model", default="default", help="built-in name, SavedModel folder, archive or URI")
    m.add_argument("--skeleton", default="", help=skeleton_help)


def floor_options(m, up_help: str, floor_default: float | None, floor_help: str) -> None:
    m.add_argument("--world-up", type=vector3, metavar="X,Y,Z", help=up_help)
    m.add_argument("--ground-plane", action="store_true",
                   help="put standing people on the floor (X . up = --floor-height) to fix depth and scale, as "
                        "`annotator run` does for images with extrinsics")
    m.add_argument("--floor-height", type=float, default=floor_default, metavar="MM", help=floor_help)


def add_mocap(esub) -> None:
    m = esub.add_parser("mocap", help="3D error against your own motion capture (images + cameras + joints in mm; "
                        "DATASET: a .parquet or .npz in the format of docs/models.md, or its folder)")
    m.add_argument("dataset", help="mocap.parquet / mocap.npz, or the folder holding it")
    m.add_argument("--out", required=True, help="folder for metrics.json, table.md, people.csv")
    model_options(m, "joint set the model outputs ('' = all joints of the model)")
    m.add_argument("--joints", choices=("shared", "limbs"), default="shared",
                   help="joints scored: every joint both name alike (default), or the 12 limb joints only")
    floor_options(m, "the world's up direction in the extrinsics' frame (default: the dataset's world_up, else "
                  "each camera's own up)", None, "floor height along up (default: the dataset's floor_height_mm, "
                  "else 0)")
    m.add_argument("--match-px", type=float, default=0.0,
                   help="max median 2D distance of a prediction to a captured person (default: half the person's "
                        "projected size)")
    m.add_argument("--limit", type=int, default=0, help="evaluate the first N images only (default all)")
    m.add_argument("--batch", type=int, default=8, help="images per inference call (default 8)")
    m.set_defaults(func=cmd_eval_mocap)


def cmd_eval_mocap(args) -> int:
    from annotator.eval import mocap

    settings = mocap.Settings(model=args.model, num_aug=args.num_aug, skeleton=args.skeleton, joints=args.joints,
                              world_up=args.world_up, ground_plane=args.ground_plane,
                              floor_height_mm=args.floor_height, match_px=args.match_px, limit=args.limit,
                              batch=args.batch)
    summary = mocap.run(args.dataset, args.out, settings)  # a malformed file: ValueError, one line, exit 2
    print(mocap.format_table(summary), end="")
    print(json.dumps(summary, sort_keys=True))
    return 0 if summary["matched"] > 0 else 1


def cmd_eval_multiview(args) -> int:
    from annotator.eval import multiview

    settings = multiview.Settings(frames=args.frames, num_aug=args.num_aug, model=args.model, skeleton=args.skeleton,
                                  world_up=args.world_up, ground_plane=args.ground_plane,
                                  floor_height_mm=args.floor_height, export_mocap=args.export_mocap)
    if args.ablate:
        from annotator.eval import ablation

        rows = ablation.default_rows()
        if args.rows:
            rows = [rows[int(i)] for i in args.rows.split(",")]
        report = ablation.run(args.scene_dir, args.out, frames=args.frames, rows=rows, settings=settings,
                              variant=args.model if args.model != "default" else "default-full")
        print(ablation.format_table(report), end="")
        return 0 if report["rows"] else 1
    if args.split_views:
        from annotator.eval import rig

        report = rig.run(args.scene_dir, args.out, settings)
        print(rig.format_table(report), end="")
        print(json.dumps(report["summary"], sort_keys=True))
        return 0 if report["summary"].get("fused") else 1
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
