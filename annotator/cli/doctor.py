"""``annotator doctor``: is this cluster (or machine) ready for the job? A table per node and check,
then a verdict; exit 1 when any check fails (runners.doctor does the checking)."""

from __future__ import annotations

import sys

from annotator.cli.run import run_spec_data


def add(sub) -> None:
    p = sub.add_parser("doctor", help="check every node that would run an inference actor before a job: "
                       "TensorFlow and GPUs, the model, input and output access, versions")
    p.add_argument("input", nargs="?", help="the job's input folder/URI (else from --spec; none: not checked)")
    p.add_argument("output", nargs="?", help="the job's output folder/URI (else from --spec; none: not checked)")
    p.add_argument("--spec", help="the job's TOML spec: its model, storage options, input, output and compute")
    p.add_argument("--address", dest="ray_address",
                   help="Ray cluster (GCS address, e.g. head:6379; else RAY_ADDRESS; none: this machine "
                        "with an embedded local Ray, as `annotator run` starts it)")
    p.add_argument("--model", help="model to check (default: the spec's, else `default`)")
    p.add_argument("--gpus-per-actor", type=float)
    p.add_argument("--cpus-per-actor", type=float)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each node gets (default 600)")
    p.set_defaults(func=cmd_doctor, user_errors=user_errors)


def user_errors() -> tuple[type[BaseException], ...]:
    from annotator.pipeline.spec import SpecError

    return (SpecError, ConnectionError)


def cmd_doctor(args) -> int:
    from annotator.pipeline import spec as spec_mod
    from annotator.runners import doctor
    from annotator.runners.ray_cluster import init_ray

    data = run_spec_data(args)
    # input and output are optional here: a doctor without them checks the nodes and the model only
    data.setdefault("input", "")
    data.setdefault("output", "")
    spec = spec_mod.from_dict(data)
    local = init_ray(spec.compute.ray_address)
    try:
        reports = doctor.run(spec, timeout_s=args.timeout)
    finally:
        if local:
            import ray

            ray.shutdown()
    text, ok = doctor.format_reports(reports)
    print(text)
    if not spec.input or not spec.output:
        print("(input/output not checked: give them as arguments or in --spec)", file=sys.stderr)
    return 0 if ok else 1
