"""Quiet output and redacted URIs, without an engine (the job-level checks are in
``tests/test_quiet_run.py`` and ``tests/reliability/test_isolation.py``):

* ``pipeline.redact``: user info and credential query values become ``***``; Azure's
  ``container@account`` and ordinary query values stay; free text and JSON-like values too.
* ``pipeline.enginelog`` in a process of its own (it moves the real fd 2): what C++ code writes to
  fd 2, engines' log records and Python warnings go to the file; annotator's own warnings and
  ``sys.stderr`` (the progress bar) stay on the terminal; the file is published under
  ``OUTPUT/_logs/``, redacted; ``-v`` leaves everything on the terminal.
* ``runners.job_env``: ``--env`` values written beside the spec (mode 0600) and loaded back; the
  runtime_env it returns names the file, never a value.
* A spec with credentials in its input, output or model URI is refused, the message redacted.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from annotator.pipeline import redact
from annotator.pipeline import spec as spec_mod
from annotator.runners import job_env

SECRET = "PLANTED-QUIET-SECRET-91ce"


@pytest.mark.parametrize(("uri", "expected"), [
    (f"s3://AKIAXX:{SECRET}@bucket/x", "s3://***@bucket/x"),
    (f"https://alice:{SECRET}@host:8080/a/b.tar", "https://***@host:8080/a/b.tar"),
    (f"gs://{SECRET}@bucket/x", "gs://***@bucket/x"),
    (f"https://host/x.tar?X-Amz-Signature={SECRET}&X-Amz-Expires=60", "https://host/x.tar?X-Amz-Signature=***&X-Amz-Expires=60"),
    (f"https://acct.blob.core.windows.net/c/x?sv=2022&sig={SECRET}", "https://acct.blob.core.windows.net/c/x?sv=2022&sig=***"),
    (f"https://host/m.jsonl?access_token={SECRET}#frag", "https://host/m.jsonl?access_token=***#frag"),
    ("abfs://container@account.dfs.core.windows.net/x", "abfs://container@account.dfs.core.windows.net/x"),
    (f"abfs://container:{SECRET}@account.dfs.core.windows.net/x", "abfs://***@account.dfs.core.windows.net/x"),
    ("s3://bucket/x?versionId=3", "s3://bucket/x?versionId=3"),
    ("/plain/path/with@sign", "/plain/path/with@sign"),
    ("gs://bucket/a@b/c", "gs://bucket/a@b/c"),
])
def test_redact_uri(uri, expected):
    assert redact.uri(uri) == expected
    assert redact.has_credentials(uri) == (uri != expected)
    assert redact.uri(expected) == expected  # idempotent


def test_redact_text_and_objects():
    text = f"could not open 's3://K:{SECRET}@b/x' nor https://h/y?token={SECRET}, see /tmp/z"
    assert redact.text(text) == "could not open 's3://***@b/x' nor https://h/y?token=***, see /tmp/z"
    value = {"input": f"s3://K:{SECRET}@b/x", "n": 3, "failed": {"0001": [f"gs://{SECRET}@b"]}}
    assert SECRET not in json.dumps(redact.obj(value)) and redact.obj(value)["n"] == 3


def test_redact_log_filter():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "reading %s failed", (f"s3://K:{SECRET}@b/x",), None)
    assert redact.LogFilter().filter(record) and record.getMessage() == "reading s3://***@b/x failed"
    try:
        raise OSError(f"no such bucket https://u:{SECRET}@h/x")
    except OSError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    redact.LogFilter().filter(record)
    assert SECRET not in logging.Formatter().format(record) and "https://***@h/x" in record.getMessage()


SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    from annotator.pipeline import enginelog
    log = enginelog.start(verbose=sys.argv[1] == "1", command="run")
    enginelog.set_destination(sys.argv[2])
    os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on (C++ on fd 2)\\n")
    logging.getLogger("ray.data").warning("engine warning with s3://K:%s@b/x")
    logging.getLogger("tensorflow").info("engine info")
    warnings.warn("an engine's deprecation", DeprecationWarning)
    logging.getLogger("annotator.pipeline.x").warning("own warning")
    logging.getLogger("annotator.pipeline.x").info("own info")
    print("annotating 3/3 (progress bar)", file=sys.stderr)
    print("summary on stdout")
    where = log.close(restore=True)
    os.write(2, b"after close: the terminal again\\n")
    print("LOG", where)
""") % SECRET


def run_script(tmp_path, verbose: bool):
    out = tmp_path / ("out-v" if verbose else "out")
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-W", "always", "-c", SCRIPT, "1" if verbose else "0", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    where = proc.stdout.split("LOG ", 1)[1].strip()
    return proc, out, where


def test_engine_log_quiet(tmp_path):
    proc, out, where = run_script(tmp_path, verbose=False)
    assert proc.stderr.splitlines() == ["WARNING annotator.pipeline.x: own warning", "annotating 3/3 (progress bar)",
                                        "after close: the terminal again"]
    assert where.startswith(str(out / "_logs" / "run-")) and where.endswith(".log")
    text = open(where).read()
    for line in ("oneDNN custom operations are on", "engine warning with s3://***@b/x", "engine info",
                 "an engine's deprecation", "own warning", "own info"):
        assert line in text, (line, text)
    assert SECRET not in text and "after close" not in text and "progress bar" not in text
    assert not list((tmp_path / "annotator-logs").iterdir())  # moved, not copied


def test_engine_log_verbose(tmp_path):
    proc, out, where = run_script(tmp_path, verbose=True)
    for line in ("oneDNN custom operations are on", "engine warning with s3://***@b/x", "engine info",
                 "own warning", "own info", "progress bar"):
        assert line in proc.stderr, (line, proc.stderr)
    assert SECRET not in proc.stderr
    text = open(where).read()  # the file still gets every log record
    assert "engine info" in text and "own warning" in text and SECRET not in text


def test_job_env_file(tmp_path, monkeypatch):
    env = {"AWS_SECRET_ACCESS_KEY": SECRET, "OTHER": "x=y"}
    runtime_env = job_env.write(str(tmp_path), env)
    assert SECRET not in json.dumps(runtime_env)
    assert runtime_env == {"env_vars": {job_env.FILE_VAR: job_env.FILE_NAME},
                           "worker_process_setup_hook": "annotator.runners.job_env.load"}
    path = tmp_path / job_env.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.delenv("OTHER", raising=False)
    assert job_env.load() == []  # not a submitted job: nothing
    monkeypatch.setenv(job_env.FILE_VAR, job_env.FILE_NAME)
    assert job_env.load() == ["AWS_SECRET_ACCESS_KEY", "OTHER"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET and os.environ["OTHER"] == "x=y"
    assert job_env.write(str(tmp_path / "none"), {}) == {}


@pytest.mark.parametrize("key", ["input", "output", "model"])
@pytest.mark.parametrize("uri", [f"s3://AKIA:{SECRET}@bucket/x", f"https://host/x?sig={SECRET}"])
def test_spec_refuses_credentials_in_uris(key, uri):
    data = {"input": "/in", "output": "/out", key: uri}
    with pytest.raises(spec_mod.SpecError) as e:
        spec_mod.from_dict(data)
    assert SECRET not in str(e.value) and f"{key} " in str(e.value) and "***" in str(e.value)


def test_cli_refuses_credentials_without_echoing_them(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "annotator.cli", "run", f"s3://AKIA:{SECRET}@bucket/in",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("annotator run: input s3://***@bucket/in: credentials inside a URI")
    assert SECRET not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "annotator-logs").exists() or not list((tmp_path / "annotator-logs").iterdir())
