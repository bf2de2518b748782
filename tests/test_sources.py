"""Sources and the frozen plan, without Ray: listing, shard ids, cameras, manifests, tars, videos."""

from __future__ import annotations

import io
import json
import tarfile

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotator import plan, sources, stages

from .test_pipeline_fixtures import VIDEO, camera_json, photo_bytes


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


def test_read_stage_applies_sidecar_over_calibration(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.jpg").write_bytes(photo_bytes(0))
    (src / "y.jpg").write_bytes(photo_bytes(1))
    (src / "camera.json").write_bytes(camera_json(400, 80, 140))
    (src / "y.json").write_bytes(camera_json(300, 81, 141))
    p = plan.create(plan.PlanOptions(str(src)), str(tmp_path / "_plan"))
    batches = list(stages.read_shard({**p.rows()[0], "only": ""}, p.uri))
    rows = {batches[-1]["image_id"][i]: i for i in range(2)}
    b = batches[-1]
    assert b["shard_rows"].tolist() == [2, 2]
    assert b["camera_source"][rows["x.jpg"]] == "calibration" and b["intrinsics"][rows["x.jpg"]][0, 0] == 400
    assert b["camera_source"][rows["y.jpg"]] == "sidecar" and b["intrinsics"][rows["y.jpg"]][0, 0] == 300
    dec = stages.decode_batch(b)
    assert dec["error"].tolist() == ["", ""] and dec["intrinsics"][rows["y.jpg"]][0, 2] == pytest.approx(81)


def test_parallel_listing_finds_everything_once(tmp_path):
    fs = fsspec.filesystem("memory")
    root = f"/lst-{tmp_path.name}"
    expected = set()
    for i in range(5):
        for j in range(7):
            path = f"{root}/p{i}/q{j}/img{i}{j}.jpg"
            fs.pipe_file(path, b"x")
            expected.add(path)
    fs.pipe_file(f"{root}/top.jpg", b"x")
    expected.add(f"{root}/top.jpg")
    entries = sources.list_tree(fs, root, min_prefixes=8)
    assert [e.path for e in entries] == sorted(expected)


def test_brace_patterns():
    assert sources.expand_braces("s-{00..02}.tar") == ["s-00.tar", "s-01.tar", "s-02.tar"]
    assert sources.expand_braces("{a,b}/x{8..10}") == ["a/x8", "a/x9", "a/x10", "b/x8", "b/x9", "b/x10"]


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


def _tar(path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_tar_samples_and_truncated_tar(tmp_path):
    _tar(tmp_path / "s.tar", [("a/k1", {"jpg": b"1", "json": b"{}"}), ("a/k2", {"png": b"2"}),
                              ("k3", {"cls": b"3"})])
    got = list(sources.iter_tar_samples(str(tmp_path / "s.tar")))
    assert got == [("a/k1", {"jpg": b"1", "json": b"{}"}), ("a/k2", {"png": b"2"}), ("k3", {"cls": b"3"})]
    _tar(tmp_path / "big.tar", [(f"k{i}", {"jpg": photo_bytes(i)}) for i in range(3)])
    data = (tmp_path / "big.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    batches = list(stages.read_shard({"shard": "000001", "kind": "tar", "source": str(tmp_path / "cut.tar"),
                                      "name": "cut.tar", "camera": "", "only": ""}, ""))
    fails = [f for b in batches for f in b["fail"] if f]
    assert len(fails) == 1 and fails[0].startswith("shard_read_error")


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


def test_memory_protocol_plan_and_read():
    fs = fsspec.filesystem("memory")
    for i in range(3):
        fs.pipe_file(f"/memsrc/img{i}.jpg", photo_bytes(i))
    p = plan.create(plan.PlanOptions("memory://memsrc", shard_size=2), "memory://memout/_plan")
    assert p.num_shards == 2 and plan.load("memory://memout/_plan").hash == p.hash
    batches = list(stages.read_shard({**p.rows()[0], "only": ""}, p.uri))
    assert [bytes(d) for d in batches[-1]["data"]] == [photo_bytes(0), photo_bytes(1)]
    assert sources.read_many(["memory://memsrc/nope.jpg"])[0].__class__ is FileNotFoundError


def _read_all(shard: dict, plan_uri: str = "", batch_size: int = 16) -> list[dict]:
    batches = list(stages.read_shard(shard, plan_uri, batch_size=batch_size))
    assert all(len(b["image_id"]) for b in batches)  # never an empty batch
    assert all(n == -1 for b in batches[:-1] for n in b["shard_rows"])
    return batches


def test_last_batch_carries_the_row_count_even_when_batches_divide_evenly(tmp_path):
    _tar(tmp_path / "four.tar", [(f"k{i}", {"jpg": b"x"}) for i in range(4)])
    tar_shard = {"shard": "000000", "kind": "tar", "source": str(tmp_path / "four.tar"), "name": "four.tar",
                 "camera": "", "only": ""}
    batches = _read_all(tar_shard, batch_size=2)
    assert [len(b["image_id"]) for b in batches] == [2, 2] and set(batches[-1]["shard_rows"]) == {4}
    _tar(tmp_path / "none.tar", [("k", {"txt": b"x"})])
    empty = _read_all({**tar_shard, "source": str(tmp_path / "none.tar"), "name": "none.tar"})
    assert list(empty[-1]["image_id"]) == ["none.tar/"] and empty[-1]["error"][0].startswith("empty_shard")
    # --retry-errors on that placeholder gives the same row again; a vanished member gets a row too
    again = _read_all({**tar_shard, "source": str(tmp_path / "none.tar"), "name": "none.tar",
                       "only": '["none.tar/", "none.tar/gone"]'})
    rows = dict(zip(again[-1]["image_id"], again[-1]["error"], strict=True))
    assert rows["none.tar/"].startswith("empty_shard") and rows["none.tar/gone"].startswith("read_error")
    assert list(again[-1]["shard_rows"]) == [2, 2]


def test_retry_only_rereads_the_requested_members(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        (src / f"i{i}.jpg").write_bytes(photo_bytes(i))
    p = plan.create(plan.PlanOptions(str(src)), str(tmp_path / "_plan"))
    (src / "i2.jpg").unlink()
    batches = _read_all({**p.rows()[0], "only": '["i1.jpg", "i2.jpg"]'}, p.uri, batch_size=1)
    got = {b["image_id"][0]: b["error"][0] for b in batches}
    assert got.keys() == {"i1.jpg", "i2.jpg"} and got["i1.jpg"] == "" and got["i2.jpg"].startswith("read_error")
    assert list(batches[-1]["shard_rows"]) == [2]


def test_a_file_changed_since_the_plan_is_an_error_row(tmp_path):
    """The plan is frozen with each file's size: a file replaced before it is read is not labelled."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(photo_bytes(0))
    (src / "b.jpg").write_bytes(photo_bytes(1))
    p = plan.create(plan.PlanOptions(str(src)), str(tmp_path / "_plan"))
    (src / "b.jpg").write_bytes(photo_bytes(2))  # another photo under the same name
    (b,) = list(stages.read_shard({**p.rows()[0], "only": ""}, p.uri))
    errors = dict(zip(b["image_id"], b["error"], strict=True))
    assert errors["a.jpg"] == ""
    assert errors["b.jpg"] == f"changed_since_plan: planned {len(photo_bytes(1))} bytes, read {len(photo_bytes(2))}"
