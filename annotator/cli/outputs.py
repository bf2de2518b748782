"""Commands that read a job's output: ``status``, ``render``, ``report``, ``filter``, ``export``, ``card``,
``diff`` (two outputs or versions), ``versions`` (list, remove). Each takes ``OUTPUT@vN`` for version N
of an output; ``OUTPUT`` is its latest version."""

from __future__ import annotations

import argparse
import json
import sys

from annotator.cli.common import add_people_filters


def add(sub) -> None:
    _add_status(sub)
    _add_render(sub)
    _add_report(sub)
    _add_filter(sub)
    _add_export(sub)
    _add_card(sub)
    _add_diff(sub)
    _add_versions(sub)


def _parser(sub, name: str, help: str,
            output_help: str = "a job's output folder or URI (OUTPUT@vN: its version N; default the latest)"):
    """A command that reads one job's OUTPUT (its first argument)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("output", help=output_help)
    return p


def _add_status(sub) -> None:
    p = _parser(sub, "status", help="summary of a running or finished job's output")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from annotator.outputs import status

    st = status.read(args.output)
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else status.to_text(st))
    return 0


def _add_render(sub) -> None:
    p = _parser(sub, "render", help="draw labels: 2D overlay per image and 3D view per person, as PNG")
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
    p = _parser(sub, "report", help="one static HTML page: counts, errors, quality, throughput, samples")
    p.add_argument("--out", help="HTML file to write (default OUTPUT/report.html)")
    p.add_argument("--samples", type=int, default=3, help="overlays per group (best, median, worst)")
    p.add_argument("--diff", metavar="A,B",
                   help="add what changed between two versions (v1,v2) or outputs: per image people count, joint "
                        "displacement and quality shift, a table and a plot (default: the version reported and its "
                        "parent, where it has one; 'none': no comparison)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from annotator.outputs import report

    pair = report.parse_diff(args.output, args.diff) if args.diff else None
    print(report.write_report(args.output, args.out, report.ReportConfig(samples_per_group=args.samples, diff=pair)))
    return 0


def _add_filter(sub) -> None:
    p = _parser(sub, "filter", help="copy an output keeping only the people that pass the thresholds")
    p.add_argument("dest", help="where to write the filtered dataset (same layout)")
    add_people_filters(p)
    p.add_argument("--keep-errors", action="store_true", help="keep error rows")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already at DEST")
    p.set_defaults(func=cmd_filter, user_errors=lambda: (FileExistsError,))


def cmd_filter(args) -> int:
    from annotator.outputs import subset

    config = subset.FilterConfig(min_quality=args.min_quality, min_score=args.min_score,
                                     keep_errors=args.keep_errors, keep_emptied=args.keep_emptied)
    record = subset.filter_output(args.output, args.dest, config, overwrite=args.overwrite)
    print(subset.format_record(record))
    print(f"output:  {args.dest}")
    return 0


def _add_export(sub) -> None:
    p = _parser(sub, "export", help="a finished output as training data: WebDataset shards, COCO keypoints or "
                                    "person crops with their camera",
                output_help="a finished job's output folder or URI")
    p.add_argument("dest", help="folder or URI to write to (gs://, s3://, ...)")
    p.add_argument("--format", required=True, choices=["webdataset", "coco", "crops"],
                   help="webdataset: <shard>.tar with image + .json labels per sample; coco: person_keypoints.json "
                        "(17 body joints); crops: <shard>.tar with a crop + its virtual camera and 3D per person")
    p.add_argument("--status", choices=["ok", "error", "all"], default="ok", help="rows to export (default ok)")
    add_people_filters(p)
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
    p.set_defaults(func=cmd_export, user_errors=_export_errors)


def _export_errors() -> tuple[type[BaseException], ...]:
    from annotator.outputs.export import ExportError
    from annotator.pipeline.lock import LockedError

    return (ExportError, LockedError)


def cmd_export(args) -> int:
    from annotator.outputs import export

    config = export.ExportConfig(
        args.format, export.Filters(args.status, args.min_quality, args.min_score, args.keep_emptied),
        crop_size=args.crop_size, crop_scale=args.crop_scale, jpeg_quality=args.jpeg_quality, engine=args.engine,
        workers=args.workers, ray_address=args.ray_address, overwrite=args.overwrite, progress=not args.no_progress,
        storage_options=args.storage_options)
    summary = export.export(args.output, args.dest, config)
    print(export.format_summary(summary))
    return 0


def _add_card(sub) -> None:
    p = _parser(sub, "card", help="(re)write OUTPUT/README.md, the Hugging Face dataset card (a job writes it "
                                  "when it ends)")
    p.add_argument("--license", dest="labels_licence", metavar="ID",
                   help="the labels' licence, e.g. cc-by-4.0 (default: the run's --license, else 'other': the "
                        "labels follow the images' terms)")
    p.add_argument("--weights-licence", dest="weights_licence", metavar="TEXT",
                   help="the model weights' licence, shown in Provenance (default: from the built-in model's info)")
    # before the labels had a licence of their own, --licence named the weights': old scripts keep that meaning
    p.add_argument("--licence", dest="old_licence", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_card)


def cmd_card(args) -> int:
    from annotator.outputs import card

    weights = args.weights_licence
    if args.old_licence is not None:
        print("annotator card: --licence is the model weights' licence (kept for old scripts; say "
              "--weights-licence); the labels' licence is --license", file=sys.stderr)
        weights = weights or args.old_licence
    print(card.write_card(args.output, licence=weights, labels_licence=args.labels_licence))
    return 0


def _add_diff(sub) -> None:
    p = sub.add_parser("diff", help="how two outputs of the same images differ: people count, joint "
                                    "displacement, quality, per image")
    p.add_argument("a", help="an output folder or URI (e.g. the older model's), or a version: OUTPUT@v1")
    p.add_argument("b", help="another output of the same input (e.g. the newer model's), or a version: OUTPUT@v2 "
                             "(OUTPUT alone: its latest version)")
    p.add_argument("--top", type=int, default=10, help="images listed, most moved first (default 10)")
    p.add_argument("--json", action="store_true", help="every image, machine-readable")
    p.set_defaults(func=cmd_diff)


def cmd_diff(args) -> int:
    from annotator.outputs import diff

    result = diff.compare(args.a, args.b)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else diff.to_text(result, args.top))
    return 0


def _add_versions(sub) -> None:
    p = _parser(sub, "versions", help="an output's versions (one per model or settings) with their lineage; "
                                      "--remove one", output_help="a job's output folder or URI")
    p.add_argument("--remove", metavar="vN", help="remove this version's files (its lineage entry stays, marked "
                                                  "removed); refused for the latest and the only version")
    p.add_argument("--force", action="store_true", help="with --remove: also the latest or the only version")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_versions, user_errors=_lock_errors)


def _lock_errors() -> tuple[type[BaseException], ...]:
    from annotator.pipeline.lock import LockedError

    return (LockedError,)


def cmd_versions(args) -> int:
    from annotator.outputs import card
    from annotator.pipeline import versions

    if args.remove:
        number = args.remove.lower().removeprefix("v")
        if not number.isdigit():
            raise ValueError(f"--remove takes a version such as v2, got {args.remove!r}")
        versions.remove(args.output, int(number), force=args.force)
        print(f"removed v{number} of {args.output}")
        lineage = versions.read(args.output)
        if lineage and lineage.get("latest"):
            print(f"card:     {card.write_card(args.output)}")  # the latest may have changed
    rows = versions.listing(args.output)
    print(json.dumps(rows, indent=2, sort_keys=True) if args.json else versions.to_text(rows))
    return 0
