"""``annotator submit``: send a validated job spec to a Ray cluster as a Ray job.

Why validate here: a typo in a spec should fail on the laptop in a second, not on the cluster after
the container pulled. The spec travels as the job's working directory (one small TOML file); the
cluster's image must have annotator installed (``infra/docker/Dockerfile``). Ray 2.60 enables token
authentication by default: the client reads ``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token``.
``--env`` values travel in a file beside the spec, never in the runtime_env Ray logs (``job_env``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from annotator.pipeline import spec as spec_mod
from annotator.runners import job_env

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class Submission:
    address: str
    spec_path: str
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    job_id: str | None = None
    executable: str = "annotator"  # the command on the cluster (the image has it on PATH)
    agent_wait_s: float = 120.0  # how long a cluster that is still starting may refuse the job


def entrypoint(spec_name: str, extra_args: list[str], executable: str = "annotator") -> str:
    import shlex

    return " ".join([shlex.quote(executable), "run", "--spec", shlex.quote(spec_name), "--no-progress",
                     *map(shlex.quote, extra_args)])


def validate(spec_path: str) -> spec_mod.RunSpec:
    with open(spec_path, "rb") as f:
        data = tomllib.load(f)
    if "input" not in data or "output" not in data:
        raise spec_mod.SpecError("a submitted spec needs input and output")
    return spec_mod.from_dict(data)


def submit(sub: Submission) -> str:
    """Submit; returns the Ray job id."""
    validate(sub.spec_path)
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # read when Ray is imported
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(sub.address)
    with tempfile.TemporaryDirectory(prefix="annotator-job-") as wd:
        name = Path(sub.spec_path).name
        shutil.copy(sub.spec_path, Path(wd) / name)
        runtime_env = {"working_dir": wd, **job_env.write(wd, sub.env)}
        deadline = time.monotonic() + sub.agent_wait_s
        while True:
            try:
                return client.submit_job(entrypoint=entrypoint(name, sub.extra_args, sub.executable),
                                         submission_id=sub.job_id, runtime_env=runtime_env,
                                         metadata={"annotator_spec": name})
            except RuntimeError as e:
                # a cluster that just started answers 500 "No available agent to submit job, please
                # try again later" until the head's agent is up (seen on a fresh loopback cluster)
                if "try again later" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(2.0)


def wait(address: str, job_id: str, poll_s: float = 5.0, echo=print) -> str:
    """Follow the job's logs until it ends; returns its final status."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    shown = 0
    while True:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            echo(logs[shown:], end="")
            shown = len(logs)
        if status in TERMINAL:
            return status
        time.sleep(poll_s)
