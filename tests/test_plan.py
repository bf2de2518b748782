"""The frozen plan, without Ray: shard ids, members, cameras from calibration files and manifests,
streaming big manifests, video frame ranges; the same input gives the same plan."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotator.pipeline import plan, sources
from tests.helpers.photos import VIDEO, camera_json, photo_bytes


def _members(p: plan.Plan) -> list[dict]:
    return [m for row in p.rows() for m in plan.members(p.uri, row).to_pylist()]


def test_folder_plan_ids_shards_cameras(tmp_path):
    src = tmp_path / "in"
    for sub in ("a", "b/c", "d"):
        (src / sub).mkdir(parents=True)
    for i, rel in enumerate(["a/1.jpg", "a/2.png", "b/c/3.jpg", "b/c/4.jpg", "d/5.jpg", "top.jpg"]):
        (src / rel).write_bytes(photo_bytes(i))
    (src / "a" / "notes.txt").write_text("not an image")
    (src / "b" / "c" / "camera.json").write_bytes(camera_json(400, 80, 140))  # all of b/c
    (src / "d" / "5.json").write_bytes(camera_json(300, 80, 140))  # sidecar of d/5.jpg
    p = plan.create(plan.PlanOptions(str(src), shard_size=4), str(tmp_path / "out" / "_plan"))
    assert p.kind == "folder" and p.num_shards == 2 and p.num_members == 6
    assert p.shard_ids() == ["000000", "000001"]
    members = _members(p)
    assert [m["image_id"] for m in members] == ["a/1.jpg", "a/2.png", "b/c/3.jpg", "b/c/4.jpg", "d/5.jpg", "top.jpg"]
    assert [m["shard"] for m in members] == ["000000"] * 4 + ["000001"] * 2
    cams = {m["image_id"]: m for m in members}
    assert cams["b/c/3.jpg"]["camera_source"] == "calibration" and cams["b/c/3.jpg"]["intrinsics"][0] == 400
    assert cams["a/1.jpg"]["intrinsics"] is None
    assert cams["d/5.jpg"]["sidecar"].endswith("d/5.json") and cams["a/1.jpg"]["sidecar"] is None
    assert all(m["size"] > 0 and m["etag"] for m in members)
    # the same input gives the same plan: same ids and the same hash
    again = plan.create(plan.PlanOptions(str(src), shard_size=4), str(tmp_path / "out2" / "_plan"))
    assert again.hash == p.hash and _members(again) == members
    # a different shard size is another plan, and a frozen plan refuses it
    with pytest.raises(plan.PlanError, match="shard_size 4 != 3"):
        plan.load(p.uri).check_options(plan.PlanOptions(str(src), shard_size=3))


def _manifest_rows(n: int) -> dict:
    return {"uri": [f"img{i}.jpg" for i in range(n)], "id": [f"id-{i:06d}" for i in range(n)]}


def test_manifest_plan_streams_shards_across_batches(tmp_path):
    """70,000 rows: shards of 256 straddle the 65,536-row read batches and chunk files."""
    n = 70_000
    pq.write_table(pa.table(_manifest_rows(n)), tmp_path / "m.parquet")
    p = plan.create(plan.PlanOptions(str(tmp_path / "m.parquet"), shard_size=256), str(tmp_path / "_plan"))
    assert p.kind == "manifest" and p.num_members == n and p.num_shards == -(-n // 256)
    counts = p.shards.column("members").to_pylist()
    assert counts == [256] * (n // 256) + [n % 256]
    row = p.rows()[256]  # the shard that holds row 65,536
    got = plan.members(p.uri, row)
    assert got.column("image_id").to_pylist() == [f"id-{i:06d}" for i in range(256 * 256, 256 * 257)]
    assert got.column("uri")[0].as_py() == f"{tmp_path}/img{256 * 256}.jpg"  # relative to the manifest


def test_manifest_cameras_jsonl_and_duplicates(tmp_path):
    lines = [{"uri": "/data/a.jpg", "intrinsics": [[500, 0, 10], [0, 500, 20], [0, 0, 1]]},
             {"uri": "/data/b.jpg"},
             {"uri": "/data/c.jpg", "intrinsics": [[1, 0, 2], [0, 1, 3], [0, 0, 1]], "distortion": [0.1, 0.0, 0.0, 0.0],
              "extrinsics": np.eye(4).tolist()}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    p = plan.create(plan.PlanOptions(str(tmp_path / "m.jsonl"), kind="manifest"), str(tmp_path / "_plan"))
    m = {r["image_id"]: r for r in _members(p)}
    assert m["/data/a.jpg"]["intrinsics"] == [500, 0, 10, 0, 500, 20, 0, 0, 1]
    assert m["/data/a.jpg"]["camera_source"] == "manifest" and m["/data/b.jpg"]["camera_source"] is None
    assert m["/data/c.jpg"]["distortion"] == pytest.approx([0.1, 0, 0, 0]) and len(m["/data/c.jpg"]["extrinsics"]) == 16
    # flat 9-value intrinsics in a Parquet manifest
    flat = pa.table({"path": ["/d/x.jpg"], "intrinsics": [[1.0, 0, 2, 0, 1, 3, 0, 0, 1]]})
    pq.write_table(flat, tmp_path / "f.parquet")
    p = plan.create(plan.PlanOptions(str(tmp_path / "f.parquet")), str(tmp_path / "_planf"))
    assert _members(p)[0]["intrinsics"] == [1, 0, 2, 0, 1, 3, 0, 0, 1]
    (tmp_path / "dup.jsonl").write_text('{"uri": "/x.jpg"}\n{"uri": "/x.jpg"}\n')
    with pytest.raises(plan.PlanError, match="duplicate"):
        plan.create(plan.PlanOptions(str(tmp_path / "dup.jsonl")), str(tmp_path / "_plan2"))


def test_video_shards_seek_to_the_same_frames(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "cam.mp4").write_bytes(VIDEO.read_bytes())
    p = plan.create(plan.PlanOptions(str(tmp_path / "v"), shard_size=2, every=10), str(tmp_path / "_plan"))
    rows = p.rows()
    assert [(r["start"], r["stop"], r["members"]) for r in rows] == [(0, 20, 2), (20, 40, 2), (40, 60, 2),
                                                                     (60, 80, 2), (80, 100, 2)]
    whole = dict(sources.iter_video_frames(str(tmp_path / "v" / "cam.mp4"), 0, -1, 10))
    assert sorted(whole) == list(range(0, 100, 10))
    seeked = {}
    for r in rows:
        for idx, frame in sources.iter_video_frames(r["source"], r["start"], r["stop"], r["every"]):
            assert idx not in seeked
            seeked[idx] = frame
    assert sorted(seeked) == sorted(whole)
    for idx in whole:
        np.testing.assert_array_equal(seeked[idx], whole[idx])
