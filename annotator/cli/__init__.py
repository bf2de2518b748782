"""``annotator`` command line: one module per command group, each parsing its arguments and
delegating to the package that does the work. Nothing else in annotator imports this package.

    run.py      annotator run                        (runners: Ray Data or Beam)
    submit.py   annotator submit                     (Ray job submission of a spec)
    models.py   annotator models build|path|list     (models: build cache, loader)
    outputs.py  annotator status|render|report|filter|export|card   (outputs: reading a dataset)
    eval.py     annotator eval multiview             (eval: accuracy against geometry)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from annotator.cli import eval as eval_cmds  # noqa: E402 - after TensorFlow's log level is set
from annotator.cli import models, outputs, run, submit  # noqa: E402

# Kept importable from here, where they lived when the CLI was one module.
run_spec_data = run.run_spec_data
format_summary = run.format_summary

GROUPS = (run, models, outputs, submit, eval_cmds)


def build_parser() -> argparse.ArgumentParser:
    from annotator import __version__

    parser = argparse.ArgumentParser(prog="annotator", description="3D human pose pseudo-labels for large image "
                                     "collections (docs: README.md, docs/)")
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake (a missing file, a bad value, the errors a command names
    in ``user_errors``) is one line on stderr and exit code 2, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as e:
        expected = (FileNotFoundError, KeyError, ValueError, *getattr(args, "user_errors", tuple)())
        if not isinstance(e, expected):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"annotator {args.command}: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
