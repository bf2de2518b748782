"""A calibrated rig labelled through the runners (``annotator run RIG OUT --rig``), real parts only:
a real local Ray, the real default model, real Parquet. One small rig (4 views x 4 frames of
Pose2Sim's demo as JPEG frame folders, its Qualisys calibration) cut into 2 windows of 2 frames
with 1 frame of context: Ray and Beam write byte-identical parts whose content is right (one fused
world row per frame, the fused person in every view row); a calibration that does not fit is
refused before any work; a driver SIGKILLed mid-rig resumes to the same parts. Then the commit-time
label step (``rig.apply``) with known answers on synthetic rows (no model)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from annotator.labels import camera_codec, schema
from annotator.labels import multiview_geometry as geo
from annotator.pipeline import encode, layout, rig
from annotator.temporal import consistency
from tests.reliability.common import PYTHON, REPO, rows_by_id, run_cli

from .test_eval_multiview import SINGLE, _cameras
from .test_fusion import EDGES, NAMES, body

FRAMES, WINDOW, OVERLAP = 4, 2, 1
VIEWS = ("cam01", "cam02", "cam03", "cam04")
# SIGKILL of the driver right after it published its first part (the shard's commit record is written)
KILL_AFTER_FIRST_PART = "move:/parts/part-:1:after"


@pytest.fixture(scope="module")
def rig_dir(tmp_path_factory) -> Path:
    """RIG/camNN/0000.jpg.. (the first FRAMES frames of each of the demo's videos) + RIG/calibration."""
    import av

    root = tmp_path_factory.mktemp("rig") / "rig4"
    for video in sorted((SINGLE / "videos").glob("cam*.mp4")):
        folder = root / video.stem
        folder.mkdir(parents=True)
        with av.open(str(video)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i == FRAMES:
                    break
                frame.to_image().save(folder / f"{i:04d}.jpg")
    shutil.copytree(SINGLE / "calibration", root / "calibration")
    return root


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    """What the runs share: sized for 2 cores, one augmentation, the rig's windows ([rig] in a spec).
    A window reads 12 images (3 frames x 4 views): batches of 4 never mix windows, so a resumed run
    batches as an uninterrupted one (and gets the same bits from the model); one commit thread, so
    the kill after the first published part leaves exactly one window committed."""
    path = tmp_path_factory.mktemp("spec") / "rig.toml"
    path.write_text("progress = false\n[settings]\nnum_aug = 1\n"
                    "[compute]\nactors = 1\ncpus_per_actor = 0.5\nbatch_size = 4\nread_batch = 4\n"
                    "commit_threads = 1\nno_progress_timeout_s = 240.0\n"
                    f"[rig]\nwindow = {WINDOW}\noverlap = {OVERLAP}\n")
    return path


def _args(root: Path, out: Path, spec: Path, *extra: str) -> list[str]:
    return ["run", str(root), str(out), "--spec", str(spec), *extra]


def _hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "parts").glob("*.parquet"))}


def _rows(out: Path) -> dict[str, dict]:
    return rows_by_id(str(out))  # read through the manifest, every part verified


@pytest.fixture(scope="module")
def ray_run(ray_cluster, default_model_path, rig_dir, spec_file, tmp_path_factory) -> Path:
    """The rig labelled by the Ray runner (the session's local Ray), uninterrupted."""
    out = tmp_path_factory.mktemp("ray") / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    proc = run_cli(*_args(rig_dir, out, spec_file, "--ray-address", address))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"rig {rig_dir}: 4 views (cam01, cam02, cam03, cam04) fit the calibration" in proc.stderr
    return out


