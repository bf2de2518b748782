"""Isolation: what an input holds never reaches past the job's own output, and secrets never land in it.

* Tar members named ``../x`` or ``/abs/x``, symlinks, hard links, devices, FIFOs and folders are read
  by the job's own read stage (plan + ``stages.read_shard``): nothing on the local disk appears,
  changes or is read through a link; regular members are rows (their odd names kept as ids),
  the others are not images and give no row.
* A manifest row with an unknown protocol, a missing object, or credentials inside its URI is an
  error row of its own (an unknown protocol used to fail its whole shard, taking the good rows of
  that shard with it); the credentials are never sent, and the plan holds the URI redacted.
* Secrets planted in the driver's environment, in the spec's storage options and inside a URI
  appear nowhere in the output (JSON files byte for byte, Parquet files' metadata, statistics and
  values, ``_plan/``, the dataset card, the engine log under ``_logs/``, which holds all that ``-v``
  would print and the workers' forwarded output), nor on the driver's streams or in the Ray session's
  logs.
* Credentials inside the job's own input, output or model URI (user info, a signed query string),
  given as arguments or in a spec: the run is refused before it touches anything, the message shows
  the URI redacted, and the secret is on no stream and in no file the run leaves (the engine log's
  temp folder included), quiet or ``-v``.
* ``annotator submit --env`` values reach the job's driver and its workers, and appear in none of
  the Ray cluster's logs (runtime_env_agent.log logged them in plain text when they travelled as
  runtime_env env_vars), nor in what ``submit --wait`` prints.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotator.pipeline import plan, stages
from tests.helpers.photos import photo_bytes
from tests.reliability.common import PYTHON, REPO, spec_toml


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed) with its type, size and mtime."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def hostile_tar(path: Path, outside: Path) -> None:
    def add(tar, name, data=b"", **kw):
        info = tarfile.TarInfo(name)
        for k, v in kw.items():
            setattr(info, k, v)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)

    with tarfile.open(path, "w") as tar:
        add(tar, "a_ok.jpg", photo_bytes(0))
        add(tar, "../b_escape.jpg", photo_bytes(1))
        add(tar, "/tmp/c_absolute.jpg", photo_bytes(2))
        add(tar, "d_symlink.jpg", type=tarfile.SYMTYPE, linkname=str(outside))
        add(tar, "e_hardlink.jpg", type=tarfile.LNKTYPE, linkname="a_ok.jpg")
        add(tar, "f_device.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add(tar, "g_fifo.jpg", type=tarfile.FIFOTYPE)
        add(tar, "h_folder.jpg", type=tarfile.DIRTYPE)
        add(tar, "h_folder.jpg/i_inside.jpg", photo_bytes(3))


def test_hostile_tar_members_never_touch_the_disk(tmp_path, monkeypatch):
    outside = tmp_path / "outside.jpg"  # a real photo a symlink points at: it must not be read
    outside.write_bytes(photo_bytes(9))
    src = tmp_path / "in"
    src.mkdir()
    hostile_tar(src / "hostile.tar", outside)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)

    p = plan.create(plan.PlanOptions(str(src)), str(tmp_path / "out" / "_plan"))
    batches = list(stages.read_shard({**p.rows()[0], "only": ""}, p.uri))
    decoded = [stages.decode_batch(b) for b in batches]

    ids = [i for b in batches for i in b["image_id"]]
    assert sorted(ids) == ["hostile.tar/../b_escape", "hostile.tar//tmp/c_absolute", "hostile.tar/a_ok",
                           "hostile.tar/h_folder.jpg/i_inside"]
    assert all(e == "" for d in decoded for e in d["error"])  # each a real photo, read from the tar
    data = {i: bytes(d) for b in batches for i, d in zip(b["image_id"], b["data"], strict=True)}
    assert photo_bytes(9) not in data.values()  # the symlink's target was not read
    assert data["hostile.tar/a_ok"] == photo_bytes(0)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "out" and not k.startswith("out/")} == before  # nothing else
    assert os.listdir(work) == []
    assert not (tmp_path / "b_escape.jpg").exists() and not Path("/tmp/c_absolute.jpg").exists()


SECRETS = {"env": "PLANTED-ENV-SECRET-6f1c", "env_key": "PLANTED-ENV-KEYID-77aa", "options": "PLANTED-SO-SECRET-3b9e",
           "uri": "PLANTED-URI-PASSWORD-d402", "job_uri": "PLANTED-JOB-URI-SECRET-5a1f",
           "submit_env": "PLANTED-SUBMIT-ENV-SECRET-c0d3"}


def scan_output(out: Path) -> list[str]:
    """Where under ``out`` a planted secret appears: raw bytes of every file, and for Parquet files
    their footer metadata and every value (compressed pages hide raw bytes)."""
    found = []
    for p in out.rglob("*"):
        if not p.is_file():
            continue
        texts = [p.read_bytes().decode("latin-1")]
        if p.suffix == ".parquet":
            f = pq.ParquetFile(p)
            texts += [str(f.metadata.metadata), str(f.schema_arrow), str(f.metadata.to_dict()),
                      json.dumps(f.read().to_pylist(), default=str)]
        found += [f"{p.relative_to(out)}: {k}" for k, s in SECRETS.items() for t in texts if s in t]
    return found


@pytest.mark.slow
def test_manifest_error_rows_and_planted_secrets(ray_cluster, tiny_model, photos, tmp_path):
    good = sorted(p for p in photos.iterdir() if p.suffix == ".jpg" and p.name != "zz_broken.jpg")[:3]
    rows = [{"uri": str(p)} for p in good] + [
        {"uri": "nosuchproto://bucket/x.jpg"},  # shard 1 with the next one: a good row beside it
        {"uri": str(good[0])[:-4] + "_missing.jpg"},
        {"uri": f"http://alice:{SECRETS['uri']}@127.0.0.1:9/x.jpg"},
    ]
    src = tmp_path / "manifest"
    src.mkdir()
    (src / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    spec = spec_toml(tmp_path / "job.toml", str(src), str(out), tiny_model, {"ray_address": address},
                     storage_options={"s3": {"key": "AKIA-not-used", "secret": SECRETS["options"]}})
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": SECRETS["env"], "AWS_ACCESS_KEY_ID": SECRETS["env_key"]}
    # quiet (the default): the engine log in OUTPUT/_logs/ then holds all -v would print and more (what
    # C++ code writes to fd 2, the workers' forwarded output), and scan_output reads it
    proc = subprocess.run([PYTHON, "-m", "annotator.cli", "run", "--spec", str(spec)], capture_output=True,
                          text=True, timeout=900, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    from annotator.outputs.dataset import read_table

    got = {r["image_id"]: r for r in read_table(str(out)).to_pylist()}
    assert len(got) == 6 and sum(r["status"] == "ok" for r in got.values()) == 3
    assert got["nosuchproto://bucket/x.jpg"]["error"].startswith("read_error: ValueError: Protocol not known")
    assert "FileNotFoundError" in got[rows[4]["uri"]]["error"]
    redacted = "http://***@127.0.0.1:9/x.jpg"
    assert got[redacted]["error"].startswith("read_error: CredentialsInURI") and got[redacted]["source_uri"] == redacted

    assert (out / "_plan").is_dir() and (out / "_summary.json").is_file()
    assert scan_output(out) == []
    (engine_log,) = (out / "_logs").iterdir()
    log = proc.stdout + proc.stderr + engine_log.read_text()
    assert "INFO" in log and "(MapWorker(" in log  # the engine log was captured, the workers' lines too
    assert [k for k, s in SECRETS.items() if s in log] == []
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    assert logs.is_dir()
    leaked = [f"{p.name}: {k}" for p in logs.rglob("*") if p.is_file()
              for k, s in SECRETS.items() if s in p.read_bytes().decode("latin-1")]
    assert leaked == []


def files_holding(folder: Path, secret: str, skip: tuple[Path, ...] = ()) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and p not in skip
            and secret in p.read_bytes().decode("latin-1")]


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_credentials_in_the_job_uris_are_refused_and_never_echoed(tmp_path, verbose):
    secret = SECRETS["job_uri"]
    out = tmp_path / "out"
    spec = tmp_path / "job.toml"  # the user's own file: the one place the secret may be
    spec.write_text(f'input = "https://host/imgs.tar?X-Amz-Credential=AKIA&X-Amz-Signature={secret}"\n'
                    f'output = "{out}"\n')
    cases = {
        "input": (["run", f"s3://AKIA:{secret}@bucket/in", str(out)], "input s3://***@bucket/in"),
        "output": (["run", str(tmp_path), f"gs://{secret}@bucket/out"], "output gs://***@bucket/out"),
        "model": (["run", str(tmp_path), str(out), "--model", f"https://u:{secret}@host/m.tar.gz"],
                  "model https://***@host/m.tar.gz"),
        "spec": (["run", "--spec", str(spec)],
                 "input https://host/imgs.tar?X-Amz-Credential=***&X-Amz-Signature=***"),
    }
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    for name, (args, shown) in cases.items():
        argv = [PYTHON, "-m", "annotator.cli", *(["-v"] if verbose else []), *args, "--no-progress"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
        assert proc.returncode == 2, (name, proc.stdout[-2000:], proc.stderr[-2000:])
        assert f"annotator run: {shown}: credentials inside a URI are not accepted" in proc.stderr, (name, proc.stderr)
        assert secret not in proc.stdout + proc.stderr, name
    assert not out.exists()  # refused before the output (and its lock, plan, logs) was touched
    assert files_holding(tmp_path, secret, skip=(spec,)) == []


@pytest.mark.slow
def test_submit_env_values_reach_the_job_but_no_ray_log(tiny_model, photos, tmp_path):
    from tests.reliability.cluster import loopback_cluster

    secret = SECRETS["submit_env"]
    digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
    # the job's entrypoint: what `annotator run` does first with --env values (cli.main), then what
    # its Ray workers see; it prints digests, never the value
    probe = tmp_path / "probe"
    probe.write_text(f"#!{PYTHON}\n" + textwrap.dedent('''
        import hashlib, os
        import ray
        from annotator.runners import job_env

        job_env.load()
        ray.init()

        @ray.remote(num_cpus=0.1)
        def worker_value():
            return os.environ.get("PLANTED_SUBMIT_SECRET", "")

        def digest(v):
            return hashlib.sha256(v.encode()).hexdigest()[:16]
        print("DRIVER", digest(os.environ.get("PLANTED_SUBMIT_SECRET", "")))
        print("WORKER", digest(ray.get(worker_value.remote())))
    '''))
    probe.chmod(0o755)
    spec = spec_toml(tmp_path / "job.toml", str(photos), str(tmp_path / "out"), tiny_model)
    with loopback_cluster(head_cpus=2, workers=0, dashboard=True) as cluster:
        argv = [str(Path(PYTHON).with_name("annotator")), "submit", "--address", cluster.dashboard_url, "--spec",
                str(spec), "--wait", "--executable", str(probe), "--env", f"PLANTED_SUBMIT_SECRET={secret}",
                "--env", "PLANTED_PLAIN=visible"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0 and "SUCCEEDED" in proc.stdout, shlex.join(argv) + proc.stdout[-3000:] + \
            proc.stderr[-3000:]
        assert f"DRIVER {digest}" in proc.stdout and f"WORKER {digest}" in proc.stdout, proc.stdout[-3000:]
        assert secret not in proc.stdout + proc.stderr
        logs = [Path(t) for t in cluster.temps]
        agent_logs = [p for t in logs for p in t.rglob("runtime_env_agent.log")]
        # the place it used to leak: the runtime_env is logged there, with the file's name only
        assert any("ANNOTATOR_ENV_FILE" in p.read_text(errors="replace") for p in agent_logs), agent_logs
        leaked = [p for t in logs for p in t.rglob("*") if p.is_file() and "/logs/" in str(p)
                  and secret in p.read_bytes().decode("latin-1")]
        assert leaked == []
