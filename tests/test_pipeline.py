"""The Ray Data pipeline end to end on a real local Ray (session fixture: 4 logical CPUs, 2 logical
GPUs) with the real default model: videos with calibration, manifests with per-row cameras and
``--retry-errors``, one model pinned per (logical) GPU, per-batch timeouts that name the failed
shard, and the refusals (fingerprint, plan, lock) that protect an output."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotator import cli
from annotator.cli.run import world_up_warning
from annotator.models import loader
from annotator.outputs.dataset import read_table
from annotator.pipeline import lock, plan, sink
from annotator.pipeline.fingerprint import FingerprintError
from annotator.runners import ray_data
from tests.helpers.jobs import by_id, job_spec
from tests.helpers.photos import VIDEO, photo_bytes, write_photos

pytestmark = pytest.mark.slow


def test_video_frames_with_calibration_on_two_pinned_gpu_actors(ray_cluster, default_model_path, tmp_path, caplog):
    """Every 50th frame of a video, its calibration file applied to every frame; two inference actors,
    each pinned to its own (logical) GPU, each loading the model once; decoding outside them."""
    src = tmp_path / "videos"
    src.mkdir()
    shutil.copy(VIDEO, src / "cam01.mp4")
    ext = np.eye(4)
    ext[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    ext[:3, 3] = [100.0, -200.0, 3000.0]
    k = [[1400.0, 0, 539.5], [0, 1400.0, 959.5], [0, 0, 1]]
    (src / "cam01.camera.json").write_text(json.dumps({"intrinsics": k, "extrinsics": ext.tolist()}))
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="annotator.pipeline.upright"):
        summary = ray_data.run(job_spec(str(src), str(out), video_every=50, shard_size=1, kind="video",
                                        video_overlap=0, compute={"actors": 2, "gpus_per_actor": 1.0, "batch_size": 1}))
    # before the work, the plan's cameras (one per shard) were checked against the world's up: said once
    assert caplog.text.count("in 2 of 2 cameras of the plan with extrinsics") == 1
    assert summary["shards_total"] == 2 and summary["shards_committed"] == 2 and summary["shards_failed"] == 0
    # each actor warms up before the first batch: one may finish both 1-image batches alone, so no
    # actor need have a second batch to time a steady rate on
    assert summary["seconds_to_first_rows"] > 0
    rows = by_id(read_table(str(out)))
    assert sorted(rows) == ["cam01.mp4/000000", "cam01.mp4/000050"]  # the second shard seeks to frame 50
    for image_id, r in rows.items():
        assert r["status"] == "ok" and (r["width"], r["height"]) == (1080, 1920)
        assert r["source_uri"].endswith(f"cam01.mp4#frame={int(image_id[-6:])}")
        assert r["camera_source"] == "calibration"
        np.testing.assert_allclose(np.reshape(r["intrinsics"], (3, 3)), k)
        np.testing.assert_allclose(np.reshape(r["extrinsics"], (4, 4)), ext, atol=1e-5)
    # the camera is rolled by 90 degrees: the default up (-Y) lies along its image's x axis, and the
    # summary says -X would fit (a hint: here the roll is real, in a Z-up lab it is the wrong up)
    assert summary["world_up_check"] == {"images_with_extrinsics": 2, "likelier_up": {"-1,0,0": 2}}
    warning = world_up_warning(summary, (0.0, -1.0, 0.0))
    assert "in 2 of 2 images" in warning and "--world-up -1,0,0" in warning
    people = [p for r in rows.values() for p in r["people"]]
    assert len(people) >= 1  # one person walks through the scene
    for p in people:
        world, cam = np.asarray(p["joints3d_world"]), np.asarray(p["joints3d_cam"])
        np.testing.assert_allclose(world @ ext[:3, :3].T + ext[:3, 3], cam, atol=0.5)

    actors = summary["actors"]
    assert len(actors) == 2
    assert sorted(a["gpu"] for a in actors.values()) == ["0", "1"]  # CUDA_VISIBLE_DEVICES per actor
    assert all(a["model_loads"] == 1 and a["load_seconds"] > 0 and a["warmup_seconds"] > 0 for a in actors.values())
    assert sum(a["images"] for a in actors.values()) == 2  # the actors check in whether or not they got work
    actor_pids = {int(a.rsplit(":", 1)[1]) for a in actors}
    assert summary["decode_pids"] and not actor_pids & set(summary["decode_pids"])  # decode is not fused


def test_manifest_with_cameras_then_retry_errors_repairs_in_place(ray_cluster, default_model_path, tmp_path):
    photos = tmp_path / "photos"
    names = write_photos(photos, 6)
    (photos / "corrupt.jpg").write_text("<html>not a photo</html>")
    uris = [str(photos / n) for n in names] + [str(photos / "late.jpg"), str(photos / "corrupt.jpg")]
    k0 = [300.0, 0, 80, 0, 300.0, 140, 0, 0, 1]
    manifest = pa.table({"uri": uris, "id": [f"m{i}" for i in range(8)],
                         "intrinsics": [k0] + [None] * 7})
    pq.write_table(manifest, tmp_path / "manifest.parquet")
    out = tmp_path / "out"
    spec = job_spec(str(tmp_path / "manifest.parquet"), str(out))
    first = ray_data.run(spec)
    assert first["plan"]["kind"] == "manifest" and first["shards_committed"] == 2
    assert first["errors_by_reason"] == {"read_error": 1, "not_an_image": 1}
    before = by_id(read_table(str(out)))
    assert before["m0"]["camera_source"] == "manifest" and before["m0"]["intrinsics"] == k0
    assert before["m1"]["camera_source"] == "default_fov"
    assert before["m6"]["error"].startswith("read_error: FileNotFoundError")
    records = sink.DatasetSink(str(out)).committed()

    (photos / "late.jpg").write_bytes(photo_bytes(9))  # the transient failure is gone
    again = ray_data.run(job_spec(str(tmp_path / "manifest.parquet"), str(out), retry_errors=True))
    assert again["shards_repaired"] == 1 and again["images"] == 2 and again["shards_skipped"] == 1
    after = by_id(read_table(str(out)))
    assert sorted(after) == sorted(before) == [f"m{i}" for i in range(8)]
    assert after["m6"]["status"] == "ok" and after["m6"]["num_people"] >= 1
    assert after["m7"]["error"].startswith("not_an_image")
    for image_id in ("m0", "m1", "m2", "m3", "m4", "m5"):
        assert after[image_id] == before[image_id]  # carried over, not recomputed
    new_records = sink.DatasetSink(str(out)).committed()
    assert new_records["000000"] == records["000000"]  # the shard without errors was not rewritten
    assert new_records["000001"]["repairs"] == 1 and new_records["000001"]["rows_error"] == 1
    st = json.loads((out / "_manifest.json").read_text())
    assert (st["rows"], st["rows_ok"], st["rows_error"]) == (8, 7, 1)

    # the output is protected: other settings asked to continue this version (--retry-errors; without
    # it they make a new version, tests/test_versions.py), another plan, or a live job are refused
    # before any work
    with pytest.raises(FingerprintError, match="settings"):
        ray_data.run(job_spec(str(tmp_path / "manifest.parquet"), str(out), settings={"num_aug": 2},
                              retry_errors=True))
    with pytest.raises(plan.PlanError, match="shard_size"):
        ray_data.run(job_spec(str(tmp_path / "manifest.parquet"), str(out), shard_size=3))
    (out / "_lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                           "heartbeat_at": time.time(), "token": "someone"}))
    with pytest.raises(lock.LockedError, match="another job"):
        ray_data.run(job_spec(str(tmp_path / "manifest.parquet"), str(out)))
    (out / "_lock").unlink()
    # --overwrite starts over: a new plan (here with another shard size), old commits gone
    rerun = ray_data.RayJob(job_spec(str(tmp_path / "manifest.parquet"), str(out), shard_size=3, overwrite=True),
                        loader.resolve("default"), lock.OutputLock(str(out)))
    fresh, reused = rerun.prepare()
    assert not reused and fresh.num_shards == 3 and rerun.committed == {}


def test_a_batch_that_keeps_timing_out_fails_its_shard_and_the_job(ray_cluster, default_model_path, tmp_path,
                                                                   capsys):
    src = tmp_path / "in"
    write_photos(src, 1)
    out = tmp_path / "out"
    rc = cli.main(["run", str(src), str(out), "--batch-size", "2", "--batch-timeout", "0.001",
                   "--shard-attempts", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "shard 000000: timeout: inference on 1 image(s) exceeded 0.001 s, 2 tries" in captured.err
    assert "FAILED:   1 shard(s): 000000" in captured.out
    assert list((out / "_commits").iterdir()) == []
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["shards_failed"] == 1 and summary["shards_committed"] == 0
    assert summary["rounds"] == 2  # bounded: one retry round, then the shard is named
    assert not (out / "_lock").exists()  # released although the job failed
