"""Tracks through a real video with the real model: a clip cut into 3 shards with overlap gets one
track for its one person across the shards, identical after a SIGKILL of the driver and a resume,
and identical again on a rerun under the Beam runner; bone lengths per track are constant."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from annotator.outputs.dataset import read_table
from annotator.runners import beam
from annotator.temporal import consistency
from tests.helpers.jobs import ANNOTATOR, by_id, job_spec
from tests.helpers.photos import VIDEO

pytestmark = pytest.mark.slow

FRAMES, SHARD, OVERLAP = 12, 4, 2


def _clip(path: Path) -> None:
    """The first FRAMES frames of the sample video at a quarter of its size (the person walks in them)."""
    import av
    from PIL import Image

    path.parent.mkdir(parents=True)
    with av.open(str(VIDEO)) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("mpeg4", rate=60)
        stream.width, stream.height, stream.pix_fmt = 270, 480, "yuv420p"
        stream.options = {"qscale": "2"}
        for i, frame in enumerate(src.decode(video=0)):
            if i == FRAMES:
                break
            img = Image.fromarray(frame.to_ndarray(format="rgb24")).resize((270, 480))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)


def _args(src: Path, out: Path, address: str) -> list[str]:
    return [str(ANNOTATOR), "run", str(src), str(out), "--kind", "video", "--shard-size", str(SHARD),
            "--video-overlap", str(OVERLAP), "--batch-size", "3", "--num-aug", "1", "--cpus-per-actor", "0.5",
            "--no-progress", "--ray-address", address]


def _tracks(rows: dict) -> dict[str, list]:
    return {i: [p["track_id"] for p in r["people"]] for i, r in sorted(rows.items())}


def test_video_in_three_shards_one_track_identical_after_sigkill_and_on_rerun(ray_cluster, default_model_path,
                                                                              tmp_path):
    src = tmp_path / "in"
    _clip(src / "walk.mp4")
    address = ray_cluster.get_runtime_context().gcs_address
    out = tmp_path / "out"
    proc = subprocess.Popen(_args(src, out, address), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "_commits").glob("part-*.json"))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read().decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    before = {p.name for p in (out / "_commits").glob("part-*.json")}
    assert 1 <= len(before) < 3
    resumed = subprocess.run(_args(src, out, address), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["shards_total"] == 3 and summary["shards_skipped"] == len(before)

    rows = by_id(read_table(str(out)))
    assert sorted(rows) == [f"walk.mp4/{i:06d}" for i in range(FRAMES)]  # the overlap is committed once
    tracks = {t for ids in _tracks(rows).values() for t in ids}
    assert len(tracks) == 1 and None not in tracks  # the one person: one track through all three shards
    people = [p for r in rows.values() for p in r["people"]]
    assert len(people) >= FRAMES - 2
    assert all(p["joints3d_cam_raw"] is not None for p in people)
    skel = consistency.SkeletonInfo.of(json.loads(read_table(str(out)).schema.metadata[b"annotator.skeleton"])
                                       ["joint_names"], json.loads(read_table(str(out)).schema.metadata
                                                                   [b"annotator.skeleton"])["edges"])
    lengths = consistency.bone_lengths(np.array([p["joints3d_cam"] for p in people]), skel.tree)
    assert ((lengths.max(0) - lengths.min(0)) / np.median(lengths, 0)).max() < 0.03

    # a rerun (here under Beam): the same ids, the same labels to float noise of other batches
    ref = tmp_path / "beam"
    beam.run(job_spec(str(src), str(ref), kind="video", shard_size=SHARD, video_overlap=OVERLAP, runner="beam",
                      compute={"batch_size": 3}))
    again = by_id(read_table(str(ref)))
    assert _tracks(again) == _tracks(rows)
    for image_id, r in rows.items():
        for p, q in zip(r["people"], again[image_id]["people"], strict=True):
            np.testing.assert_allclose(p["joints3d_cam"], q["joints3d_cam"], atol=0.5)
