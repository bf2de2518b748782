"""``annotator submit``: a validated job spec to a Ray cluster, as a Ray job."""

from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("submit", help="submit a TOML job spec to a Ray cluster (Ray job submission)")
    p.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://head:8265")
    p.add_argument("--spec", required=True, help="TOML job spec (validated here before submitting)")
    p.add_argument("--job-id", help="submission id (default: Ray picks one)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for the job")
    p.add_argument("--wait", action="store_true", help="follow the logs until the job ends; exit 1 if it failed")
    p.add_argument("--executable", default="annotator",
                   help="how the cluster runs annotator (default: `annotator` on the image's PATH)")
    p.add_argument("run_args", nargs="*", help="extra `annotator run` options, after --")
    p.set_defaults(func=cmd_submit, user_errors=user_errors)


def user_errors() -> tuple[type[BaseException], ...]:
    from annotator.pipeline.spec import SpecError

    return (SpecError,)


def cmd_submit(args) -> int:
    from annotator.runners import submit

    env = dict(kv.split("=", 1) for kv in args.env)
    job_id = submit.submit(submit.Submission(args.address, args.spec, args.run_args, env, args.job_id,
                                             args.executable))
    print(f"submitted {job_id}")
    if not args.wait:
        print(f"follow it:  ray job logs --address {args.address} --follow {job_id}")
        return 0
    status = submit.wait(args.address, job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1
