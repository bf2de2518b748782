"""``annotator submit --env KEY=VALUE``: the values reach the job without Ray writing them down.

Why not ``runtime_env={"env_vars": ...}``: Ray 2.60 logs a job's whole runtime_env in plain text
(``runtime_env_agent.log`` on every node that starts a worker for it, the job's driver log and the
dashboard's job info), and ``--env`` is how users pass credentials (``AWS_SECRET_ACCESS_KEY``).

Instead the values travel as a file in the job's working directory (uploaded with the spec; Ray logs
the package's URI, never its contents). The runtime_env names only where to find them: the env var
``ANNOTATOR_ENV_FILE`` (the file's name, not a secret) and ``worker_process_setup_hook``, this
module's ``load``, which every worker of the job runs before its first task. The driver (the job's
entrypoint, ``annotator run``) loads the file at start-up (``annotator.cli.main``). Both run with the
working directory as their current directory.

The file stays in Ray's copy of the working directory on each node (``session_*/runtime_resources``),
readable by the account that runs Ray, like the processes' environments themselves.
"""

from __future__ import annotations

import json
import os

FILE_VAR = "ANNOTATOR_ENV_FILE"
FILE_NAME = ".annotator-env.json"
SETUP_HOOK = f"{__name__}.load"


def write(folder: str, env: dict[str, str]) -> dict:
    """Write ``env`` into ``folder`` (the job's working directory); returns what the job's runtime_env
    needs to find it again (nothing secret)."""
    if not env:
        return {}
    path = os.path.join(folder, FILE_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(env, f)
    return {"env_vars": {FILE_VAR: FILE_NAME}, "worker_process_setup_hook": SETUP_HOOK}


def load() -> list[str]:
    """Put the values of the file ``ANNOTATOR_ENV_FILE`` names into this process's environment;
    returns their names. No variable set: nothing to do (a run that was not submitted)."""
    name = os.environ.get(FILE_VAR)
    if not name:
        return []
    with open(name) as f:
        env = json.load(f)
    os.environ.update({str(k): str(v) for k, v in env.items()})
    return sorted(env)
