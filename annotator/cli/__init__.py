"""``annotator`` command line: one module per command group, each parsing its arguments and
delegating to the package that does the work. Nothing else in annotator imports this package.

    run.py      annotator run                        (runners: Ray Data or Beam)
    submit.py   annotator submit                     (Ray job submission of a spec)
    models.py   annotator models build|path|list     (models: build cache, loader)
    outputs.py  annotator status|render|report|filter|export|card|diff|versions   (outputs: reading a dataset)
    eval.py     annotator eval multiview             (eval: accuracy against geometry)
    doctor.py   annotator doctor                     (runners: checks every node before a job)

Quiet by default: the terminal shows annotator's own lines; the engines' (TensorFlow, absl, Ray,
Beam) go to a log file, ``OUTPUT/_logs/`` for a run (``pipeline.enginelog``). ``-v`` shows them.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from annotator.cli import doctor, models, outputs, run, submit  # noqa: E402
from annotator.cli import eval as eval_cmds  # noqa: E402 - after TensorFlow's log level is set
from annotator.pipeline import enginelog, redact  # noqa: E402
from annotator.runners import job_env  # noqa: E402

# Kept importable from here, where they lived when the CLI was one module.
run_spec_data = run.run_spec_data
format_summary = run.format_summary

GROUPS = (run, models, outputs, submit, eval_cmds, doctor)


def build_parser() -> argparse.ArgumentParser:
    from annotator import __version__

    parser = argparse.ArgumentParser(prog="annotator", description="3D human pose pseudo-labels for large image "
                                     "collections (docs: README.md, docs/)")
    parser.add_argument("--version", action="version", version=f"annotator {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="engine logs (TensorFlow, Ray, Beam) on the terminal too; by default they go to a "
                             "log file only (a run's: OUTPUT/_logs/)")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake (a missing file, a bad value, the errors a command names
    in ``user_errors``) is one line on stderr and exit code 2, never a traceback. Engine logs go to
    the command's log file unless ``-v`` (``pipeline.enginelog``); a run says where it is."""
    parser = build_parser()
    args = parser.parse_args(argv)
    job_env.load()  # a submitted job: its `annotator submit --env` values (runners.job_env)
    engine_log = enginelog.start(args.verbose, args.command)
    unexpected, code = False, None
    try:
        code = args.func(args)
        return code
    except Exception as e:
        expected = (FileNotFoundError, KeyError, ValueError, *getattr(args, "user_errors", tuple)())
        if not isinstance(e, expected):
            unexpected = True
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"annotator {args.command}: {redact.text(str(msg))}", file=sys.stderr)
        return 2
    finally:
        # called as the program (argv None): fd 2 stays on the file while the engines shut down at exit
        where = engine_log.close(restore=argv is not None)
        if where and unexpected:
            print(f"annotator {args.command}: engine log: {where}", file=sys.stderr)
        elif where and engine_log.published and code is not None:  # a run that ran (not a user's mistake)
            print(f"log:      {where}")


if __name__ == "__main__":
    sys.exit(main())
