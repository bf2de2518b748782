"""The read and decode stages without Ray: cameras (sidecar over calibration), batches and the
shard's row count, whole-shard failures, ``--retry-errors`` re-reads, files changed since the plan."""

from __future__ import annotations

import fsspec
import pytest

from annotator.pipeline import plan, sources, stages
from tests.helpers.photos import camera_json, photo_bytes, write_tar


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


def test_a_truncated_tar_fails_its_shard(tmp_path):
    write_tar(tmp_path / "big.tar", [(f"k{i}", {"jpg": photo_bytes(i)}) for i in range(3)])
    data = (tmp_path / "big.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    batches = list(stages.read_shard({"shard": "000001", "kind": "tar", "source": str(tmp_path / "cut.tar"),
                                      "name": "cut.tar", "camera": "", "only": ""}, ""))
    fails = [f for b in batches for f in b["fail"] if f]
    assert len(fails) == 1 and fails[0].startswith("shard_read_error")


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
    write_tar(tmp_path / "four.tar", [(f"k{i}", {"jpg": b"x"}) for i in range(4)])
    tar_shard = {"shard": "000000", "kind": "tar", "source": str(tmp_path / "four.tar"), "name": "four.tar",
                 "camera": "", "only": ""}
    batches = _read_all(tar_shard, batch_size=2)
    assert [len(b["image_id"]) for b in batches] == [2, 2] and set(batches[-1]["shard_rows"]) == {4}
    write_tar(tmp_path / "none.tar", [("k", {"txt": b"x"})])
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


def test_files_are_fetched_in_windows_of_fetch_and_emitted_in_batches_of_batch_size(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(7):
        (src / f"img{i}.jpg").write_bytes(photo_bytes(i))
    p = plan.create(plan.PlanOptions(str(src), shard_size=8), str(tmp_path / "_plan"))
    shard = {**p.rows()[0], "only": ""}
    batches = list(stages.read_shard(shard, p.uri, batch_size=4, fetch=2))
    assert [len(b["image_id"]) for b in batches] == [4, 3] and list(batches[-1]["shard_rows"]) == [7] * 3
    same = list(stages.read_shard(shard, p.uri, batch_size=4))
    assert [bytes(d) for b in batches for d in b["data"]] == [bytes(d) for b in same for d in b["data"]] \
        == [photo_bytes(i) for i in range(7)]
