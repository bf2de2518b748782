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
  values, ``_plan/``), nor in the driver's log (``-v``) or the Ray session's logs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
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
           "uri": "PLANTED-URI-PASSWORD-d402"}


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
    proc = subprocess.run([PYTHON, "-m", "annotator.cli", "-v", "run", "--spec", str(spec)], capture_output=True,
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
    log = proc.stdout + proc.stderr
    assert "INFO" in log  # the verbose log was captured
    assert [k for k, s in SECRETS.items() if s in log] == []
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    assert logs.is_dir()
    leaked = [f"{p.name}: {k}" for p in logs.rglob("*") if p.is_file()
              for k, s in SECRETS.items() if s in p.read_bytes().decode("latin-1")]
    assert leaked == []
