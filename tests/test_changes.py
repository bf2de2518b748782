"""Input changes against a frozen plan, and appends that grow it, without Ray: added, removed and
changed objects of folders, manifests and tars; a new segment's shard ids and member chunks
continue after the plan's; a killed append (no segment record) leaves the plan as it was."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotator.pipeline import changes, plan, sources
from tests.helpers.photos import photo_bytes


def _members(p: plan.Plan) -> list[dict]:
    return [m for row in p.rows() for m in plan.members(p.uri, row).to_pylist()]


def _folder(tmp_path, n: int):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(n):
        (src / f"img{i:02d}.jpg").write_bytes(photo_bytes(i))
    return src


def test_folder_changes_added_removed_changed(tmp_path):
    src = _folder(tmp_path, 5)
    opts = plan.PlanOptions(str(src), shard_size=2)
    p = plan.create(opts, str(tmp_path / "out" / "_plan"))
    c, _ = changes.detect(p, opts)
    assert c.unchanged and c.planned == c.listed == 5 and "unchanged" in c.text()

    (src / "img05.jpg").write_bytes(photo_bytes(5))
    (src / "sub").mkdir()
    (src / "sub" / "new.png").write_bytes(photo_bytes(6))
    (src / "notes.txt").write_text("not an image")  # never an input
    (src / "img01.jpg").unlink()
    (src / "img02.jpg").write_bytes(photo_bytes(2) + b"more")  # another size
    st = os.stat(src / "img03.jpg")
    os.utime(src / "img03.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, touched
    c, _ = changes.detect(p, opts)
    assert c.added == ["img05.jpg", "sub/new.png"] and c.removed == ["img01.jpg"]
    assert c.changed == ["img02.jpg", "img03.jpg"]
    assert "2 new, 1 removed, 2 changed" in c.text() and "sub/new.png" in c.text()

    with pytest.raises(changes.InputsChanged, match="--append.*--frozen"):
        changes.reconcile(p, opts)
    assert plan.load(p.uri).num_shards == 3  # refused: the plan did not grow


def test_append_segment_continues_ids_and_reads_back(tmp_path):
    src = _folder(tmp_path, 5)
    opts = plan.PlanOptions(str(src), shard_size=2)
    p = plan.create(opts, str(tmp_path / "out" / "_plan"))
    before = _members(p)
    for i in (5, 6, 7):
        (src / f"new{i}.jpg").write_bytes(photo_bytes(i))
    grown, report = changes.reconcile(p, opts, append=True)
    assert report["added"] == 3 and report["appended_shards"] == ["000003", "000004"] and report["segment"] == 1
    assert grown.shard_ids() == ["000000", "000001", "000002", "000003", "000004"]
    assert grown.hash == p.hash and grown.head != p.hash  # the fingerprint's hash stays; the head moves on
    assert grown.num_members == 8 and grown.num_chunks == 2
    loaded = plan.load(p.uri)
    assert loaded.shard_ids() == grown.shard_ids() and loaded.head == grown.head and loaded.num_members == 8
    members = _members(loaded)
    assert members[:5] == before  # old shards untouched
    assert [(m["shard"], m["image_id"]) for m in members[5:]] == [
        ("000003", "new5.jpg"), ("000003", "new6.jpg"), ("000004", "new7.jpg")]
    meta = plan.read_meta(p.uri)
    assert meta["num_shards"] == 5 and meta["num_members"] == 8
    # the next rerun sees no change; a second append is segment 2
    assert changes.detect(loaded, opts)[0].unchanged
    (src / "new8.jpg").write_bytes(photo_bytes(8))
    again, report = changes.reconcile(loaded, opts, append=True)
    assert report["appended_shards"] == ["000005", "000005"] and report["segment"] == 2
    assert plan.load(p.uri).shard_ids()[-1] == "000005" and _members(plan.load(p.uri))[-1]["image_id"] == "new8.jpg"


def test_killed_append_leaves_the_plan_and_its_orphans_unused(tmp_path):
    src = _folder(tmp_path, 3)
    opts = plan.PlanOptions(str(src), shard_size=2)
    p = plan.create(opts, str(tmp_path / "out" / "_plan"))
    (src / "a_new.jpg").write_bytes(photo_bytes(3))
    changes.reconcile(p, opts, append=True)
    plan_dir = tmp_path / "out" / "_plan"
    (plan_dir / "segment-00001.json").unlink()  # killed right before its segment record
    (plan_dir / ".segment-00001.json.1.tmp").write_bytes(b'{"half": ')  # ... or inside its write
    assert (plan_dir / "members-00001.parquet").exists() and (plan_dir / "shards-00001.parquet").exists()
    reloaded = plan.load(p.uri)
    assert reloaded.shard_ids() == p.shard_ids() and reloaded.head == p.hash
    c, _ = changes.detect(reloaded, opts)
    assert c.added == ["a_new.jpg"]  # the orphan chunk's member is not part of the plan
    grown, _ = changes.reconcile(reloaded, opts, append=True)
    assert grown.shards.column("chunk").to_pylist()[-1] == 2  # the orphan's chunk number is not reused
    assert not list(plan_dir.glob(".*.tmp"))
    assert [m["image_id"] for m in _members(plan.load(p.uri))] == ["img00.jpg", "img01.jpg", "img02.jpg",
                                                                   "a_new.jpg"]
    # a gap in the segment numbers is a broken plan, said so
    (plan_dir / "segment-00001.json").rename(plan_dir / "segment-00003.json")
    with pytest.raises(plan.PlanError, match="not 1..1"):
        plan.load(p.uri)


def test_manifest_changes_and_append(tmp_path):
    rows = {"uri": [f"img{i}.jpg" for i in range(10)], "id": [f"id-{i}" for i in range(10)]}
    pq.write_table(pa.table(rows), tmp_path / "m.parquet")
    opts = plan.PlanOptions(str(tmp_path / "m.parquet"), shard_size=4)
    p = plan.create(opts, str(tmp_path / "out" / "_plan"))
    assert changes.detect(p, opts)[0].unchanged
    rows["uri"][3] = "moved/img3.jpg"  # same id, another object
    rows = {k: v[1:] + [f"{'img' if k == 'uri' else 'id-'}{i}{'.jpg' if k == 'uri' else ''}" for i in (10, 11)]
            for k, v in rows.items()}
    pq.write_table(pa.table(rows), tmp_path / "m.parquet")
    c, _ = changes.detect(p, opts)
    assert (c.added, c.removed, c.changed) == (["id-10", "id-11"], ["id-0"], ["id-3"])
    grown, report = changes.reconcile(p, opts, append=True)
    assert report["appended_shards"] == ["000003", "000003"] and grown.num_members == 12
    new = [m for m in _members(plan.load(p.uri)) if m["shard"] == "000003"]
    assert [m["image_id"] for m in new] == ["id-10", "id-11"]
    assert new[0]["uri"] == sources.to_uri(sources.filesystem(str(tmp_path))[0], str(tmp_path / "img10.jpg"))


def _tar(path, names):
    with tarfile.open(path, "w") as tar:
        for i, name in enumerate(names):
            data = photo_bytes(i)
            info = tarfile.TarInfo(f"{name}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_changes_and_append(tmp_path):
    src = tmp_path / "tars"
    src.mkdir()
    _tar(src / "shard-000.tar", ["a", "b"])
    opts = plan.PlanOptions(str(src))
    p = plan.create(opts, str(tmp_path / "out" / "_plan"))
    _tar(src / "shard-001.tar", ["c"])
    _tar(src / "shard-000.tar", ["a", "b", "x"])  # rewritten: another size
    c, _ = changes.detect(p, opts)
    assert (c.added, c.removed, c.changed) == (["shard-001.tar"], [], ["shard-000.tar"])
    grown, _ = changes.reconcile(p, opts, append=True)
    assert grown.shard_ids() == ["000000", "000001"] and grown.rows()[1]["name"] == "shard-001.tar"
    assert json.loads((tmp_path / "out" / "_plan" / "segment-00001.json").read_text())["num_shards"] == 1


def test_an_input_that_cannot_be_listed_resumes_the_plan(tmp_path):
    src = _folder(tmp_path, 2)
    opts = plan.PlanOptions(str(src), shard_size=2)
    p = plan.create(opts, str(tmp_path / "out" / "_plan"))
    for f in src.iterdir():
        f.unlink()
    src.rmdir()
    same, report = changes.reconcile(p, opts, append=True)
    assert same is p and "does not exist" in report["error"]
