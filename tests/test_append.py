"""A dataset that grows: label a folder, add images, rerun. Without ``--append`` or ``--frozen`` the
rerun says what is new and exits non-zero; ``--frozen`` keeps the plan; ``--append`` labels exactly
the new images (rows = old + new, each once), also when the driver is SIGKILLed at each point of
the append (``tests/reliability/killer.py`` at the storage layer, local disk); and the same flow
against the GCS emulator and moto's S3. Drivers run as ``annotator`` processes attached to the session's Ray, with the
tiny official-API model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from annotator.outputs import status
from annotator.pipeline import layout
from tests.helpers import emulators
from tests.helpers.photos import photo_bytes, write_photos
from tests.reliability.common import PYTHON, REPO, assert_same, rows_by_id, spec_toml, tiny_model_folder

pytestmark = pytest.mark.slow

# the append's points, in the order one append passes them (killer.py rules): each killed run gets
# one point further, and the run after the last completes the append
APPEND_POINTS = (
    ("write:/_plan/members-:1:half", "the new member chunk half-written"),
    ("write:/_plan/shards-0:1:after", "the new segment's shard table written, its record not"),
    ("write:/_plan/\\.segment-:1:half", "the segment record half-written (a hidden temporary)"),
    ("move:/_plan/segment-:1:after", "the segment committed, nothing labelled yet"),
    ("write:/_attempts/.*/parts/part-:1:half", "the new part half-written"),
    ("write:/_commits/\\.?part-:1:half", "the new shard's commit record half-written"),
    ("move:/parts/part-:1:before", "the new shard committed, its part not published"),
    ('write:/\\.?_manifest\\.json:1:half:"final": true', "the final manifest half-written"),
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return tiny_model_folder(tmp_path_factory.getbasetemp() / "tiny_model")


def annotator(spec: Path, *flags: str, kill: str | None = None) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "-m", "tests.reliability.killer", kill, "--"] if kill else [PYTHON, "-m", "annotator.cli"]
    return subprocess.run([*cmd, "run", "--spec", str(spec), *flags], capture_output=True, text=True, timeout=900,
                          cwd=REPO)


def _spec(tmp_path: Path, src: str, out: str, model: str, address: str, **top) -> Path:
    return spec_toml(tmp_path / "job.toml", src, out, model, {"ray_address": address, "commit_threads": 1}, **top)


def _reference(folder: Path, src: Path, model: str, address: str) -> dict[str, dict]:
    """The rows of one uninterrupted run over the grown folder."""
    folder.mkdir()
    out = folder / "out"
    proc = annotator(_spec(folder, str(src), str(out), model, address))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rows_by_id(str(out))


def test_rerun_refuses_new_inputs_then_appends_exactly_them(ray_cluster, tiny, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    src, out = tmp_path / "in", tmp_path / "out"
    old = write_photos(src, 4)
    spec = _spec(tmp_path, str(src), str(out), tiny, address)
    first = annotator(spec)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(rows_by_id(str(out))) == sorted(old)
    # an unchanged input: a rerun does nothing and says nothing about changes
    again = annotator(spec)
    assert again.returncode == 0 and "input:    unchanged since the plan (4 checked" in again.stdout, \
        again.stderr[-3000:]

    new = write_photos(src, 2, prefix="zz")
    reference = _reference(tmp_path / "ref", src, tiny, address)
    refused = annotator(spec)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    assert "2 new" in refused.stderr and "--append" in refused.stderr and "--frozen" in refused.stderr
    assert all(n in refused.stderr for n in new)
    assert sorted(rows_by_id(str(out))) == sorted(old)  # nothing written

    frozen = annotator(spec, "--frozen")
    assert frozen.returncode == 0, frozen.stderr[-3000:]
    assert sorted(rows_by_id(str(out))) == sorted(old)

    records = {p.name: p.read_text() for p in (out / layout.COMMITS).glob("part-*.json")}
    appended = annotator(spec, "--append")
    assert appended.returncode == 0, appended.stderr[-3000:]
    assert "input:    2 new (shards 000002-000002)" in appended.stdout
    rows = rows_by_id(str(out))  # each id once, parts = manifest
    assert sorted(rows) == sorted(old + new)
    assert_same(rows, reference)
    for name, text in records.items():  # the old shards: not recomputed, still this output's
        assert (out / layout.COMMITS / name).read_text() == text
    summary = json.loads((out / layout.SUMMARY).read_text())
    assert summary["shards_skipped"] == 2 and summary["images"] == 2 and summary["shards_total"] == 3
    st = status.read(str(out))
    assert st["shards_total"] == 3 and st["shards_committed"] == 3 and st["rows"] == 6 and st["images_planned"] == 6

    # removed and changed inputs are reported, their rows kept; the rerun exits 0 (nothing new)
    (src / old[0]).unlink()
    (src / old[1]).write_bytes(photo_bytes(40))
    later = annotator(spec, "--append")
    assert later.returncode == 0, later.stderr[-3000:]
    assert "0 new, 1 removed, 1 changed" in later.stdout and old[0] in later.stderr
    assert sorted(rows_by_id(str(out))) == sorted(old + new)


def test_append_killed_at_each_point_resumes(ray_cluster, tiny, tmp_path):
    address = ray_cluster.get_runtime_context().gcs_address
    src, out = tmp_path / "in", tmp_path / "out"
    old = write_photos(src, 4)
    spec = _spec(tmp_path, str(src), str(out), tiny, address)
    assert annotator(spec).returncode == 0
    old_records = {p.name: p.read_text() for p in (out / layout.COMMITS).glob("part-*.json")}
    new = write_photos(src, 2, prefix="zz")
    reference = _reference(tmp_path / "ref", src, tiny, address)

    for point, what in APPEND_POINTS:
        proc = annotator(spec, "--append", kill=point)
        assert proc.returncode == -9, f"{point}: not killed ({what})\n" + proc.stderr[-3000:]
        # what a reader sees after each kill: the old rows at least, nothing twice, nothing uncommitted
        o = layout.Output(str(out))
        ids = o.read_table().column("image_id").to_pylist()
        assert len(ids) == len(set(ids)) and set(old) <= set(ids) <= set(old + new), (point, ids)
        assert set(o.listing(layout.PARTS)) == {r["part"] for r in o.records()}, point
    done = annotator(spec, "--append")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = rows_by_id(str(out))
    assert sorted(rows) == sorted(old + new)
    assert_same(rows, reference)
    for name, text in old_records.items():
        assert (out / layout.COMMITS / name).read_text() == text
    plan_dir = out / layout.PLAN
    assert sorted(p.name for p in plan_dir.glob("segment-*.json")) == ["segment-00001.json"]
    assert not list(out.rglob(".*.tmp")) and not (out / layout.ATTEMPTS).exists()


@pytest.mark.parametrize("store", ["gs", "s3"])
def test_append_on_an_object_store_emulator(ray_cluster, tiny, tmp_path, store):
    """The same flow on the GCS emulator (changes seen by generation) and moto's S3 (by ETag)."""
    address = ray_cluster.get_runtime_context().gcs_address
    with {"gs": emulators.gcs, "s3": emulators.s3}[store]() as (so, fs):
        # client_kwargs go nowhere (a TOML spec holds one level of tables): the region comes from
        # AWS_DEFAULT_REGION, which emulators.s3 sets
        so = {store: {k: v for k, v in so[store].items() if k != "client_kwargs"}}
        fs.mkdir("grow-in")
        fs.mkdir("grow-out")
        local = tmp_path / "local"
        old = write_photos(local, 4)
        for name in old:
            fs.pipe_file(f"grow-in/photos/{name}", (local / name).read_bytes())
        out = f"{store}://grow-out/labels"
        spec = spec_toml(tmp_path / "job.toml", f"{store}://grow-in/photos", out, tiny,
                         {"ray_address": address, "commit_threads": 1}, storage_options=so)
        first = annotator(spec)
        assert first.returncode == 0, first.stderr[-3000:]
        records = {r["shard"]: r for r in layout.Output(out, so).records()}
        new = write_photos(local, 2, prefix="zz")
        for name in new:
            fs.pipe_file(f"grow-in/photos/{name}", (local / name).read_bytes())
        fs.pipe_file(f"grow-in/photos/{old[0]}", photo_bytes(41))  # rewritten: another generation / ETag

        refused = annotator(spec)
        assert refused.returncode == 2 and "2 new" in refused.stderr and "1 changed" in refused.stderr, \
            refused.stderr[-3000:]
        appended = annotator(spec, "--append")
        assert appended.returncode == 0, appended.stderr[-3000:]
        rows = rows_by_id(out, so)  # each id once, every part verified, parts/ = the manifest's
        assert sorted(rows) == sorted(old + new)
        after = {r["shard"]: r for r in layout.Output(out, so).records()}
        assert {s: after[s] for s in records} == records  # the old shards untouched
        st = status.read(out, so)
        assert st["shards_total"] == 3 and st["rows"] == 6 and st["images_planned"] == 6
        assert fs.exists("grow-out/labels/_plan/segment-00001.json")
        # (a plain rerun after the append, "0 new ... 1 changed", is the local test's: one job less here)


def test_a_concurrent_append_is_refused_by_the_lock(tiny, tmp_path):
    """A second driver appending while another holds the output stops before it plans anything."""
    from annotator.pipeline import plan
    from annotator.pipeline.lock import OutputLock

    src, out = tmp_path / "in", tmp_path / "out"
    write_photos(src, 2)
    plan.create(plan.PlanOptions(str(src), shard_size=2), str(out / layout.PLAN))
    write_photos(src, 2, prefix="zz")
    with OutputLock(str(out)):
        proc = annotator(spec_toml(tmp_path / "job.toml", str(src), str(out), tiny), "--append")
    assert proc.returncode == 2 and "being written by another job" in proc.stderr, proc.stderr[-3000:]
    assert not list((out / layout.PLAN).glob("segment-*")) and plan.load(str(out / layout.PLAN)).num_shards == 1
