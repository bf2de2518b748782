"""``s3://`` in and out against moto's S3 server on loopback: WebDataset tars with sidecar cameras
and a per-tar calibration file; a truncated tar is named as a failed shard (the job exits non-zero
after committing everything else) and a rerun repairs only that shard."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotator.outputs.dataset import read_table
from annotator.pipeline import sink
from annotator.runners import ray_data
from tests.helpers.jobs import by_id, job_spec
from tests.helpers.photos import camera_json, photo_bytes, tar_bytes

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    import s3fs

    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://127.0.0.1:{port}",
                   "client_kwargs": {"region_name": "us-east-1"}}
        # bucket creation fails with an explicit region_name (moto: invalid location constraint)
        admin_env = {k: v for k, v in options.items() if k != "client_kwargs"}
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        admin = s3fs.S3FileSystem(**admin_env)
        for _ in range(100):
            try:
                admin.ls("")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        yield {"s3": options}, admin
    finally:
        proc.kill()
        proc.wait()


def test_s3_webdataset_tars_with_sidecar_cameras(ray_cluster, default_model_path, s3):
    so, fs = s3
    fs.mkdir("wds-in")
    fs.mkdir("wds-out")
    fs.pipe_file("wds-in/shards/train-000.tar", tar_bytes([
        ("s000", {"jpg": photo_bytes(0), "json": camera_json(305, 80, 140), "cls": b"1"}),
        ("s001", {"jpg": photo_bytes(1)}),
        ("notes", {"txt": b"no image in this sample"})]))
    fs.pipe_file("wds-in/shards/train-001.tar", tar_bytes([("s100", {"jpg": photo_bytes(2)}),
                                                      ("s101", {"png": photo_bytes(3, "PNG")})]))
    fs.pipe_file("wds-in/shards/train-001.camera.json", camera_json(410, 80, 140))
    good = tar_bytes([("s200", {"jpg": photo_bytes(4)}), ("s201", {"jpg": photo_bytes(5)})])
    fs.pipe_file("wds-in/shards/train-002.tar", good[: len(good) // 2])  # an upload cut short
    src, out = "s3://wds-in/shards/train-{000..002}.tar", "s3://wds-out/labels"

    first = ray_data.run(job_spec(src, out, storage_options=so, compute={"shard_attempts": 1}))
    assert first["plan"]["kind"] == "tar" and first["shards_total"] == 3
    assert first["shards_committed"] == 2 and list(first["failed_shards"]) == ["000002"]
    assert first["failed_shards"]["000002"].startswith("shard_read_error")
    rows = by_id(read_table(out, storage_options=so))
    assert sorted(rows) == ["train-000.tar/s000", "train-000.tar/s001", "train-001.tar/s100", "train-001.tar/s101"]
    s000 = rows["train-000.tar/s000"]
    assert s000["camera_source"] == "sidecar" and s000["intrinsics"][0] == 305
    assert rows["train-000.tar/s001"]["camera_source"] == "default_fov"
    assert {rows[f"train-001.tar/s10{i}"]["camera_source"] for i in (0, 1)} == {"calibration"}
    assert rows["train-001.tar/s101"]["source_uri"] == "s3://wds-in/shards/train-001.tar#s101.png"
    assert all(r["status"] == "ok" and r["num_people"] >= 1 for r in rows.values())
    committed = sink.DatasetSink(out, storage_options=so).committed()
    assert sorted(committed) == ["000000", "000001"]

    fs.pipe_file("wds-in/shards/train-002.tar", good)  # the upload completes
    second = ray_data.run(job_spec(src, out, storage_options=so, compute={"shard_attempts": 1}))
    assert second["shards_skipped"] == 2 and second["shards_committed"] == 1 and second["shards_failed"] == 0
    assert sink.DatasetSink(out, storage_options=so).committed()["000000"] == committed["000000"]
    rows = by_id(read_table(out, storage_options=so))
    assert len(rows) == 6 and rows["train-002.tar/s201"]["status"] == "ok"
    assert not [p for p in fs.find("wds-out/labels") if ".attempt" in p or p.endswith("_lock")]