# ------------------------------------------------------------------------------ the runners, real model
@pytest.mark.slow
def test_ray_and_beam_write_identical_fused_parts(ray_run, rig_dir, spec_file, tmp_path):
    beam_out = tmp_path / "beam"
    proc = run_cli(*_args(rig_dir, beam_out, spec_file, "--runner", "beam"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ray_parts = _hashes(ray_run)
    assert len(ray_parts) == 2  # one part per window
    assert _hashes(beam_out) == ray_parts

    rows = _rows(ray_run)
    world_ids = [f"world/{f:06d}" for f in range(FRAMES)]
    view_ids = [f"{v}/{f:06d}" for v in VIEWS for f in range(FRAMES)]
    assert sorted(rows) == sorted(view_ids + world_ids)  # context frames committed once, by their own window
    assert all(rows[i]["view"] == "world" for i in world_ids)
    assert all(rows[i]["view"] == i.split("/")[0] and rows[i]["status"] == "ok" for i in view_ids)
    summary = json.loads((ray_run / "_summary.json").read_text())
    assert summary["shards_total"] == 2 and summary["images"] == len(view_ids)  # world rows are no images

    for f in range(FRAMES):
        world = rows[f"world/{f:06d}"]
        assert world["num_people"] == len(world["people"]) == 1  # the demo's one person
        (person,) = world["people"]
        assert person["depth_source"] == "rig" and person["track_id"] is not None
        assert len(person["fused_views"]) >= 2 and set(person["fused_views"]) <= set(VIEWS)
        assert np.mean(np.array(person["views_used"]) >= 2) > 0.8
        assert np.nanmedian(np.array(person["reprojection_px"], float)) < 30
        xyz = np.array(person["joints3d_world"])
        assert 1400 < np.ptp(xyz[:, 2]) < 2000  # a standing adult, z up (Qualisys)
        for v in person["fused_views"]:
            row = rows[f"{v}/{f:06d}"]
            same = [p for p in row["people"] if p["track_id"] == person["track_id"]]
            assert len(same) == 1, (v, f)
            p = same[0]
            assert p["joints3d_world"] == person["joints3d_world"]  # the same fused person, bit for bit
            assert p["fused_views"] == person["fused_views"] and p["depth_source"] == "rig"
            assert p["joints2d_raw"] is not None and p["joints3d_world_raw"] is not None  # the view's own kept
            # the fused person reprojected into this view lies on its detection (its box grown by 25 %)
            x, y, w, h = p["box"]
            uv = np.array(p["joints2d"])
            assert (uv[:, 0] > x - w / 8).all() and (uv[:, 0] < x + w * 9 / 8).all(), (v, f, p["box"])
            assert (uv[:, 1] > y - h / 8).all() and (uv[:, 1] < y + h * 9 / 8).all(), (v, f, p["box"])
    # one person, one track through the rig: every fused person of every window, in every view, carries
    # it (a window continues the tracks its predecessor committed), named after its first window
    per_window = [{p["track_id"] for i, r in rows.items() for p in r["people"] if int(i.split("/")[1]) // WINDOW == w}
                  for w in range(FRAMES // WINDOW)]
    assert all(len(ids) == 1 and None not in ids for ids in per_window), per_window
    assert set.union(*per_window) == {0}, per_window


@pytest.mark.slow
def test_sigkill_mid_rig_then_rerun_gives_the_same_parts(ray_cluster, ray_run, rig_dir, spec_file, tmp_path):
    out = tmp_path / "out"
    address = ray_cluster.get_runtime_context().gcs_address
    args = _args(rig_dir, out, spec_file, "--ray-address", address)
    killed = subprocess.run([PYTHON, "-m", "tests.reliability.killer", KILL_AFTER_FIRST_PART, "--", *args],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert killed.returncode == -9, "the driver was not killed:\n" + killed.stderr[-3000:]
    before = {p.name: p.read_text() for p in (out / layout.COMMITS).glob("part-*.json")}
    assert len(before) == 1 and len(_hashes(out)) == 1  # one window committed, the other not
    assert not json.loads((out / "_manifest.json").read_text()).get("final")
    assert (out / layout.LOCK).exists()  # left behind by the dead driver

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["shards_total"] == 2 and summary["shards_skipped"] == 1 and summary["shards_failed"] == 0
    assert {name: (out / layout.COMMITS / name).read_text() for name in before} == before  # not redone
    assert _hashes(out) == _hashes(ray_run)
    assert sorted(_rows(out)) == sorted(_rows(ray_run))


# ------------------------------------------------------------------------------ refused before any work
@pytest.mark.parametrize("misfit", ["resized", "extra view"])
def test_a_rig_that_does_not_fit_its_calibration_is_refused_before_any_work(misfit, rig_dir, tmp_path):
    from PIL import Image

    bad = tmp_path / "rig"
    shutil.copytree(rig_dir, bad)
    if misfit == "resized":  # one view's frames at half size
        for f in (bad / "cam02").iterdir():
            with Image.open(f) as im:
                small = im.resize((im.width // 2, im.height // 2))
            small.save(f)
        want = ["cam02", "540x960", "1088x1920"]
    else:  # a fifth view the calibration has no camera for
        shutil.copytree(bad / "cam04", bad / "cam05")
        want = ["cam05", "no calibrated camera of that name"]
    out = tmp_path / "out"
    proc = run_cli("run", str(bad), str(out), "--rig", "--no-progress", timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("annotator run: "), proc.stderr
    assert all(w in lines[0] for w in want), lines[0]
    assert not (out / layout.PLAN).exists() and not list(out.glob("parts/*"))
    assert not out.exists()  # not even the output folder: nothing was started


@pytest.mark.slow
def test_report_card_and_loader_of_a_rig_output(ray_run):
    """The report draws a fused person in two of its views; the card counts view and world rows; the
    training loader yields the view images only (world rows have none)."""
    from annotator.outputs import card, dataset, report

    page = report.build_html(str(ray_run))
    section = page[page.index("<h2>Multi-camera rig</h2>"):page.index("<h2>Samples</h2>")]
    assert section.count('src="data:image/jpeg;base64,') == 2 and "image not readable" not in section
    assert "cam01, cam02, cam03, cam04" in section
    text = card.card_text(layout.Output(str(ray_run)))
    assert f"{FRAMES * len(VIEWS)} view rows" in text and f"{FRAMES} world rows" in text
    ids = [labels["image_id"] for _, labels in dataset.PoseDataset(str(ray_run))]
    assert len(ids) == FRAMES * len(VIEWS) and not any(i.startswith("world/") for i in ids)


# ------------------------------------------------------------------------------ rig.apply, known answers
def _truth(f: int) -> np.ndarray:
    return body((-300.0 + 20 * f, 50.0, 0.0), 30)


def _lone(f: int) -> np.ndarray:  # only cam01 sees this one, 2.5 m from the other
    return body((1500.0, -1900.0 + 10 * f, 0.0), -90)


def _row(cam, f: int, people3d: list[np.ndarray]) -> dict:
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = cam.rotation, cam.translation
    camera = camera_codec.Camera(np.asarray(cam.intrinsics, np.float32), "calibration",
                                 np.asarray(cam.distortion, np.float32), ext.astype(np.float32))
    pixels = np.stack([consistency.project(geo.to_camera(p, cam), cam.intrinsics, cam.distortion)
                       for p in people3d])
    shift = np.asarray(cam.rotation, np.float64).T @ [0, 0, 300.0]  # a monocular depth error along the axis
    lo, hi = pixels.min(1), pixels.max(1)
    boxes = np.concatenate([lo - 20, hi - lo + 40, np.full((len(people3d), 1), 0.9)], 1)
    k = len(people3d)
    pred = encode.Prediction(boxes.astype(np.float32), pixels.astype(np.float32),
                             (np.stack(people3d) + shift).astype(np.float32),
                             joint_confidences=np.full((k, len(NAMES)), 0.9, np.float32),
                             quality=np.full(k, 0.5, np.float32), depth_source=["monocular"] * k)
    return encode.to_row(encode.ImageRecord(f"{cam.name}/{f:06d}", f"/rig/{cam.name}/{f:04d}.jpg", "shard-b",
                                            1920, 1080, camera, None, pred))


def test_apply_fuses_views_into_world_rows_with_known_answers():
    cams = _cameras(3)
    names = tuple(c.name for c in cams)
    rows = []
    for f in range(5):  # frames 0 and 4: the window's context
        for cam in cams:
            # cam01 lists the one only it sees first: detection indices differ between views
            rows.append(_row(cam, f, [_lone(f), _truth(f)] if cam.name == "cam01" else [_truth(f)]))
    table = pa.Table.from_pylist(rows, schema=schema.arrow_schema())
    shard = rig.RigShard("shard-b", "/rig", 1, 4, names, 30.0)  # window 1 labels frames 1..3
    out = rig.apply(table, shard, {"joint_names": NAMES, "edges": [list(e) for e in EDGES]})
    assert out.schema == table.schema
    got = {r["image_id"]: r for r in out.to_pylist()}
    frames = (1, 2, 3)
    assert sorted(got) == sorted([f"{n}/{f:06d}" for n in names for f in frames] + [f"world/{f:06d}" for f in frames])
    by_id = {r["image_id"]: r for r in table.to_pylist()}  # the input as the schema holds it
    for f in frames:
        world = got[f"world/{f:06d}"]
        assert world["view"] == "world" and world["status"] == "ok" and world["shard"] == "shard-b"
        (person,) = world["people"]
        np.testing.assert_allclose(person["joints3d_world"], _truth(f), atol=3.0)
        assert person["fused_views"] == list(names) and person["depth_source"] == "rig"
        assert person["views_used"] == [3] * len(NAMES) and max(person["reprojection_px"]) < 1.0
        tid = person["track_id"]
        assert tid is not None and all(p["track_id"] == tid for p in got[f"world/{frames[0]:06d}"]["people"])
        for cam in cams:
            r = got[f"{cam.name}/{f:06d}"]
            assert r["view"] == cam.name
            fused = [p for p in r["people"] if p["fused_views"] is not None]
            assert len(fused) == 1
            p = fused[0]
            assert p["track_id"] == tid and p["joints3d_world"] == person["joints3d_world"]
            want2d = consistency.project(geo.to_camera(_truth(f), cam), cam.intrinsics, cam.distortion)
            np.testing.assert_allclose(p["joints2d"], want2d, atol=1.0)
            np.testing.assert_allclose(p["joints3d_cam"], geo.to_camera(_truth(f), cam), atol=3.0)
            own = by_id[r["image_id"]]["people"][r["people"].index(p)]
            assert p["joints2d_raw"] == own["joints2d"] and p["joints3d_world_raw"] == own["joints3d_world"]
        # the person only cam01 sees stays as cam01 labelled it
        lone = got[f"cam01/{f:06d}"]["people"][0]
        assert lone["fused_views"] is None and lone["track_id"] is None and lone["depth_source"] == "monocular"
        assert lone == by_id[f"cam01/{f:06d}"]["people"][0]


def test_apply_again_after_a_repaired_view_equals_a_clean_apply():
    """``--retry-errors`` on a rig: the committed rows (fused, world rows included) less the redone
    id, plus the redone row, fused again, give what fusing the clean rows gives (the views' own
    values are read back from the ``*_raw`` fields; the world rows are made again, once)."""
    cams = _cameras(3)
    names = tuple(c.name for c in cams)
    skeleton = {"joint_names": NAMES, "edges": [list(e) for e in EDGES]}
    clean = [_row(cam, f, [_truth(f)]) for f in range(4) for cam in cams]
    broken = [dict(r, status="error", error="truncated: image file is truncated", num_people=0, people=[])
              if r["image_id"] == "cam02/000002" else r for r in clean]
    shard = rig.RigShard("shard-c", "/rig", 0, 4, names, 30.0)
    first = rig.apply(pa.Table.from_pylist(broken, schema=schema.arrow_schema()), shard, skeleton)
    world2 = next(r for r in first.to_pylist() if r["image_id"] == "world/000002")["people"][0]
    assert world2["fused_views"] == ["cam01", "cam03"]  # the broken view took no part
    redone = pa.Table.from_pylist([r for r in clean if r["image_id"] == "cam02/000002"], schema=schema.arrow_schema())
    kept = first.filter(pc.not_equal(first.column("image_id"), "cam02/000002"))
    again = rig.apply(pa.concat_tables([kept, redone]), shard, skeleton).sort_by("image_id")
    want = rig.apply(pa.Table.from_pylist(clean, schema=schema.arrow_schema()), shard, skeleton).sort_by("image_id")
    assert again.column("image_id").to_pylist() == want.column("image_id").to_pylist()
    assert sum(v == "world" for v in again.column("view").to_pylist()) == 4
    assert again.to_pylist() == want.to_pylist()
